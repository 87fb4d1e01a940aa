//! The fuzz targets' committed corpora (`fuzz/corpus/<target>/`), replayed through the same
//! entry points libFuzzer drives (`make fuzz`): every input that once found a bug, and every
//! seed, must still end in a value or a clean error. This is CI's short pass of each target.

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{} holds no inputs", dir.display());
    inputs
}

fn replay(target: &str, run: fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        let outcome = std::panic::catch_unwind(|| run(&bytes));
        assert!(outcome.is_ok(), "fuzz target {target} fails on {}", path.display());
    }
}

#[test]
fn the_manifest_corpus_parses_or_fails_cleanly() {
    replay("manifest", agora_host::fuzzing::manifest);
}

#[test]
fn the_module_corpus_loads_or_fails_cleanly() {
    replay("module", agora_host::fuzzing::module);
    // The target loads what a host loads, and refuses what it refuses.
    let seed =
        |name: &str| std::fs::read(format!("{}/../fuzz/corpus/module/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    assert!(agora_host::fuzzing::load_module(&seed("echo.wasm")).is_ok(), "a real agent loads");
    for refused in ["empty.wasm", "core.wasm", "wrong-import.wasm", "wrong-export.wasm", "big-memory.wasm"] {
        let error = agora_host::fuzzing::load_module(&seed(refused)).expect_err(refused);
        eprintln!("{refused}: {error}");
    }
}

#[test]
fn the_host_call_corpus_answers() {
    replay("host_calls", agora_host::fuzzing::host_calls);
}

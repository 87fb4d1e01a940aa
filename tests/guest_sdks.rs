//! The guest SDKs' own logic, unit-tested in each language's real interpreter or compiler:
//! error-case names, addresses, config lookup, replies, `Reject` against a fatal error, and the
//! Rust SDK's parsers (in `guest-sdk/src/lib.rs`, run by `cargo test -p agora-guest`). The
//! tests are in tests/sdk/; the toolchains are the ones `make guests` installs.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tool(relative: &str) -> PathBuf {
    let path = common::workspace().join(relative);
    assert!(path.exists(), "{} is missing: install it with `make guests`", path.display());
    path
}

fn passed(what: &str, output: Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{what} failed:\n{text}");
    text
}

fn in_workspace(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    command.current_dir(common::workspace());
    command
}

#[test]
fn the_python_sdk_maps_errors_addresses_and_callbacks() {
    // The bindings componentize-py generates for the agent world, importable by CPython.
    let bindings = tempfile::tempdir().unwrap();
    let generated = in_workspace(tool(".toolchains/python/bin/componentize-py"))
        .args(["-d", "wit", "-w", "agent", "bindings"])
        .arg(bindings.path())
        .output()
        .unwrap();
    passed("componentize-py bindings", generated);
    let path = std::env::join_paths([bindings.path(), Path::new("guest-sdk/python")]).unwrap();
    let run = in_workspace("python3")
        .args(["-m", "unittest", "-v", "tests/sdk/python_sdk_test.py"])
        .env("PYTHONPATH", path)
        .output()
        .unwrap();
    let report = passed("the Python SDK's tests", run);
    assert!(report.contains("Ran 7 tests"), "{report}");
}

#[test]
fn the_javascript_sdk_maps_errors_and_callbacks() {
    let run = in_workspace("node")
        .args(["--import", "./tests/sdk/js_sdk_loader.mjs", "--test", "tests/sdk/js_sdk_test.mjs"])
        .output()
        .unwrap();
    let report = passed("the JavaScript SDK's tests", run);
    assert!(report.contains("# pass 5") && report.contains("# fail 0"), "{report}");
}

#[test]
fn the_c_sdk_names_every_error_case_and_finds_config_keys() {
    let generated = tool("target/guests/c-gen/agent.h");
    let binary = tempfile::tempdir().unwrap().keep().join("c_sdk_test");
    let compiled = in_workspace("clang-19")
        .args(["-O1", "-Wall", "-Werror", "-I"])
        .arg(generated.parent().unwrap())
        .args(["-I", "guest-sdk/c", "tests/sdk/c_sdk_test.c", "-o"])
        .arg(&binary)
        .output()
        .unwrap();
    passed("compiling the C SDK's tests", compiled);
    let report = passed("the C SDK's tests", Command::new(&binary).output().unwrap());
    assert!(report.contains("c sdk: all passed"), "{report}");
    let _ = std::fs::remove_dir_all(binary.parent().unwrap());
}

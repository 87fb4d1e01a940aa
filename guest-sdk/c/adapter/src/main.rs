//! `preview1-adapter <file>`: write the WASI preview 1 reactor adapter (a C agent is a reactor:
//! the host calls its exports; it has no `main`) that `wasm-tools component new --adapt` needs.
fn main() -> std::process::ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: preview1-adapter <output file>");
        return std::process::ExitCode::FAILURE;
    };
    let adapter = wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER;
    match std::fs::write(&path, adapter) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("preview1-adapter: {}: {error}", std::path::Path::new(&path).display());
            std::process::ExitCode::FAILURE
        }
    }
}

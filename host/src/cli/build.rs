//! `agora build`: run each module's `build` command from the manifest, as `spin build` does, in
//! the manifest's directory, one after another, showing their output. The flags an agent needs
//! that a plain `cargo build` lacks come from here, so that a project needs no `.cargo/config.toml`:
//! a Rust agent's shadow stack is cut to 64 KiB (a 1 MiB stack would not fit small memory caps).

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

use crate::manifest::Manifest;

/// Rust's wasm32-wasip2 flags for agents, unless the environment sets its own.
const RUST_FLAGS: (&str, &str) = ("CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS", "-C link-arg=-zstack-size=65536");

pub fn build(manifest: &Path) -> anyhow::Result<ExitCode> {
    let modules = Manifest::modules_of(manifest)?;
    let dir = manifest.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let builds: Vec<_> = modules.iter().filter(|m| m.build.is_some()).collect();
    if builds.is_empty() {
        println!("{}: no module has a `build` command", manifest.display());
        return Ok(ExitCode::SUCCESS);
    }
    for module in builds {
        let command = module.build.as_deref().unwrap_or_default();
        println!("building {}: {command}", module.name);
        let started = Instant::now();
        let mut shell = Command::new("sh");
        shell.args(["-c", command]).current_dir(dir);
        if std::env::var_os(RUST_FLAGS.0).is_none() {
            shell.env(RUST_FLAGS.0, RUST_FLAGS.1);
        }
        let status = shell.status().map_err(|e| anyhow::anyhow!("module {}: cannot run `sh`: {e}", module.name))?;
        if !status.success() {
            anyhow::bail!(
                "module {}: `{command}` failed ({status}); `agora doctor` checks the toolchains",
                module.name
            );
        }
        let built = dir.join(&module.path);
        if !built.is_file() {
            anyhow::bail!(
                "module {}: `{command}` succeeded but did not make {} (the module's `path`)",
                module.name,
                built.display()
            );
        }
        let size = std::fs::metadata(&built).map(|m| m.len()).unwrap_or(0);
        println!(
            "built {} -> {} ({}, {:.1} s)",
            module.name,
            module.path,
            crate::manifest::units::readable(size),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

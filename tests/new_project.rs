//! `agora new` in each language, from an empty directory outside the repository: the project
//! it writes builds with `agora build`, passes `agora check` and answers `agora run --call`,
//! all without arguments (they find `agora.toml`), with only the language's toolchain on PATH.
//! The Rust project is the README's 60-second session, run by tests/readme.rs.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::{Run, agora, run_command};

/// `agora` in `dir`, with the toolchains `make guests` installs on PATH.
fn agora_in(dir: &Path, args: &[&str]) -> Run {
    let tools = common::workspace().join(".toolchains");
    let mut path = vec![tools.join("python/bin"), tools.join("js/node_modules/.bin"), tools.join("cargo/bin")];
    path.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    let mut command: Command = agora();
    command.current_dir(dir).env("PATH", std::env::join_paths(path).unwrap());
    run_command(command, args)
}

fn scaffold_build_check_and_run(lang: &str) {
    let home = tempfile::tempdir().unwrap();
    let created = agora_in(home.path(), &["new", "greeter", "--lang", lang]);
    created.assert_success();
    assert!(created.stdout.contains("agora run --call greeter=world"), "{}", created.stdout);
    let project = home.path().join("greeter");
    assert!(project.join("agora.toml").is_file() && project.join("README.md").is_file());

    // Before the build, check says what to do.
    let unbuilt = agora_in(&project, &["check"]);
    unbuilt.assert_failure();
    assert!(unbuilt.stderr.contains("(build it with `agora build`)"), "{}", unbuilt.stderr);

    let built = agora_in(&project, &["build"]);
    built.assert_success();
    assert!(built.stdout.contains("built greeter -> "), "{}\n{}", built.stdout, built.stderr);
    agora_in(&project, &["check"]).assert_success();
    let ran = agora_in(&project, &["run", "--call", "greeter=world"]);
    ran.assert_success();
    assert_eq!(ran.stdout, "greeter: hello, world!\n", "{}", ran.stderr);
    assert!(ran.stderr.contains("greeting world"), "the agent's own log line: {}", ran.stderr);

    // A second `new` into the same place refuses to overwrite it.
    let again = agora_in(home.path(), &["new", "greeter", "--lang", lang]);
    again.assert_failure();
    assert!(again.stderr.contains("already exists and is not empty"), "{}", again.stderr);
}

#[test]
fn a_new_python_agent_builds_checks_and_answers() {
    scaffold_build_check_and_run("python");
}

#[test]
fn a_new_javascript_agent_builds_checks_and_answers() {
    scaffold_build_check_and_run("js");
}

#[test]
fn a_new_c_agent_builds_checks_and_answers() {
    scaffold_build_check_and_run("c");
}

#[test]
fn new_refuses_bad_names_and_commands_without_a_manifest_say_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let bad = agora_in(home.path(), &["new", "Bad Name", "--lang", "rust"]);
    bad.assert_failure();
    assert!(bad.stderr.contains("a project name is 1-64 lowercase letters"), "{}", bad.stderr);
    for command in ["run", "check", "build"] {
        let lost = agora_in(home.path(), &[command]);
        lost.assert_failure();
        assert!(lost.stderr.contains("no agora.toml in this directory"), "{command}: {}", lost.stderr);
    }
    // A build command that fails names its module.
    std::fs::write(
        home.path().join("agora.toml"),
        "[modules.broken]\npath = \"broken.wasm\"\nbuild = \"echo compiling; exit 3\"\n",
    )
    .unwrap();
    let failed = agora_in(home.path(), &["build"]);
    failed.assert_failure();
    assert!(failed.stdout.contains("compiling"), "the command's own output is shown: {}", failed.stdout);
    assert!(failed.stderr.contains("module broken: `echo compiling; exit 3` failed"), "{}", failed.stderr);
    std::fs::write(home.path().join("agora.toml"), "[modules.quiet]\npath = \"quiet.wasm\"\nbuild = \"true\"\n")
        .unwrap();
    let nothing = agora_in(home.path(), &["build"]);
    nothing.assert_failure();
    assert!(nothing.stderr.contains("succeeded but did not make"), "{}", nothing.stderr);
    std::fs::write(home.path().join("agora.toml"), "[modules.odd]\npath = \"odd.wasm\"\nbiuld = \"true\"\n").unwrap();
    let typo = agora_in(home.path(), &["build"]);
    typo.assert_failure();
    assert!(typo.stderr.contains("unknown key `biuld`"), "{}", typo.stderr);
}

#[test]
fn doctor_names_what_a_project_lacks_and_how_to_get_it() {
    let home = tempfile::tempdir().unwrap();
    agora_in(home.path(), &["new", "snake", "--lang", "python"]).assert_success();
    let project = home.path().join("snake");
    let ready = agora_in(&project, &["doctor"]);
    ready.assert_success();
    assert!(ready.stdout.contains("ok      componentize-py is "), "{}", ready.stdout);
    assert!(ready.stdout.contains("vm.max_map_count = "), "{}", ready.stdout);

    // Without the toolchain on PATH, the project's language is a problem; the others are notes.
    let mut bare = agora();
    bare.current_dir(&project).env("PATH", "/usr/bin:/bin");
    let lacking = run_command(bare, &["doctor"]);
    lacking.assert_failure();
    assert!(lacking.stdout.contains("problem componentize-py is not on PATH (Python agents)"), "{}", lacking.stdout);
    assert!(lacking.stdout.contains("-> pip install componentize-py==0.25.1"), "{}", lacking.stdout);
    assert!(lacking.stdout.contains("note    componentize-js is not on PATH"), "{}", lacking.stdout);

    // A data_dir that is a file.
    let manifest = project.join("agora.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace("data_dir = \".agora\"", "data_dir = \"README.md\"");
    std::fs::write(&manifest, text).unwrap();
    let blocked = agora_in(&project, &["doctor"]);
    blocked.assert_failure();
    assert!(blocked.stdout.contains("problem the manifest does not check: "), "{}", blocked.stdout);
    assert!(blocked.stdout.contains("README.md is a file, not a directory"), "{}", blocked.stdout);
}

//! Every example in the README, run: the 60-second session command by command, each first
//! agent against what `agora new` writes (which tests/new_project.rs builds and runs), and each
//! manifest through `agora check`.

use crate::common;

use std::path::{Path, PathBuf};

use common::{Run, agora, run_command};

fn readme() -> String {
    std::fs::read_to_string(common::workspace().join("README.md")).unwrap()
}

/// The text of a `## title` section.
fn section<'a>(text: &'a str, title: &str) -> &'a str {
    let start = text.find(&format!("\n## {title}\n")).unwrap_or_else(|| panic!("no section {title:?}"));
    let rest = &text[start + title.len() + 5..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// The fenced code blocks of `text` in this language (`""`: those without one).
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut open: Option<(bool, String)> = None;
    for line in text.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(tag)) => open = Some((tag.trim() == lang, String::new())),
            (Some(_), Some(_)) => {
                let (wanted, body) = open.take().unwrap();
                if wanted {
                    found.push(body);
                }
            }
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    found
}

fn agora_in(dir: &Path, args: &[&str]) -> Run {
    let mut command = agora();
    command.current_dir(dir);
    run_command(command, args)
}

#[test]
fn the_sixty_second_session_runs_as_written() {
    let text = readme();
    let session = section(&text, "In 60 seconds");
    let commands = &blocks(session, "sh")[0];
    let printed = session.split("The last command prints `").nth(1).and_then(|r| r.split('`').next()).unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut dir: PathBuf = home.path().to_path_buf();
    let mut last = None;
    for line in commands.lines() {
        let words: Vec<&str> = line.split('#').next().unwrap().split_whitespace().collect();
        match words.as_slice() {
            ["cd", to] => dir = dir.join(to),
            ["agora", args @ ..] => {
                let run = agora_in(&dir, args);
                run.assert_success();
                last = Some(run);
            }
            other => panic!("the session has a command this test does not know: {other:?}"),
        }
    }
    let last = last.unwrap();
    assert_eq!(last.stdout, format!("{printed}\n"), "{}", last.stderr);
    // `agora build` gave the agent its small stack: it runs within a 1 MiB memory cap.
    let manifest = dir.join("agora.toml");
    let small_cap = std::fs::read_to_string(&manifest).unwrap().replace("config = {", "memory = \"1MiB\"\nconfig = {");
    std::fs::write(&manifest, small_cap).unwrap();
    let small = agora_in(&dir, &["run", "--call", "greeter=small"]);
    small.assert_success();
    assert_eq!(small.stdout, "greeter: hello, small!\n", "{}", small.stderr);

    // The manifest section's error example, on this project.
    let shown = blocks(section(&text, "The manifest"), "")[0].trim().to_string();
    let manifest_text = std::fs::read_to_string(&manifest).unwrap().replace("memory = \"1MiB\"", "memroy = \"1MiB\"");
    std::fs::write(&manifest, manifest_text).unwrap();
    let misspelt = agora_in(&dir, &["check"]);
    misspelt.assert_failure();
    assert_eq!(misspelt.stderr.trim(), format!("agora: error: {shown}"));
}

#[test]
fn each_first_agent_is_what_agora_new_writes() {
    let text = readme();
    let first = section(&text, "Your first agent");
    for (lang, fence, file) in [
        ("rust", "rust", "src/lib.rs"),
        ("python", "python", "app.py"),
        ("js", "js", "agent.js"),
        ("c", "c", "agent.c"),
    ] {
        let home = tempfile::tempdir().unwrap();
        agora_in(home.path(), &["new", "greeter", "--lang", lang]).assert_success();
        let written = std::fs::read_to_string(home.path().join("greeter").join(file)).unwrap();
        let shown = blocks(first, fence);
        assert_eq!(shown.first(), Some(&written), "the README's {lang} agent differs from {file}");
    }
}

#[test]
fn every_manifest_in_the_readme_checks() {
    let text = readme();
    let manifests = blocks(&text, "toml");
    assert!(manifests.len() >= 2, "{} manifests", manifests.len());
    let built = common::agent("echo");
    for (index, manifest) in manifests.iter().enumerate() {
        // Laid out as the README's paths expect: the manifest in a directory beside `target/`.
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("project");
        std::fs::create_dir_all(dir.join("plugins")).unwrap();
        let agents = home.path().join("target/wasm32-wasip2/agent");
        std::fs::create_dir_all(&agents).unwrap();
        for name in ["echo", "counter", "worker"] {
            std::fs::copy(built.with_file_name(format!("{name}.wasm")), agents.join(format!("{name}.wasm"))).unwrap();
        }
        // A fragment names modules it does not declare: the sample agents, by those names.
        let text = if manifest.contains("[modules]") {
            manifest.clone()
        } else {
            let modules = ["echo", "counter", "worker"]
                .map(|m| format!("{m} = \"../target/wasm32-wasip2/agent/{m}.wasm\"\n"))
                .concat();
            format!("{manifest}\n[modules]\n{modules}")
        };
        std::fs::write(dir.join("agora.toml"), text).unwrap();
        let checked = agora_in(&dir, &["check"]);
        assert!(checked.status.success(), "README manifest {index} fails check:\n{}\n{manifest}", checked.stderr);
    }
}

#[test]
fn each_service_example_is_the_tours_and_the_tour_runs() {
    let text = readme();
    let shown = blocks(section(&text, "Host services"), "rust");
    let tour = std::fs::read_to_string(common::workspace().join("sample-agents/rust/tour/src/lib.rs")).unwrap();
    let regions: Vec<String> = tour
        .split("// README: ")
        .skip(1)
        .filter_map(|part| part.split_once('\n'))
        .filter(|(tag, _)| *tag != "end")
        .map(|(_, body)| body.to_string())
        .collect();
    assert_eq!(regions.len(), 12, "the tour's marked functions");
    assert_eq!(shown, regions, "the README's service examples are the tour's functions, in order");

    // The tour as shipped, but with its admin endpoint (the outbound stop's upstream) on a free
    // port, its modules found from elsewhere and its data in a directory of its own.
    let shipped = std::fs::read_to_string(common::workspace().join("examples/tour.toml")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let target = common::workspace().join("target");
    let manifest = shipped
        .replace("127.0.0.1:9464", &format!("127.0.0.1:{port}"))
        .replace("\"../target/", &format!("\"{}/", target.display()))
        .replace("data_dir = \"../.agora/tour-example\"", "data_dir = \"data\"");
    assert_ne!(manifest, shipped);
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("tour.toml"), manifest).unwrap();
    let run = agora_in(home.path(), &["run", "--log-format", "json", "tour.toml"]);
    run.assert_success();
    let said: Vec<String> = run.logs("tour");
    let expected = [
        "config: pricing.rate = 3",
        "events: appended as #",
        "telemetry: counted",
        "outbound: status 200, circuit closed, 0 of 8 connections in use",
        "rate limits: 2 of 3 passed",
        "locks: released",
        "barriers: round 1 complete",
        "election: leading",
        "consensus: committed, 2 of 2 accepted",
        "ledger: balance 70 held 30",
        "auctions: #1 asked 10, unsold",
        "market: task #1: nobody proposed; balance 100",
    ];
    run.assert_logs_start_with("tour", &expected);
    assert!(said[1].ends_with(", found 1 by its correlation"), "{}", said[1]);
}

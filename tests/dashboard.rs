//! The dashboard in a real browser (headless Chromium driven by playwright-core, both installed
//! by `make browser`): the page refuses a missing or wrong token, opens with the link's, lists
//! the agents of examples/dashboard.toml, shows a crash in the event stream and the tree within
//! a second, and stops an agent from its page. The screenshots it takes are the README's
//! (`docs/dashboard-*.png`).

use crate::common;

use std::process::Command;

use common::{Scenario, agent, terminate, until_admin_listens, wait_for_event, workspace};

#[test]
fn the_dashboard_works_in_a_real_browser() {
    let example = std::fs::read_to_string(workspace().join("examples/dashboard.toml")).unwrap();
    // Beside the example's own paths: this test's data directory and a free port.
    let mut manifest = example
        .replace("data_dir = \"../.agora-dashboard\"", "data_dir = \"data\"")
        .replace("admin = \"127.0.0.1:9464\"", "admin = \"127.0.0.1:0\"");
    for (name, file) in [("echo", "echo"), ("counter", "counter"), ("misbehave", "misbehave")] {
        let shipped = format!("\"../target/wasm32-wasip2/agent/{file}.wasm\"");
        manifest = manifest.replace(&shipped, &format!("{:?}", agent(file).display().to_string()));
        assert!(manifest.contains(&agent(file).display().to_string()), "{name} is in the example");
    }
    let scenario = Scenario::new(&manifest);
    let (child, mut lines, mut seen, address) = until_admin_listens(scenario.spawn());
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "supervisor_started" && e["supervisor"] == "root");
    std::thread::spawn(move || for _ in lines {});
    let token = std::fs::read_to_string(scenario.dir.path().join("data/admin.token")).unwrap();

    let tools = workspace().join(".toolchains/browser/node_modules/playwright-core");
    assert!(tools.is_dir(), "`make browser` installs playwright-core into {}", tools.display());
    assert!(std::path::Path::new("/usr/bin/chromium").is_file(), "`make browser` installs Debian's chromium");
    let shots = workspace().join("docs");
    let run = Command::new("node")
        .current_dir(workspace())
        .env("PLAYWRIGHT_CORE", &tools)
        .args(["tests/browser/dashboard_test.mjs", &format!("http://{address}"), token.trim()])
        .arg(&shots)
        .arg("counter,echo,crasher,front,back")
        .output()
        .expect("running node");
    terminate(&child);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "the browser test failed:\n{stdout}\n{stderr}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok - ")).count(), 5, "{stdout}");
    for shot in ["overview", "agents", "events", "tree", "agent"] {
        assert!(shots.join(format!("dashboard-{shot}.png")).is_file(), "the {shot} screenshot");
    }
}

#[test]
fn the_agents_table_holds_ten_thousand_agents_in_a_real_browser() {
    const AGENTS: usize = 10_000;
    let mut manifest = format!(
        "[host]\ndata_dir = \"data\"\nadmin = \"127.0.0.1:0\"\nmax_agents = {}\n[modules]\necho = {:?}\n",
        AGENTS + 100,
        agent("echo").display().to_string()
    );
    for i in 0..AGENTS {
        manifest.push_str(&format!("[[supervisor.children]]\nname = \"many-{i}\"\nmodule = \"echo\"\n"));
    }
    let scenario = Scenario::new(&manifest);
    let (child, mut lines, mut seen, address) = until_admin_listens(scenario.spawn());
    wait_for_event(&mut lines, &mut seen, |e| e["event"] == "supervisor_started" && e["supervisor"] == "root");
    std::thread::spawn(move || for _ in lines {});
    let token = std::fs::read_to_string(scenario.dir.path().join("data/admin.token")).unwrap();
    let run = Command::new("node")
        .current_dir(workspace())
        .env("PLAYWRIGHT_CORE", workspace().join(".toolchains/browser/node_modules/playwright-core"))
        .args(["tests/browser/many_agents_test.mjs", &format!("http://{address}"), token.trim(), &AGENTS.to_string()])
        .output()
        .expect("running node");
    terminate(&child);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "the browser test failed:\n{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains(&format!("ok - {AGENTS} agents")), "{stdout}");
    println!("{stdout}");
}

//! Fault injection for the tests: `AGORA_INJECT_FAULT=<site>` or `<site>:<name>` makes that
//! piece of host code panic once per process, so that a test can show the panic is contained
//! (a restarted ticker, an agent or a supervisor failing with `host_panic` and restarted by
//! its supervisor) rather than taking the host down. Unset, each check is one relaxed load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

fn target() -> Option<&'static str> {
    static TARGET: OnceLock<Option<String>> = OnceLock::new();
    TARGET.get_or_init(|| std::env::var("AGORA_INJECT_FAULT").ok().filter(|v| !v.is_empty())).as_deref()
}

/// Whether the fault is set for `site` (and `name`, when the site has names).
pub fn aimed_at(site: &str, name: &str) -> bool {
    target().is_some_and(|target| match target.split_once(':') {
        Some((at, who)) => at == site && who == name,
        None => target == site,
    })
}

/// Whether the fault at `site` (for `name`) is to fire now: true once per process.
pub fn fires(site: &str, name: &str) -> bool {
    static FIRED: AtomicBool = AtomicBool::new(false);
    aimed_at(site, name) && !FIRED.swap(true, Ordering::Relaxed)
}

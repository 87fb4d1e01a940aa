//! What the host's parts share and no capability owns: the durable-store plumbing (a redb file
//! with a format version and a group-committing writer), the hashers of its maps, and the one
//! housekeeping thread that runs every periodic sweep; the lock that gives a data directory to
//! one running host; the recent log lines for operators; the panic report; and the tests' fault
//! injection.

pub mod durable;
pub mod faults;
pub mod hashers;
pub mod host_lock;
pub mod housekeeping;
pub mod log_tail;
pub mod panics;

/// This process's resident memory, in bytes (0 where /proc does not say).
pub fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

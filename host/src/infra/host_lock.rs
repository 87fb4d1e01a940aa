//! One running host per data directory. `agora run` holds an exclusive `flock` on
//! `<data_dir>/host.lock` for as long as it runs, and writes there who it is: its pid, its
//! manifest and, once the endpoint listens, its admin address. The lock, not the file, is the
//! truth: the kernel drops it when the process ends however it ends, so a file left behind by a
//! killed host is stale and is never trusted — neither by a second host (which takes the lock
//! over) nor by the commands that look for a running host's admin address.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Who holds a data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub manifest: String,
    pub admin: Option<crate::admin::Address>,
}

/// The lock of a running host; released when dropped (or when the process ends).
pub struct HostLock {
    file: File,
    path: PathBuf,
    holder: Holder,
}

pub fn lock_file(data_dir: &Path) -> PathBuf {
    data_dir.join("host.lock")
}

/// `flock` without waiting: false when another open file holds a conflicting lock.
fn try_flock(file: &File, exclusive: bool) -> std::io::Result<bool> {
    let operation = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH } | libc::LOCK_NB;
    // SAFETY: flock on a descriptor this `File` owns for the duration of the call.
    if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
        return Ok(true);
    }
    let error = std::io::Error::last_os_error();
    if error.kind() == std::io::ErrorKind::WouldBlock { Ok(false) } else { Err(error) }
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

impl HostLock {
    /// Take `data_dir` for this process, or say which host has it.
    pub fn acquire(data_dir: &Path, manifest: &Path) -> anyhow::Result<HostLock> {
        std::fs::create_dir_all(data_dir).map_err(|e| anyhow::anyhow!("data_dir {}: {e}", data_dir.display()))?;
        let path = lock_file(data_dir);
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if !try_flock(&file, true).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))? {
            let who = match read_holder(&mut file) {
                Some(Holder { pid, manifest, admin }) => {
                    let admin = admin.map_or_else(|| "no admin endpoint".to_string(), |a| format!("admin {a}"));
                    format!("another agora host (pid {pid}, running {manifest}, {admin})")
                }
                None => "another agora host (starting)".to_string(),
            };
            anyhow::bail!(
                "data_dir {} is in use by {who}: stop that host, or give this manifest another `host.data_dir`",
                data_dir.display()
            );
        }
        let holder = Holder { pid: std::process::id(), manifest: manifest.display().to_string(), admin: None };
        let mut lock = HostLock { file, path, holder };
        lock.write()?;
        Ok(lock)
    }

    /// Record the admin endpoint's bound address, for `agora config` and friends.
    pub fn record_admin(&mut self, address: crate::admin::Address) -> anyhow::Result<()> {
        self.holder.admin = Some(address);
        self.write()
    }

    fn write(&mut self) -> anyhow::Result<()> {
        let text = serde_json::to_string(&self.holder)?;
        let written = (|| {
            self.file.set_len(0)?;
            self.file.rewind()?;
            self.file.write_all(text.as_bytes())?;
            self.file.sync_data()
        })();
        written.map_err(|e| anyhow::anyhow!("{}: {e}", self.path.display()))
    }
}

/// The host running on `data_dir` now, if any: a record whose lock is not held is stale.
pub fn running(data_dir: &Path) -> Option<Holder> {
    let mut file = File::open(lock_file(data_dir)).ok()?;
    match try_flock(&file, false) {
        // Nobody holds it: whatever the file says is left over from a host that has ended.
        Ok(true) => None,
        Ok(false) => read_holder(&mut file),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_host_is_refused_with_the_first_ones_pid_and_admin_address() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = HostLock::acquire(dir.path(), Path::new("first.toml")).unwrap();
        assert_eq!(running(dir.path()).map(|h| h.admin), Some(None));
        let admin: crate::admin::Address = "127.0.0.1:9464".parse().unwrap();
        first.record_admin(admin.clone()).unwrap();
        let refused = HostLock::acquire(dir.path(), Path::new("second.toml")).err().unwrap().to_string();
        let pid = std::process::id();
        assert!(refused.contains(&format!("pid {pid}, running first.toml, admin 127.0.0.1:9464")), "{refused}");
        assert_eq!(running(dir.path()), Some(Holder { pid, manifest: "first.toml".into(), admin: Some(admin) }));
        drop(first);
        assert_eq!(running(dir.path()), None, "a record without its lock is stale");
        let second = HostLock::acquire(dir.path(), Path::new("second.toml")).unwrap();
        assert_eq!(running(dir.path()).unwrap().manifest, "second.toml", "the stale record was replaced");
        drop(second);
    }
}

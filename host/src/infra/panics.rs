//! The host's panic report. Rust's default hook symbolises the backtrace (`RUST_BACKTRACE=1`)
//! on the panicking thread before unwinding starts; in a binary of this size that takes
//! seconds, during which a tokio worker is stuck and whatever the panicking task holds (the
//! reply channel of the message an agent was handling) stays alive, so a caller that should
//! learn `stopped` at once waits out its timeout instead. This hook writes the panic's message
//! and place at once, takes only the stack's addresses, and leaves their symbolisation to a
//! thread of its own.

use std::backtrace::{Backtrace, BacktraceStatus};
use std::io::Write;
use std::sync::mpsc;

/// Backtraces waiting to be printed; past this many, a panic's backtrace is left out (said so).
const QUEUED_BACKTRACES: usize = 16;

/// Install the hook (once, at startup).
pub fn install() {
    let (queue, printer) = mpsc::sync_channel::<(String, Backtrace)>(QUEUED_BACKTRACES);
    let printing = std::thread::Builder::new().name("agora-panic-report".into()).spawn(move || {
        for (thread, backtrace) in printer {
            let _ = writeln!(std::io::stderr().lock(), "backtrace of the panic in thread '{thread}':\n{backtrace}");
        }
    });
    let queue = printing.is_ok().then_some(queue);
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("<unnamed>").to_string();
        let message = crate::runtime::agent::panic_message(info.payload());
        let place = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column())).unwrap_or_default();
        let backtrace = Backtrace::capture();
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "thread '{name}' panicked at {place}:\n{message}");
        if backtrace.status() != BacktraceStatus::Captured {
            let _ = writeln!(stderr, "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace");
            return;
        }
        // The main thread's panic ends the process: its backtrace is printed before that.
        match &queue {
            Some(queue) if name != "main" => {
                if queue.try_send((name, backtrace)).is_err() {
                    let _ = writeln!(stderr, "(backtrace left out: {QUEUED_BACKTRACES} are still being printed)");
                }
            }
            _ => {
                let _ = writeln!(stderr, "{backtrace}");
            }
        }
    }));
}

//! Log output. Text goes to stderr for people: one short line per event (`12:03:04.512 INFO
//! agent echo started`), coloured only on a terminal unless `--color` says otherwise; with
//! `--verbose` each line also carries the event's fields, and a crash's backtrace and captured
//! output follow it, indented. JSON goes to stdout for machines: one object per line, every field.
//! `RUST_LOG` filters both (default `info`, `warn` for benchmarks); `--quiet` (`warn`) and
//! `--verbose` (`debug`) override it. What the log shows is also kept for `agora logs`
//! (`infra::log_tail`).

use std::fmt;
use std::io::IsTerminal;

use clap::ValueEnum;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::LogFormat;
use crate::infra::log_tail::TailLayer;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    /// Colour when stderr is a terminal.
    Auto,
    Always,
    Never,
}

/// How much the text log says.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    Quiet,
    Normal,
    Verbose,
}

pub fn init(format: LogFormat, detail: Detail, color: Color, default_filter: &str) {
    let level = match detail {
        Detail::Quiet => "warn",
        Detail::Normal => default_filter,
        Detail::Verbose => "debug",
    };
    // An explicit `--quiet` or `--verbose` wins over `RUST_LOG`.
    let from_env = if detail == Detail::Normal { EnvFilter::try_from_default_env().ok() } else { None };
    let filter =
        from_env.unwrap_or_else(|| EnvFilter::new(format!("{level},wasmtime=warn,cranelift=warn,hyper=warn,h2=warn")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => {
            let color = match color {
                Color::Auto => std::io::stderr().is_terminal(),
                Color::Always => true,
                Color::Never => false,
            };
            builder
                .with_ansi(color)
                .event_format(Human { color, verbose: detail == Detail::Verbose })
                .with_writer(std::io::stderr)
                .finish()
                .with(TailLayer)
                .init()
        }
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stdout)
            .finish()
            .with(TailLayer)
            .init(),
    }
}

/// The most of a message's first line a normal log shows; the rest is for `--verbose`.
const LINE: usize = 240;

/// Fields shown on lines of their own, indented, with `--verbose`.
const BLOCKS: &[&str] = &["backtrace", "output"];

struct Human {
    color: bool,
    verbose: bool,
}

#[derive(Default)]
struct Fields {
    message: String,
    inline: Vec<(&'static str, String)>,
    blocks: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.keep(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.keep(field, format!("{value:?}"));
    }
}

impl Fields {
    fn keep(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            name if BLOCKS.contains(&name) => self.blocks.push((name, value)),
            name => self.inline.push((name, value)),
        }
    }
}

/// Seconds since midnight UTC, as `HH:MM:SS.mmm`.
fn clock(now: std::time::SystemTime) -> String {
    let since = now.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() % 86_400;
    format!("{:02}:{:02}:{:02}.{:03}", secs / 3600, secs / 60 % 60, secs % 60, since.subsec_millis())
}

impl<S, N> FormatEvent<S, N> for Human
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = *event.metadata().level();
        let (paint, reset) = match (self.color, level) {
            (false, _) => ("", ""),
            (true, Level::ERROR) => ("\x1b[31m", "\x1b[0m"),
            (true, Level::WARN) => ("\x1b[33m", "\x1b[0m"),
            (true, Level::INFO) => ("\x1b[32m", "\x1b[0m"),
            (true, _) => ("\x1b[2m", "\x1b[0m"),
        };
        let dim = if self.color { "\x1b[2m" } else { "" };
        write!(writer, "{dim}{}{reset} {paint}{level:>5}{reset} ", clock(std::time::SystemTime::now()))?;
        // What an agent said is shown as its own: `driver: probe: ...`.
        if event.metadata().target() == "agora::agent"
            && let Some((_, agent)) = fields.inline.iter().find(|(name, _)| *name == "agent")
        {
            fields.message = format!("{agent}: {}", fields.message);
        }
        // An event without a message says what it is by its name and fields.
        let unnamed = fields.message.is_empty();
        if unnamed {
            let said: Vec<String> = fields.inline.iter().map(|(name, value)| format!("{name}={value}")).collect();
            fields.message = said.join(" ");
        }
        let mut lines = fields.message.lines();
        let first = lines.next().unwrap_or_default();
        match first.char_indices().nth(LINE) {
            Some((cut, _)) if !self.verbose => write!(writer, "{}…", &first[..cut])?,
            _ => writer.write_str(first)?,
        }
        if self.verbose && !unnamed {
            for (name, value) in &fields.inline {
                write!(writer, " {dim}{name}={reset}{value}")?;
            }
        }
        writer.write_char('\n')?;
        if self.verbose {
            for line in lines {
                writeln!(writer, "    {line}")?;
            }
            for (name, value) in &fields.blocks {
                writeln!(writer, "    {dim}{name}:{reset}")?;
                for line in value.lines() {
                    writeln!(writer, "      {line}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_the_time_of_day_in_utc() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(86_400_000 * 3 + 3_723_045);
        assert_eq!(clock(at), "01:02:03.045");
    }
}

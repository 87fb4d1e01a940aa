//! Log output: `RUST_LOG` filters (default `info`, `warn` for benchmarks); text goes to stderr,
//! JSON lines to stdout.

use tracing_subscriber::EnvFilter;

use super::LogFormat;

pub fn init(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_filter},wasmtime=warn,cranelift=warn")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.with_writer(std::io::stderr).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stdout)
            .init(),
    }
}

//! Logging through `tracing` to stderr, as text or JSON lines (`LOG_FORMAT`), at
//! `LOG_LEVEL`, like the gateway's.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(level: &str, format: LogFormat) {
    // Driver internals are noisy at info; keep them a level quieter.
    let filter = EnvFilter::try_new(format!(
        "{level},tokio_postgres=warn,refinery_core=warn,hyper=warn,reqwest=warn"
    ))
    .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}

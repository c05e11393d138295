//! Logging through `tracing`, as text or JSON lines (`LOG_FORMAT`), at `LOG_LEVEL`.
//! Pingora's own `log` records are bridged into the same output.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(level: &str, format: LogFormat) {
    // Pingora is chatty at info about each connection; keep it one level quieter.
    let filter = EnvFilter::try_new(format!("{level},pingora_core=warn,pingora_proxy=warn"))
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

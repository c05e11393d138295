//! Building and running the Pingora server from Corral's own validated config (Pingora's YAML
//! config would silently ignore unknown keys, and its command-line parser is not ours).

use std::sync::Arc;

use pingora_core::apps::HttpServerOptions;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;

use crate::config::Config;
use crate::pool::HealthChecker;
use crate::proxy::Gateway;
use crate::state::AppState;

pub fn run(config: Config, upgrade: bool) -> Result<(), String> {
    let conf = server_conf(&config);
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let listen = config.listen;
    let state = Arc::new(AppState::new(config)?);
    let checker = background_service("pool health", HealthChecker::new(Arc::clone(&state.pool)));
    let mut proxy = pingora_proxy::http_proxy_service_with_name(
        &server.configuration,
        Gateway {
            state: Arc::clone(&state),
        },
        "corral gateway",
    );
    if let Some(app) = proxy.app_logic_mut() {
        // HTTP/2 without TLS (prior knowledge), for clients and sidecars that speak it.
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        app.server_options = Some(options);
    }
    proxy.add_tcp(&listen.to_string());
    server.add_service(checker);
    server.add_service(proxy);
    tracing::info!(%listen, instances = state.pool.instances.len(), "corral gateway starting");
    server.run_forever();
}

fn server_conf(config: &Config) -> ServerConf {
    ServerConf {
        threads: config.threads,
        pid_file: config.pid_file.clone(),
        upgrade_sock: config.upgrade_sock.clone(),
        grace_period_seconds: Some(config.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.shutdown_timeout.as_secs()),
        ..ServerConf::default()
    }
}

//! Building and running the Pingora server from Corral's own validated config (Pingora's YAML
//! config would silently ignore unknown keys, and its command-line parser is not ours).

use std::sync::{Arc, Mutex};

use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::ListenerConfig;
use pingora_core::protocols::l4::stream::L4BufferSettings;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use pingora_proxy::HttpProxy;

use crate::admission::LeaseKeeper;
use crate::config::{Config, TlsConfig};
use crate::drain::DrainingSignals;
use crate::keys::{ChangeListener, LastUsedWriter};
use crate::listener::{HeaderGuard, HeaderLimits};
use crate::policy::PolicyReloader;
use crate::pool::HealthChecker;
use crate::proxy::Gateway;
use crate::quota::ledger::LedgerWriter;
use crate::signals::HangupListener;
use crate::state::AppState;
use crate::tls::{CertReloader, CertStore, SniResolver};

pub fn run(config: Config, upgrade: bool) -> Result<(), String> {
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&config));
    server.bootstrap();

    let state = Arc::new(AppState::new(config)?);
    let hangup = HangupListener::new();
    let mut proxy = guarded_proxy(&server, &state);
    let config = &state.config;
    proxy.add_listener(ListenerConfig::tcp(config.listen.to_string()).l4_buffer(l4_buffers()));
    if let Some(tls) = &config.tls {
        let reloader = add_tls(&mut proxy, tls, &state, &hangup)?;
        server.add_service(background_service("tls reload", reloader));
    }
    let checker = HealthChecker::new(Arc::clone(&state.pool));
    server.add_service(background_service("pool health", checker));
    let policy_reloader = PolicyReloader {
        store: Arc::clone(&state.policies),
        metrics: Arc::clone(&state.metrics),
        interval: config.policies.watch_interval,
        read_timeout: config.policies.read_timeout,
        hangups: Mutex::new(Some(hangup.tx.subscribe())),
    };
    server.add_service(background_service("policy reload", policy_reloader));
    server.add_service(background_service("sighup", hangup));
    if let Some(ledger) = &state.ledger {
        server.add_service(background_service(
            "usage ledger",
            LedgerWriter::new(
                Arc::clone(ledger),
                config.grace_period,
                state.drain.flusher(),
            ),
        ));
    }
    if let Some(shared) = &state.shared {
        let keeper = LeaseKeeper {
            shared: Arc::clone(shared),
        };
        server.add_service(background_service("stream leases", keeper));
    }
    if let Some(keys) = &state.keys {
        server.add_service(background_service(
            "api key changes",
            ChangeListener {
                store: Arc::clone(keys),
            },
        ));
        server.add_service(background_service(
            "api key last use",
            LastUsedWriter {
                store: Arc::clone(keys),
                flusher: tokio::sync::Mutex::new(Some(state.drain.flusher())),
            },
        ));
    }
    if let Some(verifier) = &state.verifier {
        let refresher = JwksRefresh {
            verifier: Arc::clone(verifier),
        };
        server.add_service(background_service("jwks refresh", refresher));
    }
    server.add_service(proxy);
    tracing::info!(
        listen = %config.listen,
        tls_listen = ?config.tls.as_ref().map(|t| t.listen),
        instances = state.pool.instances.len(),
        "corral gateway starting"
    );
    let signals = DrainingSignals {
        drain: Arc::clone(&state.drain),
        grace: config.grace_period,
        flush_at_least: config.shutdown_timeout,
    };
    server.run(RunArgs {
        shutdown_signal: Box::new(signals),
    });
    std::process::exit(0)
}

type GatewayService = Service<HeaderGuard<HttpProxy<Gateway>>>;

/// The proxy, with HTTP/2 without TLS (prior knowledge) for clients and sidecars that speak
/// it, behind the header guard (see `listener`).
fn guarded_proxy(server: &Server, state: &Arc<AppState>) -> GatewayService {
    let mut proxy = pingora_proxy::http_proxy(
        &server.configuration,
        Gateway {
            state: Arc::clone(state),
        },
    );
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    proxy.server_options = Some(options);
    let guard = HeaderGuard {
        inner: Arc::new(proxy),
        limits: HeaderLimits {
            max_bytes: state.config.max_header_bytes,
            timeout: state.config.header_timeout,
        },
        metrics: Arc::clone(&state.metrics),
    };
    Service::new("corral gateway".to_string(), guard)
}

/// The TLS listener: TLS 1.2 and 1.3 (rustls' modern suites only), ALPN h2 and http/1.1,
/// certificates by SNI from a resolver that reloads swap.
fn add_tls(
    proxy: &mut GatewayService,
    tls: &TlsConfig,
    state: &AppState,
    hangup: &HangupListener,
) -> Result<CertReloader, String> {
    let store = CertStore::load(tls)?;
    store.export_expiry(&state.metrics);
    let resolver = SniResolver::new(store);
    let cert = tls.default_cert.cert_file.display().to_string();
    let key = tls.default_cert.key_file.display().to_string();
    let mut settings =
        TlsSettings::intermediate(&cert, &key).map_err(|e| format!("TLS settings: {e}"))?;
    settings.set_cert_resolver(resolver.clone());
    settings.enable_h2();
    proxy.add_listener(
        ListenerConfig::tcp(tls.listen.to_string())
            .tls(settings)
            .l4_buffer(l4_buffers()),
    );
    Ok(CertReloader {
        config: tls.clone(),
        resolver,
        metrics: Arc::clone(&state.metrics),
        hangups: Mutex::new(Some(hangup.tx.subscribe())),
    })
}

/// Starts the verifier's JWKS timer inside Pingora's runtime (it spawns tokio tasks).
struct JwksRefresh {
    verifier: Arc<corral_auth::Verifier>,
}

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for JwksRefresh {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        self.verifier.start_background_refresh();
        let _ = shutdown.changed().await;
    }
}

/// Client connections read through a 16 KiB buffer (one TLS record) instead of Pingora's
/// 64 KiB: with thousands of mostly idle streaming clients the buffers are most of the
/// gateway's memory, and request bodies larger than the buffer bypass it anyway.
const CLIENT_READ_BUFFER: usize = 16 * 1024;

fn l4_buffers() -> L4BufferSettings {
    L4BufferSettings::default().read(CLIENT_READ_BUFFER)
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

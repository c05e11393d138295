//! Benchmark baseline: the smallest Pingora proxy (one fixed upstream, no filters, no
//! metrics). `bench/run.sh` measures it beside the gateway so that the cost of Pingora's own
//! request path on a machine can be told apart from what Corral adds on top of it.
//!
//!     cargo run --release -p gateway --example bare_pingora -- LISTEN UPSTREAM THREADS

use async_trait::async_trait;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_proxy::{ProxyHttp, Session};

/// The gateway's allocator, so that memory figures compare like with like.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream, threads] = &args[..] else {
        eprintln!("usage: bare_pingora LISTEN UPSTREAM THREADS");
        std::process::exit(2);
    };
    let conf = ServerConf {
        threads: threads.parse().expect("THREADS is a number"),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let bare = Bare {
        upstream: upstream.clone(),
    };
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, bare);
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever();
}

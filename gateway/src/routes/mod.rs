//! Route matching: host (optional) and longest path prefix pick a route, its target and its
//! plugin chain.

mod ollama;

use std::sync::Arc;

pub use ollama::{classify, OllamaEndpoint};

use crate::config::{RouteConfig, Target};
use crate::plugins::Plugin;

/// A route ready to serve: its config and its built plugin chain.
pub struct Route {
    pub config: RouteConfig,
    pub chain: Vec<Arc<dyn Plugin>>,
}

impl Route {
    pub fn target(&self) -> Target {
        self.config.target
    }

    /// The label used in metrics: the prefix (bounded cardinality, unlike raw paths).
    pub fn label(&self) -> &str {
        &self.config.prefix
    }
}

pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        Self {
            routes: routes.into_iter().map(Arc::new).collect(),
        }
    }

    /// The route whose host matches (or has none) with the longest matching prefix; a route
    /// naming the host beats one that does not.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<Arc<Route>> {
        let host = host.map(strip_port).map(str::to_ascii_lowercase);
        self.routes
            .iter()
            .filter(|r| path.starts_with(r.config.prefix.as_str()))
            .filter(|r| match (&r.config.host, &host) {
                (None, _) => true,
                (Some(want), Some(got)) => want == got,
                (Some(_), None) => false,
            })
            .max_by_key(|r| (r.config.host.is_some(), r.config.prefix.len()))
            .cloned()
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| h.trim_start_matches('['));
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_routes;

    fn table(mut extra: Vec<RouteConfig>) -> RouteTable {
        extra.extend(default_routes());
        RouteTable::new(
            extra
                .into_iter()
                .map(|config| Route {
                    config,
                    chain: Vec::new(),
                })
                .collect(),
        )
    }

    #[test]
    fn longest_prefix_and_host_win() {
        let t = table(vec![RouteConfig {
            host: Some("admin.example.com".into()),
            prefix: "/api/".into(),
            target: Target::Backend,
            plugins: vec![],
            websocket: false,
            forward_authorization: true,
        }]);
        let r = t
            .find(Some("chat.example.com"), "/api/conversations/1")
            .expect("route");
        assert_eq!(r.target(), Target::Backend);
        let r = t
            .find(Some("chat.example.com:443"), "/api/chat")
            .expect("route");
        assert_eq!(r.target(), Target::Ollama);
        let r = t
            .find(Some("ADMIN.example.com:8080"), "/api/chat")
            .expect("route");
        assert_eq!(r.target(), Target::Backend);
        assert!(t.find(None, "/other").is_none());
    }
}

//! Validation of the edge settings: CORS, TLS listeners and certificates, JWT auth, proxies.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::cors::{parse_origin, CorsConfig, OriginRule};
use super::file::FileConfig;
use super::{values, Config, ConfigError, Validator};

/// A certificate chain and its key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// A certificate served for the listed names (SNI); `*.example.com` covers subdomains.
#[derive(Debug, Clone)]
pub struct SniCert {
    pub server_names: Vec<String>,
    pub files: CertFiles,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub listen: std::net::SocketAddr,
    /// Served when no SNI name matches.
    pub default_cert: CertFiles,
    pub certificates: Vec<SniCert>,
    /// `Strict-Transport-Security` value on TLS responses; `None` disables it.
    pub hsts: Option<String>,
    /// The plain listener answers 308 to HTTPS (except `/healthz`).
    pub redirect_http: bool,
    /// How often certificate files are checked for changes.
    pub watch_interval: Duration,
}

/// Who may call: the JWT settings (the shared verifier's own type) and the API-key settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub jwt: corral_auth::AuthSettings,
    /// Path prefixes that need no token.
    pub public_paths: Vec<String>,
    /// `API_KEY_PEPPER`: API keys are accepted (read from `DATABASE_URL`) when set.
    pub api_key_pepper: Option<corral_auth::api_key::Pepper>,
    /// Longest life of a cached key (a change reaches every gateway at once by NOTIFY; this
    /// bounds a missed one).
    pub key_cache: Duration,
    /// While the database is away, cached keys keep working until their entry is this old.
    pub key_stale: Duration,
    /// Failed key checks from one client IP in a minute before it gets 429 for the minute.
    pub max_failures_per_minute: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt: corral_auth::AuthSettings::default(),
            public_paths: Vec::new(),
            api_key_pepper: None,
            key_cache: Duration::from_secs(60),
            key_stale: Duration::from_secs(900),
            max_failures_per_minute: 30,
        }
    }
}

impl AuthConfig {
    /// Auth is on as soon as any key source (JWT or API keys) is configured.
    pub fn enabled(&self) -> bool {
        self.jwt.has_key_source() || self.api_key_pepper.is_some()
    }
}

/// A network in `trusted_proxies`: whose `X-Forwarded-For` the gateway believes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("\"{addr}\" is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("prefix \"/{p}\" must be 0 to {max}"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u32::from(net).into(), u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(net), u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn mask(net: u128, ip: u128, prefix: u8, bits: u32) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = bits - u32::from(prefix);
    (net >> shift) == (ip >> shift)
}

impl Validator<'_> {
    pub(super) fn cors(&self, raw: &FileConfig, c: &mut Config) -> Result<(), ConfigError> {
        let s = &raw.cors;
        let mut cors = CorsConfig::default();
        if let Some(list) = &s.origins {
            for o in list.get_ref() {
                let rule = parse_origin(o.get_ref()).map_err(|m| {
                    self.err(o, "cors.origins", format!("\"{}\": {m}", o.get_ref()))
                })?;
                cors.origins.push(rule);
            }
        }
        if let Some(b) = &s.allow_credentials {
            cors.allow_credentials = *b.get_ref();
            if cors.allow_credentials && cors.origins.contains(&OriginRule::Any) {
                return Err(self.err(
                    b,
                    "cors.allow_credentials",
                    "true is not allowed with the origin \"*\": list the origins",
                ));
            }
        }
        if let Some(m) = &s.allow_methods {
            cors.allow_methods = m.iter().map(|m| m.to_ascii_uppercase()).collect();
        }
        if let Some(h) = &s.allow_headers {
            cors.allow_headers = h.iter().map(|h| h.to_ascii_lowercase()).collect();
        }
        if let Some(h) = &s.expose_headers {
            cors.expose_headers = h.clone();
        }
        if let Some(n) = self.int(&s.max_age_s, "cors.max_age_s", 0, 86_400)? {
            cors.max_age = Duration::from_secs(n);
        }
        c.cors = cors;
        Ok(())
    }

    pub(super) fn tls(&self, raw: &FileConfig, c: &mut Config) -> Result<(), ConfigError> {
        let t = &raw.tls;
        let Some(listen) = &t.listen else {
            if let Some(first) = t.certificates.first() {
                return Err(self.err(
                    &first.cert_file,
                    "tls.certificates",
                    "certificates need tls.listen",
                ));
            }
            return Ok(());
        };
        let addr = values::parse_listen(listen.get_ref()).map_err(|m| {
            self.err(
                listen,
                "tls.listen",
                format!("\"{}\": {m}", listen.get_ref()),
            )
        })?;
        let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) else {
            return Err(self.err(listen, "tls.listen", "needs tls.cert_file and tls.key_file"));
        };
        let mut certificates = Vec::new();
        for sc in &t.certificates {
            if sc.server_names.get_ref().is_empty() {
                return Err(self.err(
                    &sc.server_names,
                    "tls.certificates.server_names",
                    "list at least one name",
                ));
            }
            certificates.push(SniCert {
                server_names: sc
                    .server_names
                    .get_ref()
                    .iter()
                    .map(|n| n.to_ascii_lowercase())
                    .collect(),
                files: CertFiles {
                    cert_file: sc.cert_file.get_ref().into(),
                    key_file: sc.key_file.get_ref().into(),
                },
            });
        }
        let watch = self
            .int(
                &t.watch_interval_ms,
                "tls.watch_interval_ms",
                100,
                3_600_000,
            )?
            .unwrap_or(1000);
        c.tls = Some(TlsConfig {
            listen: addr,
            default_cert: CertFiles {
                cert_file: cert.get_ref().into(),
                key_file: key.get_ref().into(),
            },
            certificates,
            hsts: match t.hsts.as_deref() {
                None => Some("max-age=31536000".into()),
                Some("") => None,
                Some(v) => Some(v.to_string()),
            },
            redirect_http: t.redirect_http.unwrap_or(false),
            watch_interval: Duration::from_millis(watch),
        });
        Ok(())
    }

    pub(super) fn auth(&self, raw: &FileConfig, c: &mut Config) -> Result<(), ConfigError> {
        let a = &raw.auth;
        let mut auth = AuthConfig::default();
        auth.jwt.hs256_secret = a.secret.clone().filter(|s| !s.is_empty());
        auth.jwt.public_key_file = a.public_key_file.as_ref().map(|p| p.get_ref().into());
        if let Some(url) = &a.jwks_url {
            if !url.get_ref().starts_with("http://") && !url.get_ref().starts_with("https://") {
                return Err(self.err(
                    url,
                    "auth.jwt.jwks_url",
                    format!("\"{}\": expected an http(s) URL", url.get_ref()),
                ));
            }
            auth.jwt.jwks_url = Some(url.get_ref().clone());
        }
        auth.jwt.issuer = a.issuer.clone();
        auth.jwt.audience = a.audience.clone();
        if let Some(n) = self.int(&a.leeway_s, "auth.leeway_s", 0, 3_600)? {
            auth.jwt.leeway = Duration::from_secs(n);
        }
        if let Some(n) = self.int(&a.jwks_refresh_s, "auth.jwks_refresh_s", 10, 86_400)? {
            auth.jwt.jwks_refresh = Duration::from_secs(n);
        }
        if let Some(n) = self.int(&a.jwks_min_refetch_s, "auth.jwks_min_refetch_s", 1, 3_600)? {
            auth.jwt.jwks_min_refetch = Duration::from_secs(n);
        }
        if let Some(n) = self.int(&a.key_cache_s, "auth.key_cache_s", 1, 3_600)? {
            auth.key_cache = Duration::from_secs(n);
        }
        if let Some(n) = self.int(&a.key_stale_s, "auth.key_stale_s", 0, 86_400)? {
            auth.key_stale = Duration::from_secs(n);
        }
        if let Some(n) = self.int(
            &a.max_failures_per_minute,
            "auth.max_failures_per_minute",
            1,
            100_000,
        )? {
            auth.max_failures_per_minute = n as u32;
        }
        if let Some(v) = &a.org_claim {
            auth.jwt.org_claim = v.clone();
        }
        if let Some(v) = &a.user_claim {
            auth.jwt.user_claim = v.clone();
        }
        if let Some(v) = &a.role_claim {
            auth.jwt.role_claim = (!v.is_empty()).then(|| v.clone());
        }
        for p in a.public_paths.iter().flatten() {
            if !p.get_ref().starts_with('/') {
                return Err(self.err(
                    p,
                    "auth.public_paths",
                    format!("\"{}\" must start with /", p.get_ref()),
                ));
            }
            auth.public_paths.push(p.get_ref().clone());
        }
        c.auth = auth;
        Ok(())
    }

    pub(super) fn policies_and_redis(
        &self,
        raw: &FileConfig,
        c: &mut Config,
    ) -> Result<(), ConfigError> {
        if let Some(dir) = &raw.policies.dir {
            c.policies.dir = dir.into();
        }
        if let Some(n) = self.int(
            &raw.policies.watch_interval_ms,
            "policies.watch_interval_ms",
            50,
            60_000,
        )? {
            c.policies.watch_interval = Duration::from_millis(n);
        }
        let p = &raw.policies;
        if let Some(n) = self.int(&p.max_file_bytes, "policies.max_file_bytes", 1, 1 << 30)? {
            c.policies.max_file_bytes = n;
        }
        if let Some(n) = self.int(&p.read_timeout_ms, "policies.read_timeout_ms", 10, 600_000)? {
            c.policies.read_timeout = Duration::from_millis(n);
        }
        let r = &raw.redis;
        if let Some(url) = &r.url {
            crate::redis_conn::url::parse(url.get_ref())
                .map_err(|m| self.err(url, "redis.url", m))?;
            c.redis.url = Some(url.get_ref().clone());
        }
        if let Some(p) = &r.key_prefix {
            c.redis.key_prefix = values::parse_key_prefix(p.get_ref()).map_err(|m| {
                self.err(p, "redis.key_prefix", format!("\"{}\": {m}", p.get_ref()))
            })?;
        }
        if let Some(n) = self.int(&r.timeout_ms, "redis.timeout_ms", 1, 60_000)? {
            c.redis.timeout = Duration::from_millis(n);
        }
        if let Some(n) = self.int(&r.stream_lease_ms, "redis.stream_lease_ms", 1_000, 600_000)? {
            c.redis.stream_lease = Duration::from_millis(n);
        }
        if let Some(mode) = &r.failure_mode {
            c.redis.failure_mode = values::parse_failure_mode(mode.get_ref()).map_err(|m| {
                self.err(
                    mode,
                    "redis.failure_mode",
                    format!("\"{}\": {m}", mode.get_ref()),
                )
            })?;
        }
        Ok(())
    }

    pub(super) fn trusted_proxies(
        &self,
        raw: &FileConfig,
        c: &mut Config,
    ) -> Result<(), ConfigError> {
        for p in raw.server.trusted_proxies.iter().flatten() {
            let cidr = Cidr::parse(p.get_ref()).map_err(|m| {
                self.err(
                    p,
                    "server.trusted_proxies",
                    format!("\"{}\": {m}", p.get_ref()),
                )
            })?;
            c.trusted_proxies.push(cidr);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").expect("valid");
        assert!(c.contains("10.1.2.3".parse().expect("ip")));
        assert!(!c.contains("11.1.2.3".parse().expect("ip")));
        assert!(c.contains("::ffff:10.0.0.1".parse().expect("ip")));
        let one = Cidr::parse("127.0.0.1").expect("valid");
        assert!(one.contains("127.0.0.1".parse().expect("ip")));
        assert!(!one.contains("127.0.0.2".parse().expect("ip")));
        assert!(Cidr::parse("fd00::/8")
            .expect("v6")
            .contains("fd12::1".parse().expect("ip")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("all")
            .contains("8.8.8.8".parse().expect("ip")));
    }
}

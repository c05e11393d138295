//! `corral-bench`: a closed-loop load generator for Ollama-shaped endpoints.
//!
//! Each of `--concurrency` workers owns exactly one HTTP/1.1 keep-alive connection
//! (hyper's connection API, no pool), so 1,000 workers mean 1,000 real connections.
//! `https://` URLs speak HTTP/1.1 over TLS (rustls, ALPN `http/1.1` only), trusting
//! `--ca-file` or, with `--insecure`, any certificate (signatures are still checked, so
//! the handshake costs what a real one does). Workers connect (and finish their TLS
//! handshake) before the clock starts, so handshakes are not measured per request; a
//! connection is only made again after an error. Workers connect first and start together; each then sends requests back to back
//! until the duration is up, reading every body to its end and checking it finished
//! properly (`done: true` on /api/*, `data: [DONE]` or `choices` on /v1/*).
//!
//! Prints one `key=value` line per run and exits non-zero when more than
//! `--max-error-pct` percent of requests failed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_rustls::TlsConnector;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "corral-bench",
    about = "Load generator for Ollama-shaped endpoints"
)]
struct Args {
    /// Full endpoint URL, e.g. http://127.0.0.1:8080/api/chat or https://127.0.0.1:8443/api/chat.
    #[arg(long)]
    url: String,
    /// PEM file of the CA certificate(s) to trust for an https:// URL.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Accept any server certificate for an https:// URL (its handshake signature is still
    /// verified).
    #[arg(long)]
    insecure: bool,
    /// Offer only this TLS version (`1.2` or `1.3`); both by default.
    #[arg(long, value_parser = ["1.2", "1.3"])]
    tls_version: Option<String>,
    /// Concurrent workers, one connection each.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long workers keep starting new requests, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Send streaming requests and read each stream to its end.
    #[arg(long)]
    stream: bool,
    #[arg(long, default_value = "llama3:8b")]
    model: String,
    /// Name of this run in the output line.
    #[arg(long, default_value = "run")]
    label: String,
    /// Extra request header, `Name: value` (repeatable), e.g. an Authorization header.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Give up on one request after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout_s: u64,
    /// Exit non-zero above this share of failed requests, in percent.
    #[arg(long, default_value_t = 1.0)]
    max_error_pct: f64,
    /// Chat endpoints: send a system prompt and this many bytes of earlier turns before the
    /// question (a multi-turn history, as chat clients resend it), instead of one message.
    #[arg(long, default_value_t = 0)]
    history_bytes: usize,
}

/// Everything a worker needs to build and check its requests.
struct Target {
    addr: SocketAddr,
    /// For https:// URLs: the connector and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The negotiated version and cipher suite, as the first TLS connection saw them.
    tls_info: OnceLock<String>,
    authority: String,
    path: String,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
    native: bool,
    stream: bool,
    timeout: Duration,
}

/// What one worker measured. Latencies stay raw (microseconds) until the end: a
/// histogram per worker would cost ~100 KB each at a thousand workers.
#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    connections: u64,
    /// (time to first body byte, total), in microseconds.
    latencies_us: Vec<(u64, u64)>,
    first_errors: Vec<String>,
}

impl Tally {
    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.first_errors.len() < 3 && !self.first_errors.contains(&message) {
            self.first_errors.push(message);
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.connections += other.connections;
        self.latencies_us.extend(other.latencies_us);
        for e in other.first_errors {
            if self.first_errors.len() < 5 && !self.first_errors.contains(&e) {
                self.first_errors.push(e);
            }
        }
    }
}

fn target(args: &Args) -> Result<Target, String> {
    let uri: Uri = args
        .url
        .parse()
        .map_err(|e| format!("--url={:?} is not valid: {e}", args.url))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(format!(
                "--url={:?} is not valid: expected http:// or https://",
                args.url
            ))
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("--url={:?} is not valid: no host", args.url))?;
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tls = if https {
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("--url={:?} is not valid: {e}", args.url))?;
        Some((tls_connector(args)?, name))
    } else {
        if args.ca_file.is_some() || args.insecure || args.tls_version.is_some() {
            return Err("--ca-file, --insecure and --tls-version need an https:// --url".into());
        }
        None
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(authority.host(), port))
        .map_err(|e| format!("--url={:?} is not valid: {e}", args.url))?
        .next()
        .ok_or_else(|| format!("--url={:?} is not valid: host has no address", args.url))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let mut headers = Vec::new();
    for raw in &args.headers {
        let (name, value) = raw
            .split_once(':')
            .ok_or_else(|| format!("--header={raw:?} is not valid: expected `Name: value`"))?;
        let name = HeaderName::try_from(name.trim())
            .map_err(|e| format!("--header={raw:?} is not valid: {e}"))?;
        let value = HeaderValue::try_from(value.trim())
            .map_err(|e| format!("--header={raw:?} is not valid: {e}"))?;
        headers.push((name, value));
    }
    let prompt = "Say hello in five words.";
    let body = if uri.path().ends_with("/api/generate") || uri.path().ends_with("/v1/completions") {
        serde_json::json!({ "model": args.model, "prompt": prompt, "stream": args.stream })
    } else {
        serde_json::json!({
            "model": args.model,
            "messages": history(args.history_bytes, prompt),
            "stream": args.stream,
        })
    };
    Ok(Target {
        addr,
        tls,
        tls_info: OnceLock::new(),
        authority: authority.to_string(),
        native: !uri.path().starts_with("/v1/"),
        path,
        body: Bytes::from(body.to_string()),
        headers,
        stream: args.stream,
        timeout: Duration::from_secs(args.timeout_s),
    })
}

/// A conversation of about `bytes` bytes of earlier turns (messages of about 520 bytes after
/// a system prompt, users and assistant alternating), ending with `question`; just the
/// question when 0.
fn history(bytes: usize, question: &str) -> Vec<serde_json::Value> {
    let mut messages = Vec::new();
    if bytes > 0 {
        messages
            .push(serde_json::json!({"role": "system", "content": "You are a helpful assistant."}));
    }
    let mut sent = 0;
    while sent < bytes {
        let role = if messages.len() % 2 == 1 {
            "user"
        } else {
            "assistant"
        };
        let content = format!(
            "Turn {}: {}",
            messages.len(),
            "words of history ".repeat(30)
        );
        sent += content.len();
        messages.push(serde_json::json!({"role": role, "content": content}));
    }
    messages.push(serde_json::json!({"role": "user", "content": question}));
    messages
}

/// The TLS client for https:// URLs: ring, TLS 1.2/1.3, ALPN `http/1.1` only.
fn tls_connector(args: &Args) -> Result<TlsConnector, String> {
    let provider = Arc::new(crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match args.tls_version.as_deref() {
        Some("1.2") => &[&rustls::version::TLS12],
        Some(_) => &[&rustls::version::TLS13],
        None => rustls::DEFAULT_VERSIONS,
    };
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match (&args.ca_file, args.insecure) {
        (Some(_), true) => return Err("--ca-file and --insecure exclude each other".into()),
        (None, false) => {
            return Err("an https:// --url needs --ca-file PATH or --insecure".into());
        }
        (Some(path), false) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("--ca-file={}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("--ca-file={}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("--ca-file={}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "--ca-file={}: no certificate in the file",
                    path.display()
                ));
            }
            builder.with_root_certificates(roots)
        }
        (None, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))),
    };
    let mut config = builder.with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// `--insecure`: any certificate chain is accepted, but the handshake signature is checked
/// as usual, so the handshake does the same work as a verified one (minus the chain).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

async fn connect(target: &Target) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let Some((connector, name)) = &target.tls else {
        return http1(stream).await;
    };
    let stream = connector
        .connect(name.clone(), stream)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let (_, session) = stream.get_ref();
    if let Some(alpn) = session.alpn_protocol() {
        if alpn != b"http/1.1" {
            return Err(format!(
                "TLS: server chose ALPN {:?}, not http/1.1",
                String::from_utf8_lossy(alpn)
            ));
        }
    }
    target.tls_info.get_or_init(|| {
        let version = session
            .protocol_version()
            .map_or_else(|| "unknown".to_string(), |v| format!("{v:?}"));
        let suite = session
            .negotiated_cipher_suite()
            .map_or_else(|| "unknown".to_string(), |s| format!("{:?}", s.suite()));
        format!("{version}/{suite}")
    });
    http1(stream).await
}

/// HTTP/1.1 over an established stream; the connection task runs on its own.
async fn http1<S>(stream: S) -> Result<SendRequest<Full<Bytes>>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends one request and reads its body to the end: (time to first body byte, total).
async fn one_request(
    sender: &mut SendRequest<Full<Bytes>>,
    target: &Target,
) -> Result<(Duration, Duration), String> {
    let mut builder = Request::post(target.path.as_str())
        .header(HOST, target.authority.as_str())
        .header(CONTENT_TYPE, "application/json");
    for (name, value) in &target.headers {
        builder = builder.header(name, value);
    }
    let request = builder
        .body(Full::new(target.body.clone()))
        .map_err(|e| format!("request: {e}"))?;
    sender
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let started = Instant::now();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = response.status();
    let mut body = response.into_body();
    let mut ttfb = None;
    let mut pending: Vec<u8> = Vec::new();
    let mut last_line: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        ttfb.get_or_insert_with(|| started.elapsed());
        pending.extend_from_slice(&data);
        if let Some(end) = pending.iter().rposition(|b| *b == b'\n') {
            let complete: Vec<u8> = pending.drain(..=end).collect();
            if let Some(line) = complete
                .split(|b| *b == b'\n')
                .rfind(|l| !l.trim_ascii().is_empty())
            {
                last_line = line.to_vec();
            }
        }
    }
    let total = started.elapsed();
    if !pending.trim_ascii().is_empty() {
        last_line = pending;
    }
    if !status.is_success() {
        return Err(format!("status {status}"));
    }
    check_finished(target, last_line.trim_ascii())?;
    Ok((ttfb.unwrap_or(total), total))
}

/// Whether a body ended the way a complete answer ends.
fn check_finished(target: &Target, last: &[u8]) -> Result<(), String> {
    let finished = if target.native {
        serde_json::from_slice::<serde_json::Value>(last)
            .is_ok_and(|v| v.get("done") == Some(&serde_json::Value::Bool(true)))
    } else if target.stream {
        last == b"data: [DONE]"
    } else {
        serde_json::from_slice::<serde_json::Value>(last).is_ok_and(|v| v.get("choices").is_some())
    };
    if finished {
        Ok(())
    } else {
        let shown = String::from_utf8_lossy(&last[..last.len().min(120)]).into_owned();
        Err(format!("unfinished body, last line {shown:?}"))
    }
}

async fn worker(target: Arc<Target>, start: Arc<Barrier>, duration: Duration) -> Tally {
    let mut tally = Tally::default();
    let mut connection = match connect(&target).await {
        Ok(sender) => {
            tally.connections += 1;
            Some(sender)
        }
        Err(e) => {
            tally.error(e);
            None
        }
    };
    start.wait().await;
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        let sender = match connection.as_mut() {
            Some(sender) => sender,
            None => match connect(&target).await {
                Ok(sender) => {
                    tally.connections += 1;
                    connection.insert(sender)
                }
                Err(e) => {
                    tally.error(e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        match tokio::time::timeout(target.timeout, one_request(sender, &target)).await {
            Ok(Ok((ttfb, total))) => {
                tally.ok += 1;
                tally
                    .latencies_us
                    .push((ttfb.as_micros() as u64, total.as_micros() as u64));
            }
            Ok(Err(e)) => {
                tally.error(e);
                connection = None;
            }
            Err(_) => {
                tally.error(format!("timeout after {:?}", target.timeout));
                connection = None;
            }
        }
    }
    tally
}

/// Histograms of (time to first byte, total) from raw samples.
fn histograms(samples: &[(u64, u64)]) -> (Histogram<u64>, Histogram<u64>) {
    let histogram =
        || Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
    let (mut ttfb, mut total) = (histogram(), histogram());
    for (first, all) in samples {
        ttfb.saturating_record(*first);
        total.saturating_record(*all);
    }
    (ttfb, total)
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

fn us(histogram: &Histogram<u64>, quantile: f64) -> u64 {
    histogram.value_at_quantile(quantile)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let target = match target(&args) {
        Ok(target) => Arc::new(target),
        Err(e) => {
            eprintln!("corral-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let concurrency = args.concurrency.max(1);
    let duration = Duration::from_secs_f64(args.duration_s.max(0.0));
    let start = Arc::new(Barrier::new(concurrency + 1));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(worker(Arc::clone(&target), Arc::clone(&start), duration)))
        .collect();
    start.wait().await;
    let began = Instant::now();
    let mut tally = Tally::default();
    for w in workers {
        match w.await {
            Ok(t) => tally.merge(t),
            Err(e) => tally.error(format!("worker: {e}")),
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    let requests = tally.ok + tally.errors;
    let (ttfb, total) = histograms(&tally.latencies_us);
    println!(
        "label={} mode={} tls={} conc={} conns={} requests={} errors={} rps={:.1} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2} ttfb_p50_ms={:.2} ttfb_p99_ms={:.2} p50_us={} p99_us={} ttfb_p50_us={} ttfb_p99_us={} elapsed_s={:.2}",
        args.label,
        if args.stream { "stream" } else { "plain" },
        match (&target.tls, target.tls_info.get()) {
            (None, _) => "off",
            (Some(_), Some(info)) => info.as_str(),
            (Some(_), None) => "unknown",
        },
        concurrency,
        tally.connections,
        requests,
        tally.errors,
        tally.ok as f64 / elapsed.max(f64::EPSILON),
        ms(&total, 0.5),
        ms(&total, 0.9),
        ms(&total, 0.99),
        total.max() as f64 / 1000.0,
        ms(&ttfb, 0.5),
        ms(&ttfb, 0.99),
        us(&total, 0.5),
        us(&total, 0.99),
        us(&ttfb, 0.5),
        us(&ttfb, 0.99),
        elapsed,
    );
    for e in &tally.first_errors {
        eprintln!("corral-bench: {}: error: {e}", args.label);
    }
    let error_pct = tally.errors as f64 * 100.0 / (requests.max(1)) as f64;
    if tally.ok == 0 || error_pct > args.max_error_pct {
        eprintln!(
            "corral-bench: {}: {error_pct:.2}% of {requests} requests failed",
            args.label
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

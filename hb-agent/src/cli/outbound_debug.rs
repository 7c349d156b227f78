//! Hidden commands that drive the broker's outbound path directly, for the end-to-end
//! tests (`__outbound`) and one latency figure (`__outbound-bench`). They stand in until
//! `POST /v1/requests` exercises the same path through the socket.
//!
//! Must never: take a credential from argv (`--credentials-stdin` reads them), or print
//! one.

use std::{
    io::BufRead as _,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::Method;
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::{
    broker::outbound::{
        CredentialQuery, HopDecision, Outbound, OutboundRequest, Party, headers, url::Target,
    },
    config::Config,
    secret::Secret,
};

#[derive(Debug, clap::Args)]
pub struct OutboundArgs {
    /// HTTP method.
    method: String,
    /// Absolute http(s) URL.
    url: String,
    /// An ordinary request header (repeatable).
    #[arg(long = "header", value_name = "NAME:VALUE")]
    headers: Vec<String>,
    /// Read credentials from stdin, one per line: `header NAME: VALUE` or
    /// `query NAME=VALUE`.
    #[arg(long)]
    credentials_stdin: bool,
    /// Follow redirects (overrides broker.follow_redirects).
    #[arg(long)]
    follow: bool,
    /// Redirect hops to this host are refused (repeatable).
    #[arg(long = "deny-hop", value_name = "HOST")]
    deny_hops: Vec<String>,
    /// Redirect hops to this host are followed without the credential (repeatable).
    #[arg(long = "strip-hop", value_name = "HOST")]
    strip_hops: Vec<String>,
    /// Request body.
    #[arg(long)]
    data: Option<String>,
    /// Send the request this many times through one `Outbound` (its pool) and print the
    /// last answer.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // The broker's own shape: a small multi-threaded runtime.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

fn split_header(line: &str) -> anyhow::Result<(&str, &str)> {
    let (name, value) = line
        .split_once(':')
        .with_context(|| "a header must be written NAME:VALUE".to_owned())?;
    Ok((name, value.trim_start_matches(' ')))
}

/// Sends one request and prints the response, or `{"error":{"code","message"}}` (exit 1).
pub fn run(config: Config, args: OutboundArgs) -> anyhow::Result<ExitCode> {
    let mut config = config;
    if args.follow {
        config.broker.follow_redirects = true;
    }
    let mut credential_headers = Vec::new();
    let mut credential_query = None;
    if args.credentials_stdin {
        for line in std::io::stdin().lock().lines() {
            let line = line.context("reading credentials from stdin")?;
            if let Some(h) = line.strip_prefix("header ") {
                let (name, value) = split_header(h)?;
                match headers::header(name, value) {
                    Ok(h) => credential_headers.push(h),
                    Err(e) => return Ok(print_error(&e.into())),
                }
            } else if let Some(q) = line.strip_prefix("query ") {
                let (name, value) = q.split_once('=').context("query NAME=VALUE")?;
                credential_query = Some(CredentialQuery {
                    name: name.to_owned(),
                    value: Secret::new(value.as_bytes().to_vec()),
                });
            } else if !line.is_empty() {
                bail!("credential lines are `header NAME: VALUE` or `query NAME=VALUE`");
            }
        }
    }
    let mut ordinary = Vec::new();
    for h in &args.headers {
        let (name, value) = split_header(h)?;
        match headers::header(name, value) {
            Ok(h) => ordinary.push(h),
            Err(e) => return Ok(print_error(&e.into())),
        }
    }
    let method = Method::from_bytes(args.method.as_bytes())
        .with_context(|| format!("\"{}\" is not an HTTP method", args.method))?;
    let target = match Target::parse(&args.url) {
        Ok(t) => t,
        Err(e) => return Ok(print_error(&e.into())),
    };
    let deny = args.deny_hops;
    let strip = args.strip_hops;
    let policy = move |next: &Target| {
        let host = next.host.to_string();
        if deny.contains(&host) {
            HopDecision::Deny
        } else {
            HopDecision::Allow {
                keep_credential: !strip.contains(&host),
            }
        }
    };
    let body = Bytes::from(args.data.unwrap_or_default());
    let query_value = credential_query.map(|q: CredentialQuery| (q.name, q.value));
    let rt = runtime()?;
    let result = rt.block_on(async {
        let outbound = Outbound::new(&config, crate::local_addrs::LocalAddrs::snapshot()?).await?;
        let mut result = None;
        for _ in 0..args.repeat.max(1) {
            let request = OutboundRequest {
                method: method.clone(),
                target: target.clone(),
                headers: ordinary.clone(),
                credential_headers: credential_headers.clone(),
                credential_query: query_value.as_ref().map(|(name, value)| CredentialQuery {
                    name: name.clone(),
                    value: Secret::new(value.expose().to_vec()),
                }),
                body: body.clone(),
                held: None,
                party: Party::Operator,
            };
            let r = outbound.send(request, &policy).await;
            let failed = r.is_err();
            result = Some(r);
            if failed {
                break;
            }
        }
        anyhow::Ok(result)
    })?;
    let Some(result) = result else {
        bail!("no request was sent");
    };
    match result {
        Ok(r) => {
            let headers: Vec<_> = r.headers.iter().map(|(k, v)| json!([k, v])).collect();
            let out = json!({
                "status": r.status,
                "headers": headers,
                "body": String::from_utf8_lossy(&r.body),
                "final_url": r.final_url,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(print_error(&e)),
    }
}

fn print_error(e: &crate::broker::outbound::OutboundError) -> ExitCode {
    let out = json!({"error": {"code": e.code(), "message": e.to_string()}});
    println!("{out}");
    ExitCode::FAILURE
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Where the in-process upstream listens (an address the config's exceptions allow).
    #[arg(long, default_value = "203.0.113.10:8080")]
    listen: std::net::SocketAddr,
    /// Name to ask for instead of the address (it must resolve to `--listen`'s address
    /// through dns.upstreams), so the figure includes the resolver's cache.
    #[arg(long)]
    host: Option<String>,
    /// Requests measured on each side (after about 200 unmeasured warm-up ones).
    #[arg(long, default_value_t = 2000)]
    count: usize,
    /// Callers sending at once, each its requests in sequence (the bare hyper side gets
    /// one connection per caller).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
}

/// `callers` tasks each sending `each` GETs through `outbound`, one after another: every
/// request's latency and the wall time of the whole run.
async fn through_outbound(
    outbound: &Arc<Outbound>,
    target: &Target,
    callers: usize,
    each: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let (outbound, target) = (outbound.clone(), target.clone());
        tasks.spawn(async move {
            let no_hops = |_: &Target| HopDecision::Deny;
            let mut latencies = Vec::with_capacity(each);
            for _ in 0..each {
                let req = OutboundRequest {
                    method: Method::GET,
                    target: target.clone(),
                    headers: Vec::new(),
                    credential_headers: Vec::new(),
                    credential_query: None,
                    body: Bytes::new(),
                    held: None,
                    party: Party::Operator,
                };
                let t = Instant::now();
                let r = outbound.send(req, &no_hops).await?;
                latencies.push(t.elapsed());
                anyhow::ensure!(r.status == 200, "upstream answered {}", r.status);
            }
            anyhow::Ok(latencies)
        });
    }
    let mut all = Vec::with_capacity(callers * each);
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    Ok((all, start.elapsed()))
}

/// The same load over bare hyper HTTP/1.1 connections, one per caller, kept open.
async fn through_hyper(
    addr: std::net::SocketAddr,
    callers: usize,
    each: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    use http_body_util::{BodyExt as _, Full};
    let mut senders = Vec::with_capacity(callers);
    for _ in 0..callers {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        senders.push(sender);
    }
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut sender in senders {
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(each);
            for _ in 0..each {
                let t = Instant::now();
                sender.ready().await?;
                let req = http::Request::get("/")
                    .header(http::header::HOST, addr.to_string())
                    .body(Full::new(Bytes::new()))?;
                let r = sender.send_request(req).await?;
                let _ = r.into_body().collect().await?.to_bytes();
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut all = Vec::with_capacity(callers * each);
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    Ok((all, start.elapsed()))
}

/// p50/p99 and requests per second of GETs through `Outbound::send` and through bare
/// hyper connections kept open (what a pooled client does), against the same
/// in-process upstream. A figure, not a test.
pub fn bench(config: Config, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("binding {}", args.listen))?;
    listener.set_nonblocking(true)?;
    // The upstream runs on threads of its own, as another process would.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build();
        if let Ok(rt) = rt {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
                let _ = axum::serve(listener, app).await;
            });
        }
    });
    let url = match &args.host {
        Some(host) => format!("http://{host}:{}/", args.listen.port()),
        None => format!("http://{}/", args.listen),
    };
    let target = Target::parse(&url)?;
    let callers = args.concurrency.max(1);
    let per_caller = args.count.div_ceil(callers);
    let rt = runtime()?;
    let (outbound, plain) = rt.block_on(async {
        let outbound = Outbound::new(&config, crate::local_addrs::LocalAddrs::snapshot()?).await?;
        // Warm-up rounds (pool, caches, allocator), then the measured ones.
        through_outbound(&outbound, &target, callers, 200_usize.div_ceil(callers)).await?;
        let through = through_outbound(&outbound, &target, callers, per_caller).await?;
        through_hyper(args.listen, callers, 200_usize.div_ceil(callers)).await?;
        let plain = through_hyper(args.listen, callers, per_caller).await?;
        anyhow::Ok((through, plain))
    })?;
    let pct = |v: &[Duration], p: f64| -> f64 {
        let mut v = v.to_vec();
        v.sort();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    let rate = |(lat, wall): &(Vec<Duration>, Duration)| lat.len() as f64 / wall.as_secs_f64();
    let out = json!({
        "url": url,
        "count": outbound.0.len(),
        "concurrency": callers,
        "outbound_p50_us": pct(&outbound.0, 0.5),
        "outbound_p99_us": pct(&outbound.0, 0.99),
        "outbound_req_per_s": rate(&outbound).round(),
        "plain_hyper_p50_us": pct(&plain.0, 0.5),
        "plain_hyper_p99_us": pct(&plain.0, 0.99),
        "plain_hyper_req_per_s": rate(&plain).round(),
        "added_p50_us": pct(&outbound.0, 0.5) - pct(&plain.0, 0.5),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

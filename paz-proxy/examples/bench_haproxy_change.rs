//! Route-change latency through HAProxy: the runtime API (a backend added to a service) vs a
//! reload (a new service), from `apply` to the first answer from the new backend.
//!
//! `cargo run --release -p paz-proxy --example bench_haproxy_change [ROUNDS]` (needs
//! `haproxy`; prints medians and p90 of each, and their ratio).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use paz_core::proxy::Proxy;
use paz_core::route::{Backend, Route, RouteTable};
use paz_proxy::{Haproxy, HaproxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend answering every request with its own name, keep-alive.
async fn backend(name: &'static str) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buffer).await {
                    if n == 0 {
                        return;
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}",
                        name.len()
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(address)
}

/// One request on a new connection; the answer's body.
async fn ask(at: SocketAddr, host: &str) -> Result<String> {
    let mut stream = TcpStream::connect(at).await?;
    stream
        .write_all(
            format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_owned())
}

fn route(service: &str, backends: &[SocketAddr]) -> Route {
    Route {
        backends: backends
            .iter()
            .map(|a| (a.to_string(), Backend::default()))
            .collect::<BTreeMap<_, _>>(),
        ..Route::new(service)
    }
}

/// Applies `table`, then asks `host` until `want` answers; the time it took.
async fn live_after(
    haproxy: &Haproxy,
    table: &RouteTable,
    host: &str,
    want: &str,
) -> Result<Duration> {
    let started = Instant::now();
    haproxy.apply(table).await?;
    loop {
        if ask(haproxy.address(), host).await.unwrap_or_default() == want {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "{want} never served"
        );
    }
}

fn summary(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (times[times.len() / 2], times[times.len() * 9 / 10])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(20), |n| n.parse())?;
    let dir = tempfile::tempdir()?;
    let mut config = HaproxyConfig::new("127.0.0.1:0".parse()?, dir.path().into());
    config.threads = 1;
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let (haproxy, _task) = Haproxy::start(config, shutdown)
        .await
        .context("start HAProxy")?;
    let (a, b) = (backend("a").await?, backend("b").await?);
    let mut runtime_api = Vec::new();
    let mut reloads = Vec::new();
    let mut table = RouteTable::default();
    table
        .routes
        .insert("web.localhost".into(), route("web", &[a]));
    haproxy.apply(&table).await?;
    for round in 0..rounds {
        // The runtime API: web moves from a to b, and back the next round.
        let (to, name) = if round % 2 == 0 { (b, "b") } else { (a, "a") };
        table
            .routes
            .insert("web.localhost".into(), route("web", &[to]));
        runtime_api.push(live_after(&haproxy, &table, "web.localhost", name).await?);
        // A reload: a new service of its own.
        let host = format!("s{round}.localhost");
        table
            .routes
            .insert(host.clone(), route(&format!("s{round}"), &[a]));
        reloads.push(live_after(&haproxy, &table, &host, "a").await?);
    }
    let (api_median, api_p90) = summary(runtime_api);
    let (reload_median, reload_p90) = summary(reloads);
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "rounds: {rounds}")?;
    writeln!(out, "runtime API: median {api_median:?}, p90 {api_p90:?}")?;
    writeln!(
        out,
        "reload:      median {reload_median:?}, p90 {reload_p90:?}"
    )?;
    writeln!(
        out,
        "reload / runtime API: {:.0}x (median)",
        reload_median.as_secs_f64() / api_median.as_secs_f64()
    )?;
    Ok(())
}

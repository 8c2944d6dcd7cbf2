//! The benchmark router: paz's built-in router in front of one backend.
//!
//! `cargo run --release -p paz-proxy --example bench_router -- BACKEND [ADDR] [WORKERS]`
//! routes host `127.0.0.1` (what wrk sends) to `BACKEND` (`ip:port`), listening on `ADDR`
//! (default `127.0.0.1:0`) with `WORKERS` router threads (default: the router's default;
//! 0 = a 2-thread multi-thread runtime instead). Prints `listening on ADDR` once bound.
//! Used by `benches/router.sh`.

use std::collections::BTreeMap;
use std::io::Write;

use paz_core::proxy::Proxy;
use paz_core::route::{Backend, Route, RouteTable};
use paz_proxy::{Router, RouterConfig, Scope};
use tokio::net::TcpListener;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let backend = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: bench_router BACKEND [ADDR] [WORKERS]"))?;
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let defaults = RouterConfig::default();
    let workers: usize = args.next().map_or(Ok(defaults.workers), |w| w.parse())?;
    let runtime = if workers == 0 {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    };
    runtime.block_on(async move {
        let mut config = RouterConfig {
            workers,
            ..defaults
        };
        // For experiments: `PAZ_BENCH_HEADER_TIMEOUT=off` serves without the slowloris timer.
        if std::env::var("PAZ_BENCH_HEADER_TIMEOUT").is_ok_and(|v| v == "off") {
            config.header_read_timeout = None;
        }
        let router = Router::new(config);
        let mut backends = BTreeMap::new();
        backends.insert(backend, Backend::default());
        let mut routes = BTreeMap::new();
        routes.insert(
            "127.0.0.1".to_owned(),
            Route {
                backends,
                ..Route::new("bench")
            },
        );
        router.apply(&RouteTable { routes }).await?;
        let listener = TcpListener::bind(&addr).await?;
        let local = listener.local_addr()?;
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        // `PAZ_BENCH_TLS=CHAIN.pem:KEY.pem`: serve HTTPS (for `benches/https.sh`).
        let served = match std::env::var("PAZ_BENCH_TLS") {
            Ok(files) => {
                let (chain, key) = files
                    .split_once(':')
                    .ok_or_else(|| anyhow::anyhow!("PAZ_BENCH_TLS must be CHAIN.pem:KEY.pem"))?;
                router.set_certificates(
                    &[paz_proxy::CertificatePem {
                        names: vec!["127.0.0.1".into()],
                        chain_pem: std::fs::read_to_string(chain)?,
                        key_pem: std::fs::read_to_string(key)?,
                    }],
                    None,
                )?;
                router.serve_tls(listener, Scope::Public, shutdown)
            }
            Err(_) => router.serve(listener, Scope::Public, shutdown),
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {local}")?;
        out.flush()?;
        drop(out);
        served.await?;
        anyhow::Ok(())
    })
}

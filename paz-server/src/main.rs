//! `paz-server`: the Paz daemon.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use paz_server::config::{Config, LogFormat};
use paz_server::token::{self, TokenSource};

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// `--role router`: the router only, fed from the announcements in the shared store.
async fn run_router_only(config: &Config) -> anyhow::Result<()> {
    let store = config.store_config().open().await?;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let sockets = paz::handover::Sockets::new();
    let router = config
        .runtime_config()
        .start_router_only(store, &sockets, stopping)
        .await?;
    #[allow(clippy::print_stdout)]
    {
        if let Some(tls) = router.tls_address {
            println!("paz-server router listening on https://{tls}");
        }
        println!(
            "paz-server router listening on http://{}",
            router.router_address
        );
    }
    shutdown_signal().await;
    let _ = stop.send(true);
    for listener in router.listeners {
        let _ = listener.await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_tracing(config.log_format);
    // Every client connection is a file descriptor: take what the hard limit allows.
    match paz::proxy::raise_open_files_limit() {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open files limit"),
    }
    if let Err(message) = config.validate() {
        eprintln!("error: {message}");
        std::process::exit(2);
    }
    token::create_private_dir(&config.data_dir)
        .with_context(|| format!("cannot create the data dir {}", config.data_dir.display()))?;
    if config.role == paz_server::config::Role::Router {
        return run_router_only(&config).await;
    }
    let (token, source) = token::load_or_generate(config.token.as_deref(), &config.data_dir)?;
    if source == TokenSource::Generated {
        // The token itself is not printed: output is often kept in logs.
        let path = config.data_dir.join("admin-token");
        #[allow(clippy::print_stdout)]
        {
            println!(
                "Generated the admin token into {} (mode 0600).",
                path.display()
            );
            println!(
                "The paz CLI on this machine reads it from there; elsewhere set PAZ_TOKEN to its content."
            );
        }
    }
    // Taking over: the running server's sockets and routes; else this data dir's upgrade
    // socket (refused if a server already runs on it).
    let mut launch = if config.upgrade {
        paz_server::Launch::take_over(&config.data_dir).await?
    } else {
        paz_server::Launch::fresh(&config.data_dir)?
    };
    let listener = launch
        .sockets()
        .tcp(paz::handover::API, config.api_listen)
        .await?;
    let address = listener.local_addr()?;
    let mut backends = config.runtime_config();
    if let Some(tls) = &mut backends.tls
        && let Some((_, api)) = &mut tls.api
    {
        // The port it really listens on (`--api-listen …:0`), reached from the router.
        *api = if address.ip().is_unspecified() {
            std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), address.port())
        } else {
            address
        };
    }
    let metrics_listener = match config.metrics_listen {
        Some(address) => Some(
            launch
                .sockets()
                .tcp(paz::handover::METRICS, address)
                .await?,
        ),
        None => None,
    };
    // At an upgrade this serves the old server's routes and waits until it has exited.
    launch.prepare(&backends).await?;
    let store = if config.upgrade {
        config
            .store_config()
            .build_when_free(std::time::Duration::from_secs(30))
            .await?
    } else {
        config.store_config().open().await?
    };
    let secret_key = match &config.secret_key {
        Some(hex) => {
            paz::store::SecretKey::from_hex(hex).context("--secret-key / PAZ_SECRET_KEY")?
        }
        None => paz::store::SecretKey::load_or_create(&config.data_dir.join("secret-key"))?,
    };
    let paz = paz_core::Paz::new(store, config.engine_config()).with_secrets(Arc::new(secret_key));
    let mut server =
        paz_server::start_with(&config, token, paz, listener, backends, launch).await?;
    let mut metrics_address = None;
    if let Some(listener) = metrics_listener {
        metrics_address = Some(listener.local_addr()?);
        server = server.with_metrics_listener(listener);
    }
    #[allow(clippy::print_stdout)]
    {
        // Before the API's line, which tells a waiting caller that the server is up.
        if let Some(metrics) = metrics_address {
            println!("paz-server metrics listening on http://{metrics}/metrics");
        }
        println!("paz-server listening on http://{address}");
        if let Some(tls) = server.tls_address() {
            println!("paz-server router listening on https://{tls}");
        }
        if let Some(router) = server.router_address() {
            println!("paz-server router listening on http://{router}");
        }
    }
    server.serve(shutdown_signal()).await?;
    Ok(())
}

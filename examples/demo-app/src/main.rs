//! `demo-app`: the Paz test workload. A tiny HTTP/1.1 server using only the Rust standard
//! library, built as a static binary for a `FROM scratch` image.
//!
//! Environment:
//! - `PORT` (default 8080): listen on `0.0.0.0:$PORT`
//! - `VERSION` (default `v1`): body of `GET /` and the `X-Demo-Version` header
//! - `FAIL_HEALTH=1`: `GET /health` answers 503
//! - `START_DELAY_MS=N`: sleep N ms before binding (slow start)
//! - `CRASH_AFTER_S=N`: exit(1) N seconds after process start
//! - `HANG_ON_TERM=1`: ignore SIGTERM (SIGINT still stops gracefully)
//! - `KEEPALIVE_TIMEOUT_S` (default 120): close idle keep-alive connections after this long
//!
//! Routes: `GET /`, `/health`, `/slow?ms=N`, `/env/<NAME>`, `/call?url=http://host:port/path`.
//! SIGTERM/SIGINT: stop accepting, finish in-flight requests, close idle connections, exit 0.
//!
//! `demo-app check [URL]` is a health-check probe for engines that need one inside the image
//! (Docker/Swarm `HEALTHCHECK` in exec form; the image has no shell): it GETs `URL` (default
//! `http://127.0.0.1:$PORT/health`) and exits 0 on a 2xx answer, 1 otherwise.

use std::process::exit;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

mod client;
mod http;
mod server;
mod signals;

/// Prints one line to stdout; never panics (stdout may be a closed pipe).
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {{
        if cfg!(test) {
            println!($($arg)*); // captured by the test harness
        } else {
            use std::io::Write as _;
            let _ = writeln!(std::io::stdout().lock(), $($arg)*);
        }
    }};
}

struct Config {
    port: u16,
    server: server::ServerConfig,
    start_delay: Option<Duration>,
    crash_after: Option<Duration>,
    hang_on_term: bool,
}

fn env_flag(name: &str) -> bool {
    matches!(
        std::env::var(name).as_deref().map(str::trim),
        Ok("1" | "true" | "yes" | "on")
    )
}

fn env_number(name: &str) -> Result<Option<u64>, String> {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{name} must be a non-negative integer, got {v:?}")),
        Err(_) => Err(format!("{name} is not valid UTF-8")),
    }
}

impl Config {
    fn from_env() -> Result<Config, String> {
        let port = match env_number("PORT")? {
            None => 8080,
            Some(p) => u16::try_from(p).map_err(|_| format!("PORT out of range: {p}"))?,
        };
        let version = std::env::var("VERSION")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "v1".into());
        let instance = std::env::var("HOSTNAME").unwrap_or_default();
        Ok(Config {
            port,
            server: server::ServerConfig {
                version,
                fail_health: env_flag("FAIL_HEALTH"),
                instance,
                keepalive_timeout: Duration::from_secs(
                    env_number("KEEPALIVE_TIMEOUT_S")?.unwrap_or(120).max(1),
                ),
            },
            start_delay: env_number("START_DELAY_MS")?
                .filter(|&n| n > 0)
                .map(Duration::from_millis),
            crash_after: env_number("CRASH_AFTER_S")?.map(Duration::from_secs),
            hang_on_term: env_flag("HANG_ON_TERM"),
        })
    }
}

/// What the signal thread should do: before the server is listening there is nothing to
/// drain, so a signal just exits.
#[derive(Default)]
struct Control {
    requested: bool,
    server: Option<server::ShutdownHandle>,
}

/// `demo-app check [URL]`: exit 0 when URL answers 2xx within 2 s.
fn check(url: Option<String>) -> ! {
    let url = url.unwrap_or_else(|| {
        let port = env_number("PORT").ok().flatten().unwrap_or(8080);
        format!("http://127.0.0.1:{port}/health")
    });
    let parsed = client::parse_http_url(&url).unwrap_or_else(|e| {
        eprintln!("demo-app check: {e}");
        exit(2)
    });
    match client::get(&parsed, Duration::from_secs(2)) {
        Ok(response) if (200..300).contains(&response.status) => exit(0),
        Ok(response) => {
            eprintln!("demo-app check: {url} answered {}", response.status);
            exit(1)
        }
        Err(error) => {
            eprintln!("demo-app check: {url}: {}", error.message());
            exit(1)
        }
    }
}

fn main() {
    // Other arguments are ignored (tests pass a command only to see it reach the container).
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("check") {
        check(args.next());
    }
    let cfg = Config::from_env().unwrap_or_else(|e| {
        eprintln!("demo-app: {e}");
        exit(2)
    });

    let (handled, ignored): (&[i32], &[i32]) = if cfg.hang_on_term {
        (&[signals::SIGINT], &[signals::SIGTERM])
    } else {
        (&[signals::SIGINT, signals::SIGTERM], &[])
    };
    let mut sigs = signals::install(handled, ignored).unwrap_or_else(|e| {
        eprintln!("demo-app: cannot install signal handlers: {e}");
        exit(1)
    });
    if cfg.hang_on_term {
        log!("demo-app: HANG_ON_TERM=1: ignoring SIGTERM");
    }

    let control = Arc::new(Mutex::new(Control::default()));
    {
        let control = control.clone();
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut count = 0;
                while let Ok(sig) = sigs.wait() {
                    count += 1;
                    if count > 1 {
                        log!(
                            "demo-app: received {} again: exiting immediately",
                            signals::name(sig)
                        );
                        exit(1);
                    }
                    let mut c = control.lock().unwrap_or_else(|e| e.into_inner());
                    c.requested = true;
                    match &c.server {
                        Some(handle) => {
                            log!(
                                "demo-app: received {}: shutting down gracefully",
                                signals::name(sig)
                            );
                            handle.shutdown();
                        }
                        None => {
                            log!(
                                "demo-app: received {} before listening: exiting",
                                signals::name(sig)
                            );
                            exit(0);
                        }
                    }
                }
            })
            .expect("spawn signal thread");
    }

    if let Some(after) = cfg.crash_after {
        log!(
            "demo-app: CRASH_AFTER_S={}: will exit(1) after {after:?}",
            after.as_secs()
        );
        thread::spawn(move || {
            thread::sleep(after);
            log!("demo-app: CRASH_AFTER_S reached: exiting with status 1");
            exit(1);
        });
    }

    if let Some(delay) = cfg.start_delay {
        log!("demo-app: START_DELAY_MS: waiting {delay:?} before listening");
        thread::sleep(delay);
    }

    let server =
        server::Server::bind(("0.0.0.0", cfg.port), cfg.server.clone()).unwrap_or_else(|e| {
            eprintln!("demo-app: cannot listen on 0.0.0.0:{}: {e}", cfg.port);
            exit(1)
        });
    let handle = server.shutdown_handle().unwrap_or_else(|e| {
        eprintln!("demo-app: {e}");
        exit(1)
    });
    {
        let mut c = control.lock().unwrap_or_else(|e| e.into_inner());
        if c.requested {
            log!("demo-app: shutdown requested during startup: exiting");
            exit(0);
        }
        c.server = Some(handle);
    }
    log!(
        "demo-app: listening on {} version={} pid={}",
        server
            .local_addr()
            .map_or_else(|_| format!("0.0.0.0:{}", cfg.port), |a| a.to_string()),
        cfg.server.version,
        std::process::id()
    );
    server.run();
    log!("demo-app: all connections closed: exiting");
    exit(0);
}

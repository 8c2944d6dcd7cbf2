//! The HAProxy backend against the real HAProxy (Debian's `haproxy`, 2.6+), started by each
//! test on a free loopback port in a temporary directory and stopped at its end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use paz_core::proxy::Proxy;
use paz_proxy::{Error, Haproxy, HaproxyConfig};
use tokio::sync::watch;

use crate::support::{Client, TestBackend, active, draining, get, table};

/// Whether HAProxy can be used; `CI=true` makes its absence a failure.
fn haproxy_available(test: &str) -> bool {
    if std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: HAProxy is not installed (apt-get install haproxy); CI=true needs it");
    }
    eprintln!("SKIPPED {test}: HAProxy is not installed (apt-get install haproxy)");
    false
}

/// A HAProxy of the test's own, stopped (gracefully) by [`TestHaproxy::stop`] or, if the test
/// fails first, by `SIGTERM` when the test's thread ends.
struct TestHaproxy {
    haproxy: Arc<Haproxy>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl TestHaproxy {
    async fn start() -> TestHaproxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = HaproxyConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().into());
        config.threads = 1;
        config.hard_stop_after = Duration::from_secs(5);
        let (stop, shutdown) = watch::channel(false);
        let (haproxy, task) = Haproxy::start(config, shutdown)
            .await
            .expect("HAProxy starts");
        TestHaproxy {
            haproxy,
            stop,
            task,
            _dir: dir,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("HAProxy stops at shutdown")
            .unwrap();
    }
}

/// `clients` keep-alive clients asking `host` for `/` until `stop` (at most 20,000 requests
/// each); returns (requests answered 2xx, failures as text).
fn load(
    address: std::net::SocketAddr,
    host: &'static str,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, Vec<String>)> {
    tokio::spawn(async move {
        let ok = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (stop, ok) = (stop.clone(), ok.clone());
            tasks.push(tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut client = Client::connect(address).await.unwrap();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && n < 20_000 {
                    let path = if c == 0 && n.is_multiple_of(10) {
                        "/slow?ms=30"
                    } else {
                        "/"
                    };
                    match client.get(host, path).await {
                        Ok(answer) if answer.status.is_success() => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            // As every HTTP client does: a connection the server closes
                            // after this answer is not used again.
                            if answer
                                .headers
                                .get("connection")
                                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
                            {
                                client = Client::connect(address).await.unwrap();
                            }
                        }
                        Ok(answer) => failures.push(format!("client {c} #{n}: {}", answer.status)),
                        Err(error) => {
                            failures.push(format!("client {c} #{n}: {error}"));
                            // A closed keep-alive connection: the next request opens another.
                            client = Client::connect(address).await.unwrap();
                        }
                    }
                    n += 1;
                }
                failures
            }));
        }
        let mut failures = Vec::new();
        for task in tasks {
            failures.extend(task.await.unwrap());
        }
        (ok.load(Ordering::Relaxed), failures)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_passes_the_proxy_contract() {
    if !haproxy_available("haproxy_passes_the_proxy_contract") {
        return;
    }
    let h = TestHaproxy::start().await;
    paz_core::contract::proxy::run(&*h.haproxy).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_routes_several_services_and_custom_domains() {
    if !haproxy_available("haproxy_routes_several_services_and_custom_domains") {
        return;
    }
    let h = TestHaproxy::start().await;
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let mut routes = table(&[
        ("web.example.com", "web", vec![active(&a)]),
        ("www.shop.example.org", "web", vec![active(&a)]),
        ("api.example.com", "api", vec![active(&b)]),
        ("empty.example.com", "empty", vec![]),
    ]);
    for route in routes.routes.values_mut() {
        route.health_path = Some("/health".into());
    }
    h.haproxy.apply(&routes).await.unwrap();
    let at = h.haproxy.address();
    for (host, status, body) in [
        ("web.example.com", 200, "a"),
        ("WWW.Shop.Example.org:8080", 200, "a"),
        ("api.example.com", 200, "b"),
        ("empty.example.com", 503, ""),
        ("nobody.example.com", 404, "no route for this host"),
    ] {
        let answer = get(at, host, "/").await.unwrap();
        assert_eq!(answer.status.as_u16(), status, "{host}: {}", answer.body);
        if !body.is_empty() {
            assert_eq!(answer.body.trim(), body, "{host}");
        }
    }
    assert_eq!(h.haproxy.routes().await.unwrap(), routes);
    let status = h.haproxy.status().await;
    assert!(status.running && status.worker_pid.is_some(), "{status:?}");
    assert!(status.version.starts_with('2') || status.version.starts_with('3'));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_api_change_is_live_within_100_ms_without_a_reload() {
    if !haproxy_available("a_runtime_api_change_is_live_within_100_ms_without_a_reload") {
        return;
    }
    let h = TestHaproxy::start().await;
    let (old, new) = (
        TestBackend::start("old").await,
        TestBackend::start("new").await,
    );
    h.haproxy
        .apply(&table(&[("web.localhost", "web", vec![active(&old)])]))
        .await
        .unwrap();
    let worker = h.haproxy.worker_pid().await.unwrap();
    let at = h.haproxy.address();
    let mut client = Client::connect(at).await.unwrap();
    assert_eq!(client.get("web.localhost", "/").await.unwrap().body, "old");

    // Add a backend and drain the old one in one change.
    let started = Instant::now();
    h.haproxy
        .apply(&table(&[(
            "web.localhost",
            "web",
            vec![draining(&old), active(&new)],
        )]))
        .await
        .unwrap();
    let mut first_new = None;
    while started.elapsed() < Duration::from_secs(2) {
        if client.get("web.localhost", "/").await.unwrap().body == "new" {
            first_new = Some(started.elapsed());
            break;
        }
    }
    let live = first_new.expect("the new backend serves");
    assert!(live < Duration::from_millis(100), "live after {live:?}");
    let hits = old.hits();
    for _ in 0..50 {
        assert_eq!(client.get("web.localhost", "/").await.unwrap().body, "new");
    }
    assert_eq!(old.hits(), hits, "a draining backend takes no new request");
    // A new host name for the service is a map change, also without a reload.
    let mut more = table(&[("web.localhost", "web", vec![active(&new)])]);
    more.routes.insert(
        "web2.localhost".into(),
        table(&[("x", "web", vec![active(&new)])]).routes["x"].clone(),
    );
    let started = Instant::now();
    h.haproxy.apply(&more).await.unwrap();
    assert_eq!(client.get("web2.localhost", "/").await.unwrap().body, "new");
    let mapped = started.elapsed();
    assert!(
        mapped < Duration::from_millis(100),
        "mapped after {mapped:?}"
    );
    assert_eq!(
        h.haproxy.worker_pid().await.unwrap(),
        worker,
        "no reload happened"
    );
    eprintln!("runtime API: backend live after {live:?}, host mapped after {mapped:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_deploys_through_haproxy_lose_no_request() {
    if !haproxy_available("rolling_deploys_through_haproxy_lose_no_request") {
        return;
    }
    let h = TestHaproxy::start().await;
    let mut current = vec![
        TestBackend::start("v0-a").await,
        TestBackend::start("v0-b").await,
    ];
    let routes = |backends: Vec<_>| table(&[("web.localhost", "web", backends)]);
    h.haproxy
        .apply(&routes(current.iter().map(active).collect()))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let loading = load(h.haproxy.address(), "web.localhost", 8, stop.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    for version in 1..=6 {
        let new = vec![
            TestBackend::start(&format!("v{version}-a")).await,
            TestBackend::start(&format!("v{version}-b")).await,
        ];
        h.haproxy
            .apply(&routes(new.iter().chain(&current).map(active).collect()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let both = current
            .iter()
            .map(draining)
            .chain(new.iter().map(active))
            .collect();
        h.haproxy.apply(&routes(both)).await.unwrap();
        for old in &current {
            let left = h
                .haproxy
                .wait_drained(&old.address(), Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(left, 0, "drained");
            old.stop();
        }
        h.haproxy
            .apply(&routes(new.iter().map(active).collect()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        current = new;
        assert!(Instant::now() < deadline, "the deploys took too long");
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failures) = loading.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(ok > 500, "too few requests: {ok}");
    eprintln!("rolling deploys through HAProxy: {ok} requests, 0 failed");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_structural_reloads_under_load_lose_no_request() {
    if !haproxy_available("twenty_structural_reloads_under_load_lose_no_request") {
        return;
    }
    let h = TestHaproxy::start().await;
    let web = TestBackend::start("web").await;
    let other = TestBackend::start("other").await;
    let mut rows = vec![("web.localhost".to_owned(), "web".to_owned())];
    let build = |rows: &[(String, String)]| {
        let mut t = table(&[("web.localhost", "web", vec![active(&web)])]);
        for (host, service) in &rows[1..] {
            let mut route = t.routes["web.localhost"].clone();
            route.service = service.clone();
            route.backends = table(&[("x", "x", vec![active(&other)])]).routes["x"]
                .backends
                .clone();
            t.routes.insert(host.clone(), route);
        }
        t
    };
    h.haproxy.apply(&build(&rows)).await.unwrap();
    let first_worker = h.haproxy.worker_pid().await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let loading = load(h.haproxy.address(), "web.localhost", 8, stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let mut workers = std::collections::BTreeSet::new();
    for i in 1..=20 {
        // Each new service is a new HAProxy backend: a reload.
        rows.push((format!("s{i}.localhost"), format!("s{i}")));
        h.haproxy.apply(&build(&rows)).await.unwrap();
        workers.insert(h.haproxy.worker_pid().await.unwrap());
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "reloads took too long"
        );
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failures) = loading.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert_eq!(workers.len(), 20, "every change reloaded");
    assert!(!workers.contains(&first_worker));
    assert_eq!(h.haproxy.status().await.reloads, 21);
    assert_eq!(
        get(h.haproxy.address(), "s20.localhost", "/")
            .await
            .unwrap()
            .body,
        "other"
    );
    eprintln!("20 reloads in {took:?} under load: {ok} requests, 0 failed");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_error_and_the_old_config_keeps_serving() {
    if !haproxy_available("bad_input_is_a_clear_error_and_the_old_config_keeps_serving") {
        return;
    }
    // No HAProxy at the path given.
    let dir = tempfile::tempdir().unwrap();
    let mut config = HaproxyConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().into());
    config.binary = "/nonexistent/haproxy".into();
    let (_stop, shutdown) = watch::channel(false);
    let error = Haproxy::start(config, shutdown).await.unwrap_err();
    assert!(matches!(error, Error::HaproxyMissing { .. }), "{error}");
    assert!(
        error.to_string().contains("apt-get install haproxy"),
        "{error}"
    );

    // A port another process holds.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = HaproxyConfig::new(taken.local_addr().unwrap(), dir.path().into());
    let (_stop, shutdown) = watch::channel(false);
    let error = Haproxy::start(config, shutdown)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("cannot bind") || error.contains("bind"),
        "{error}"
    );

    let h = TestHaproxy::start().await;
    let web = TestBackend::start("web").await;
    let good = table(&[("web.localhost", "web", vec![active(&web)])]);
    h.haproxy.apply(&good).await.unwrap();
    // A line HAProxy rejects: named with its line, and nothing changes.
    let error = h
        .haproxy
        .set_extra_defaults(vec![
            "timeout server 30s".into(),
            "no-such-keyword 1".into(),
        ])
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, Error::HaproxyRejected { .. }), "{text}");
    assert!(
        text.contains("check.cfg:") && text.contains("no-such-keyword"),
        "{text}"
    );
    assert_eq!(
        get(h.haproxy.address(), "web.localhost", "/")
            .await
            .unwrap()
            .body,
        "web"
    );
    // A table it cannot express is refused before anything is sent.
    let bad = table(&[("web .localhost", "web", vec![active(&web)])]);
    let error = h.haproxy.apply(&bad).await.unwrap_err().to_string();
    assert!(error.contains("web .localhost"), "{error}");
    assert_eq!(h.haproxy.routes().await.unwrap(), good);
    // Changes still apply afterwards, and good extra lines are taken.
    h.haproxy
        .set_extra_defaults(vec!["timeout server 30s".into()])
        .await
        .unwrap();
    let moved = table(&[("web2.localhost", "web", vec![active(&web)])]);
    h.haproxy.apply(&moved).await.unwrap();
    assert_eq!(
        get(h.haproxy.address(), "web2.localhost", "/")
            .await
            .unwrap()
            .body,
        "web"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_haproxy_is_started_again_with_the_last_config() {
    if !haproxy_available("a_crashed_haproxy_is_started_again_with_the_last_config") {
        return;
    }
    let h = TestHaproxy::start().await;
    let web = TestBackend::start("web").await;
    h.haproxy
        .apply(&table(&[("web.localhost", "web", vec![active(&web)])]))
        .await
        .unwrap();
    let master = h.haproxy.master_pid().expect("running");
    let status = std::process::Command::new("kill")
        .args(["-KILL", &master.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    loop {
        if let Ok(answer) = get(h.haproxy.address(), "web.localhost", "/").await
            && answer.body == "web"
            && h.haproxy.master_pid().is_some_and(|pid| pid != master)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not started again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = h.haproxy.status().await;
    assert_eq!(status.restarts, 1, "{status:?}");
    assert!(status.last_error.is_some_and(|e| e.contains("exited")));
    eprintln!(
        "HAProxy killed: serving again after {:?}",
        started.elapsed()
    );
    // And it still takes changes.
    h.haproxy
        .apply(&table(&[("new.localhost", "web", vec![active(&web)])]))
        .await
        .unwrap();
    assert_eq!(
        get(h.haproxy.address(), "new.localhost", "/")
            .await
            .unwrap()
            .body,
        "web"
    );
    h.stop().await;
}

//! The etcd store against real etcd members (Debian's `etcd-server`) started on free
//! loopback ports: the `Store` contract, watches across an etcd restart and a compaction,
//! a 3-member cluster losing one member and then its quorum.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use paz_core::store::{EventKind, Mirror, Store, WatchEvent};
use paz_etcd::EtcdStore;
use paz_etcd::testing::{EtcdCluster, etcd_available};

static NAMESPACES: AtomicU64 = AtomicU64::new(0);

async fn store(cluster: &EtcdCluster) -> EtcdStore {
    let n = NAMESPACES.fetch_add(1, Ordering::SeqCst);
    EtcdStore::connect(cluster.config(&format!("/t{n}")))
        .await
        .expect("connect to the test etcd")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_passes_the_store_contract() {
    if !etcd_available("etcd_passes_the_store_contract") {
        return;
    }
    let cluster = EtcdCluster::single().unwrap();
    paz_core::contract::store::run(|| store(&cluster)).await;
}

/// Reads events until `until` holds for what was seen, for at most `timeout`.
async fn collect(
    stream: &mut paz_core::store::WatchStream,
    timeout: Duration,
    until: impl Fn(&[WatchEvent]) -> bool,
) -> Vec<WatchEvent> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut events = Vec::new();
    while !until(&events) {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(event))) => events.push(event),
            Ok(Some(Err(e))) => panic!("the watch failed: {e}"),
            Ok(None) => panic!("the watch ended"),
            Err(_) => panic!(
                "timed out after {} events: {:?}",
                events.len(),
                events.iter().map(|e| &e.kv.key).collect::<Vec<_>>()
            ),
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_watch_resumes_after_an_etcd_restart_and_loses_no_event() {
    if !etcd_available("etcd_watch_resumes_after_an_etcd_restart_and_loses_no_event") {
        return;
    }
    let mut cluster = EtcdCluster::single().unwrap();
    let store = store(&cluster).await;
    let mut stream = store.watch("/w/", 0).await.unwrap();
    for i in 0..20 {
        store
            .put(&format!("/w/{i:02}"), b"before".to_vec())
            .await
            .unwrap();
    }
    let before = collect(&mut stream, Duration::from_secs(5), |e| e.len() == 20).await;
    cluster.restart(0).unwrap();
    cluster.wait_ready(Duration::from_secs(20)).unwrap();
    // Writes after the restart, while the watch is still reconnecting.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut written = 0;
    while written < 20 {
        match store
            .put(&format!("/w/{written:02}"), b"after".to_vec())
            .await
        {
            Ok(_) => written += 1,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "etcd is back but writes fail: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    store.delete("/w/00").await.unwrap();
    let after = collect(&mut stream, Duration::from_secs(15), |e| e.len() == 21).await;
    let revisions: Vec<u64> = before
        .iter()
        .chain(&after)
        .map(|e| e.kv.mod_revision)
        .collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "every event once, in order: {revisions:?}"
    );
    // The events replayed onto an empty map give exactly what a listing says.
    let mut replayed = BTreeMap::new();
    for event in before.iter().chain(&after) {
        match event.kind {
            EventKind::Put => {
                replayed.insert(event.kv.key.clone(), event.kv.value.clone());
            }
            EventKind::Delete => {
                replayed.remove(&event.kv.key);
            }
        }
    }
    let listed: BTreeMap<String, Vec<u8>> = store
        .list("/w/")
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    assert_eq!(replayed, listed, "the watch saw every change");
    assert_eq!(listed.len(), 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_a_compaction_past_a_watchers_revision_is_listed_again_with_no_change_lost() {
    if !etcd_available("etcd_a_compaction_past_a_watchers_revision") {
        return;
    }
    let cluster = EtcdCluster::single().unwrap();
    let store = Arc::new(store(&cluster).await);
    store.put("/c/keep", b"1".to_vec()).await.unwrap();
    store.put("/c/change", b"1".to_vec()).await.unwrap();
    store.put("/c/gone", b"1".to_vec()).await.unwrap();
    let mut mirror = Mirror::new(store.clone(), "/c/").await.unwrap();
    let behind = mirror.revision();
    // The mirror is behind (it has not watched yet) while these happen and are compacted.
    store.put("/c/change", b"2".to_vec()).await.unwrap();
    store.delete("/c/gone").await.unwrap();
    let last = store.put("/c/new", b"1".to_vec()).await.unwrap();
    store.compact(last).await.unwrap();
    // A plain watch from the old revision is told so.
    let mut stale = store.watch("/c/", behind + 1).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), stale.next()).await {
        Ok(Some(Err(paz_core::Error::Compacted { .. }))) => {}
        other => panic!("a compacted start revision must say Compacted: {other:?}"),
    }
    // The mirror lists again and reports the difference.
    let events = tokio::time::timeout(Duration::from_secs(5), mirror.changes())
        .await
        .expect("the mirror catches up")
        .unwrap();
    let mut seen: Vec<(EventKind, String)> =
        events.iter().map(|e| (e.kind, e.kv.key.clone())).collect();
    seen.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        seen,
        [
            (EventKind::Put, "/c/change".to_owned()),
            (EventKind::Delete, "/c/gone".to_owned()),
            (EventKind::Put, "/c/new".to_owned()),
        ]
    );
    assert_eq!(mirror.relists(), 1);
    // …and follows live changes after it.
    store.put("/c/later", b"1".to_vec()).await.unwrap();
    let live = tokio::time::timeout(Duration::from_secs(5), mirror.changes())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(live[0].kv.key, "/c/later");
    let listed: Vec<String> = store
        .list("/c/")
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(mirror.items().keys().cloned().collect::<Vec<_>>(), listed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_three_members_survive_one_loss_and_fail_fast_without_quorum() {
    if !etcd_available("etcd_three_members_survive_one_loss") {
        return;
    }
    let mut cluster = EtcdCluster::start(3).unwrap();
    let store = store(&cluster).await;
    let mut acknowledged = Vec::new();
    for i in 0..10 {
        store.put(&format!("/q/{i}"), b"v".to_vec()).await.unwrap();
        acknowledged.push(format!("/q/{i}"));
    }
    let mut watch = store.watch("/q/", 0).await.unwrap();
    // Every member reports the leader once its own status is current (a moment after start).
    let started = Instant::now();
    let health = loop {
        let health = store.health().await;
        if (health.healthy && health.leader.is_some() && health.members.iter().all(|m| m.healthy))
            || started.elapsed() > Duration::from_secs(5)
        {
            break health;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(health.healthy && health.leader.is_some(), "{health:?}");
    assert_eq!(health.members.iter().filter(|m| m.healthy).count(), 3);

    // One member lost: once the others have a leader, every read and write succeeds at the
    // first try (requests to the dead member move to another) and the watch goes on.
    cluster.kill(0);
    cluster.wait_ready(Duration::from_secs(10)).unwrap();
    for i in 10..20 {
        store
            .put(&format!("/q/{i}"), b"v".to_vec())
            .await
            .unwrap_or_else(|e| panic!("a write with 2 of 3 members failed: {e}"));
        store.get(&format!("/q/{i}")).await.unwrap().unwrap();
        acknowledged.push(format!("/q/{i}"));
    }
    let seen = collect(&mut watch, Duration::from_secs(10), |e| e.len() == 10).await;
    assert_eq!(seen.last().unwrap().kv.key, "/q/19");
    let health = store.health().await;
    assert!(health.healthy, "2 of 3 is a quorum: {health:?}");
    let down: Vec<&str> = health
        .members
        .iter()
        .filter(|m| !m.healthy)
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(down, ["m0"], "{health:?}");

    // Quorum lost: a write fails with a clear error within the request timeout.
    cluster.kill(1);
    let started = Instant::now();
    let error = store
        .put("/q/no-quorum", b"v".to_vec())
        .await
        .expect_err("a write without quorum cannot succeed");
    let took = started.elapsed();
    assert_eq!(error.code(), "STORE_UNAVAILABLE", "{error}");
    assert!(
        took < store.config().request_timeout + Duration::from_secs(1),
        "the failure came after {took:?} (request timeout {:?})",
        store.config().request_timeout
    );
    let error = store
        .get("/q/0")
        .await
        .expect_err("no linearizable read without quorum");
    assert_eq!(error.code(), "STORE_UNAVAILABLE", "{error}");
    let health = store.health().await;
    assert!(!health.healthy, "no quorum is unhealthy: {health:?}");

    // Recovery: nothing acknowledged is lost.
    cluster.restart(0).unwrap();
    cluster.restart(1).unwrap();
    cluster.wait_ready(Duration::from_secs(20)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let listed = loop {
        match store.list("/q/").await {
            Ok(listing) => break listing,
            Err(error) => {
                assert!(Instant::now() < deadline, "etcd did not recover: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let keys: Vec<String> = listed
        .items
        .iter()
        .map(|kv| kv.key.clone())
        .filter(|k| k != "/q/no-quorum")
        .collect();
    let mut expected = acknowledged.clone();
    expected.sort();
    assert_eq!(keys, expected, "every acknowledged write is there");
    // And the store works again.
    store.put("/q/after", b"v".to_vec()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_unreachable_at_connect_is_a_clear_error_within_the_timeout() {
    // No etcd needed: nothing listens on the port.
    let port = paz_etcd::testing::free_port();
    let mut config = paz_etcd::EtcdConfig::parse(&format!("etcd://127.0.0.1:{port}")).unwrap();
    config.connect_timeout = Duration::from_millis(500);
    config.request_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let error = EtcdStore::connect(config).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let message = error.to_string();
    assert!(
        message.contains("cannot reach etcd") && message.contains(&port.to_string()),
        "{message}"
    );
    let core: paz_core::Error = error.into();
    assert_eq!(core.code(), "STORE_UNAVAILABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_a_lost_lease_is_reported_and_its_keys_are_gone() {
    if !etcd_available("etcd_a_lost_lease_is_reported") {
        return;
    }
    let cluster = EtcdCluster::single().unwrap();
    let store = store(&cluster).await;
    let lease = store.grant_lease(Duration::from_secs(1)).await.unwrap();
    store
        .commit(paz_core::store::Txn::new().put_with_lease("/l/a", b"a".to_vec(), lease))
        .await
        .unwrap();
    // Kept alive past its TTL, it lives.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        store.keep_alive(lease).await.unwrap();
    }
    assert!(store.get("/l/a").await.unwrap().is_some());
    // Not kept alive, it ends, and the next keep-alive says so.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.get("/l/a").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(matches!(
        store.keep_alive(lease).await,
        Err(paz_core::Error::LeaseNotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_a_client_certificate() {
    if !etcd_available("etcd_over_tls_with_a_client_certificate") {
        return;
    }
    let cluster = EtcdCluster::single_tls().unwrap();
    let tls = cluster.tls().unwrap().clone();
    let config = cluster.config("/tls");
    assert!(config.endpoints[0].starts_with("https://"), "{config:?}");
    let store = EtcdStore::connect(config.clone())
        .await
        .expect("TLS with a client certificate");
    store.put("/tls/a", b"1".to_vec()).await.unwrap();
    assert_eq!(store.get("/tls/a").await.unwrap().unwrap().value, b"1");
    // Without the client certificate the members refuse: a clear error, within the timeout.
    let mut anonymous = config.clone();
    anonymous.tls = Some(paz_etcd::EtcdTls {
        cert: None,
        key: None,
        ..anonymous.tls.clone().unwrap()
    });
    let started = Instant::now();
    let error = EtcdStore::connect(anonymous).await.unwrap_err().to_string();
    assert!(error.contains("cannot reach etcd"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // Nor does a client that does not trust the members' CA.
    let mut untrusting = config;
    untrusting.tls = Some(paz_etcd::EtcdTls {
        ca: None,
        cert: Some(tls.client_cert),
        key: Some(tls.client_key),
        domain: Some("localhost".into()),
    });
    assert!(EtcdStore::connect(untrusting).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_auth_needs_the_user_and_password() {
    if !etcd_available("etcd_with_auth_needs_the_user_and_password") {
        return;
    }
    let cluster = EtcdCluster::single().unwrap();
    for args in [
        &["user", "add", "root", "--new-user-password", "rootpw"][..],
        &["user", "add", "paz", "--new-user-password", "pazpw"][..],
        &["role", "add", "paz"][..],
        &[
            "role",
            "grant-permission",
            "paz",
            "--prefix=true",
            "readwrite",
            "/auth/",
        ][..],
        &["user", "grant-role", "paz", "paz"][..],
        &["auth", "enable"][..],
    ] {
        let output = cluster.etcdctl(0, args);
        assert!(output.status.success(), "etcdctl {args:?}: {output:?}");
    }
    let mut config = cluster.config("/auth");
    config.user = Some(("paz".into(), "pazpw".into()));
    let store = EtcdStore::connect(config.clone())
        .await
        .expect("the user connects");
    store.put("/k", b"v".to_vec()).await.unwrap();
    assert_eq!(store.list("/").await.unwrap().items.len(), 1);
    // A key outside the user's permission is refused, clearly.
    let mut elsewhere = config.clone();
    elsewhere.namespace = "/other".into();
    elsewhere.user = Some(("paz".into(), "pazpw".into()));
    let other = EtcdStore::connect(elsewhere).await;
    assert!(other.is_err(), "the probe read outside /auth/ is refused");
    // No password, or a wrong one: refused at connect.
    config.user = Some(("paz".into(), "wrong".into()));
    let error = EtcdStore::connect(config).await.unwrap_err().to_string();
    assert!(
        error.contains("authentication failed") || error.contains("invalid"),
        "{error}"
    );
}

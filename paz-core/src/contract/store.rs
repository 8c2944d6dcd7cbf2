//! The `Store` contract.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use crate::error::Error;
use crate::store::{Condition, EventKind, Store, Txn, WatchEvent, WatchStream};

const WAIT: Duration = Duration::from_secs(5);

async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended early"),
        Err(_) => panic!("no watch event within {WAIT:?}"),
    }
}

/// Runs every check of the contract; `make` must return an empty store each time.
pub async fn run<S, F, Fut>(make: F)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    get_put_and_revisions(&make().await).await;
    list_is_ordered_and_scoped(&make().await).await;
    conditions_guard_writes(&make().await).await;
    transactions_are_atomic(&make().await).await;
    deletes(&make().await).await;
    watch_replays_history_then_follows(&make().await).await;
    watch_from_now(&make().await).await;
    leases(&make().await).await;
    concurrent_compare_and_swap_loses_nothing(Arc::new(make().await)).await;
}

async fn get_put_and_revisions(store: &impl Store) {
    assert_eq!(
        store.get("/c/a").await.unwrap(),
        None,
        "a missing key reads as None"
    );
    let r1 = store.put("/c/a", b"1".to_vec()).await.unwrap();
    let r2 = store.put("/c/a", b"2".to_vec()).await.unwrap();
    assert!(r2 > r1, "revisions grow: {r1} then {r2}");
    let kv = store.get("/c/a").await.unwrap().expect("the key exists");
    assert_eq!(kv.value, b"2");
    assert_eq!(
        kv.create_revision, r1,
        "create_revision stays at the first put"
    );
    assert_eq!(kv.mod_revision, r2, "mod_revision is the last put");
}

async fn list_is_ordered_and_scoped(store: &impl Store) {
    for key in ["/c/list/b", "/c/list/a", "/c/listx", "/c/list/c"] {
        store.put(key, key.as_bytes().to_vec()).await.unwrap();
    }
    let listing = store.list("/c/list/").await.unwrap();
    let keys: Vec<_> = listing.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        ["/c/list/a", "/c/list/b", "/c/list/c"],
        "list is ordered and scoped"
    );
    let last = listing
        .items
        .iter()
        .map(|kv| kv.mod_revision)
        .max()
        .unwrap();
    assert!(
        listing.revision >= last,
        "the listing revision covers its items"
    );
}

async fn conditions_guard_writes(store: &impl Store) {
    let r = store
        .commit(
            Txn::new()
                .when("/c/cas", Condition::Absent)
                .put("/c/cas", b"1".to_vec()),
        )
        .await
        .expect("create-if-absent succeeds on a missing key");
    let again = store
        .commit(
            Txn::new()
                .when("/c/cas", Condition::Absent)
                .put("/c/cas", b"x".to_vec()),
        )
        .await;
    assert!(
        matches!(again, Err(Error::Conflict { .. })),
        "create-if-absent fails on an existing key: {again:?}"
    );
    let stale = store
        .commit(
            Txn::new()
                .when("/c/cas", Condition::ModRevision(r + 1000))
                .put("/c/cas", b"x".to_vec()),
        )
        .await;
    assert!(
        matches!(stale, Err(Error::Conflict { .. })),
        "a stale revision fails: {stale:?}"
    );
    let missing = store
        .commit(
            Txn::new()
                .when("/c/none", Condition::Exists)
                .put("/c/cas", b"x".to_vec()),
        )
        .await;
    assert!(
        matches!(missing, Err(Error::Conflict { .. })),
        "Exists on a missing key fails"
    );
    assert_eq!(
        store.get("/c/cas").await.unwrap().unwrap().value,
        b"1",
        "failed commits write nothing"
    );
    store
        .commit(
            Txn::new()
                .when("/c/cas", Condition::ModRevision(r))
                .put("/c/cas", b"2".to_vec()),
        )
        .await
        .expect("compare-and-swap on the current revision succeeds");
    assert_eq!(store.get("/c/cas").await.unwrap().unwrap().value, b"2");
}

async fn transactions_are_atomic(store: &impl Store) {
    store.put("/c/txn/guard", b"g".to_vec()).await.unwrap();
    let failed = store
        .commit(
            Txn::new()
                .when("/c/txn/guard", Condition::Absent)
                .put("/c/txn/a", b"a".to_vec())
                .put("/c/txn/b", b"b".to_vec()),
        )
        .await;
    assert!(failed.is_err());
    assert_eq!(
        store.get("/c/txn/a").await.unwrap(),
        None,
        "a failed transaction writes no key"
    );
    let rev = store
        .commit(
            Txn::new()
                .put("/c/txn/a", b"a".to_vec())
                .put("/c/txn/b", b"b".to_vec())
                .delete("/c/txn/guard"),
        )
        .await
        .unwrap();
    let a = store.get("/c/txn/a").await.unwrap().unwrap();
    let b = store.get("/c/txn/b").await.unwrap().unwrap();
    assert_eq!(
        (a.mod_revision, b.mod_revision),
        (rev, rev),
        "one transaction, one revision"
    );
    assert_eq!(store.get("/c/txn/guard").await.unwrap(), None);
}

async fn deletes(store: &impl Store) {
    for key in ["/c/del/a", "/c/del/b", "/c/keep"] {
        store.put(key, b"v".to_vec()).await.unwrap();
    }
    store.delete("/c/del/a").await.unwrap();
    assert_eq!(store.get("/c/del/a").await.unwrap(), None);
    store
        .delete("/c/del/never")
        .await
        .expect("deleting a missing key is not an error");
    store
        .commit(Txn::new().delete_prefix("/c/del/"))
        .await
        .unwrap();
    assert!(
        store.list("/c/del/").await.unwrap().items.is_empty(),
        "delete_prefix removes the prefix"
    );
    assert!(
        store.get("/c/keep").await.unwrap().is_some(),
        "delete_prefix keeps other keys"
    );
}

async fn watch_replays_history_then_follows(store: &impl Store) {
    let r1 = store.put("/c/w/a", b"1".to_vec()).await.unwrap();
    store.put("/c/other", b"x".to_vec()).await.unwrap();
    let r2 = store.delete("/c/w/a").await.unwrap();
    let mut stream = store.watch("/c/w/", r1).await.unwrap();
    let first = next_event(&mut stream).await;
    assert_eq!(
        (first.kind, first.kv.key.as_str(), first.kv.mod_revision),
        (EventKind::Put, "/c/w/a", r1)
    );
    let second = next_event(&mut stream).await;
    assert_eq!(
        (second.kind, second.kv.mod_revision),
        (EventKind::Delete, r2),
        "deletes are events"
    );
    let r3 = store.put("/c/w/b", b"live".to_vec()).await.unwrap();
    let live = next_event(&mut stream).await;
    assert_eq!(
        (
            live.kv.key.as_str(),
            live.kv.value.as_slice(),
            live.kv.mod_revision
        ),
        ("/c/w/b", &b"live"[..], r3)
    );
}

async fn watch_from_now(store: &impl Store) {
    store.put("/c/now/old", b"1".to_vec()).await.unwrap();
    let mut stream = store.watch("/c/now/", 0).await.unwrap();
    store.put("/c/now/new", b"2".to_vec()).await.unwrap();
    let event = next_event(&mut stream).await;
    assert_eq!(
        event.kv.key, "/c/now/new",
        "a watch from now skips the past"
    );
}

async fn leases(store: &impl Store) {
    let lease = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    store
        .commit(Txn::new().put_with_lease("/c/lease/a", b"a".to_vec(), lease))
        .await
        .unwrap();
    assert_eq!(
        store.get("/c/lease/a").await.unwrap().unwrap().lease,
        Some(lease)
    );
    store
        .keep_alive(lease)
        .await
        .expect("keep-alive of a live lease");
    let mut stream = store.watch("/c/lease/", 0).await.unwrap();
    store.revoke_lease(lease).await.unwrap();
    assert_eq!(
        store.get("/c/lease/a").await.unwrap(),
        None,
        "revoking deletes the lease's keys"
    );
    let event = next_event(&mut stream).await;
    assert_eq!(
        (event.kind, event.kv.key.as_str()),
        (EventKind::Delete, "/c/lease/a")
    );
    assert!(matches!(
        store.keep_alive(lease).await,
        Err(Error::LeaseNotFound(_))
    ));
    let unknown = store
        .commit(Txn::new().put_with_lease("/c/lease/x", b"x".to_vec(), lease))
        .await;
    assert!(
        matches!(unknown, Err(Error::LeaseNotFound(_))),
        "a put on an ended lease fails: {unknown:?}"
    );

    let short = store.grant_lease(Duration::from_millis(300)).await.unwrap();
    store
        .commit(Txn::new().put_with_lease("/c/lease/b", b"b".to_vec(), short))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while store.get("/c/lease/b").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "an expired lease's key is deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(
        store.keep_alive(short).await,
        Err(Error::LeaseNotFound(_))
    ));
}

async fn concurrent_compare_and_swap_loses_nothing<S: Store>(store: Arc<S>) {
    const TASKS: usize = 8;
    const EACH: usize = 25;
    store.put("/c/counter", b"0".to_vec()).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for _ in 0..EACH {
                loop {
                    let kv = store.get("/c/counter").await.unwrap().unwrap();
                    let n: usize = String::from_utf8(kv.value).unwrap().parse().unwrap();
                    let txn = Txn::new()
                        .when("/c/counter", Condition::ModRevision(kv.mod_revision))
                        .put("/c/counter", (n + 1).to_string().into_bytes());
                    match store.commit(txn).await {
                        Ok(_) => break,
                        Err(Error::Conflict { .. }) => continue,
                        Err(e) => panic!("commit failed: {e}"),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let kv = store.get("/c/counter").await.unwrap().unwrap();
    assert_eq!(
        kv.value,
        (TASKS * EACH).to_string().into_bytes(),
        "no increment is lost"
    );
}

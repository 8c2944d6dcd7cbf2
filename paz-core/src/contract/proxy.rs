//! The `Proxy` contract.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::proxy::Proxy;
use crate::route::{Backend, BackendState, Route, RouteTable};

/// `(host, service, backends)` rows of a table.
type Rows<'a> = [(&'a str, &'a str, &'a [(&'a str, BackendState)])];

fn table(entries: &Rows<'_>) -> RouteTable {
    let mut routes = BTreeMap::new();
    for (host, service, backends) in entries {
        let backends = backends
            .iter()
            .map(|(address, state)| {
                (
                    (*address).to_owned(),
                    Backend {
                        weight: 100,
                        state: *state,
                    },
                )
            })
            .collect();
        routes.insert(
            (*host).to_owned(),
            Route {
                service: (*service).to_owned(),
                backends,
                https_redirect: true,
                health_path: None,
            },
        );
    }
    RouteTable { routes }
}

/// Runs every check. Backend addresses are on 127.0.0.1 ports nothing listens on.
pub async fn run(proxy: &impl Proxy) {
    use BackendState::*;
    let first = table(&[
        (
            "a.localhost",
            "a",
            &[("127.0.0.1:1", Active), ("127.0.0.1:2", Active)],
        ),
        ("b.localhost", "b", &[("127.0.0.1:3", Active)]),
    ]);
    proxy.apply(&first).await.expect("apply");
    assert_eq!(
        proxy.routes().await.expect("routes"),
        first,
        "the applied table is in effect"
    );

    let second = table(&[
        (
            "a.localhost",
            "a",
            &[("127.0.0.1:1", Draining), ("127.0.0.1:4", Active)],
        ),
        ("c.localhost", "c", &[]),
    ]);
    proxy.apply(&second).await.expect("apply a change");
    assert_eq!(
        proxy.routes().await.expect("routes"),
        second,
        "changes replace the old table"
    );

    proxy
        .apply(&second)
        .await
        .expect("applying the same table again is fine");
    assert_eq!(
        proxy.in_flight("127.0.0.1:9").await.expect("in_flight"),
        0,
        "an unknown backend has nothing in flight"
    );
    let started = Instant::now();
    let left = proxy
        .wait_drained("127.0.0.1:1", Duration::from_secs(5))
        .await
        .expect("wait_drained");
    assert_eq!(left, 0, "an idle backend is drained");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "an idle backend drains at once"
    );

    proxy
        .apply(&RouteTable::default())
        .await
        .expect("apply an empty table");
    assert!(proxy.routes().await.expect("routes").routes.is_empty());
}

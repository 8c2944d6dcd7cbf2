//! Logs and events against the real engine.

use std::time::Duration;

use futures_util::StreamExt;
use paz_core::scheduler::{LogLine, LogOptions, LogStreamKind, Scheduler, SchedulerEvent};

use crate::support::{TestEnv, eventually, http_get, wait_http};

/// Reads a finite log stream to its end.
async fn collect(stream: paz_core::scheduler::LogStream) -> Vec<LogLine> {
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.map(|l| l.unwrap()).collect(),
    )
    .await
    .expect("a non-follow log stream ends")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_come_as_lines_per_stream() {
    let Some(env) = TestEnv::new("logs").await else {
        return;
    };
    let web = env.service("web");
    let instance = env
        .scheduler
        .start(&env.spec(&web, 0, &[("VERSION", "v5")]))
        .await
        .unwrap();
    let address = instance.address.clone().unwrap();
    wait_http(&address, "/");
    for _ in 0..3 {
        http_get(&address, "/health", Duration::from_secs(5)).unwrap();
    }
    let lines = eventually(Duration::from_secs(10), "the access log lines", || async {
        let stream = env
            .scheduler
            .logs(&instance.id, LogOptions::default())
            .await
            .unwrap();
        let lines = collect(stream).await;
        let health = lines
            .iter()
            .filter(|l| l.line.starts_with("GET /health 200"))
            .count();
        (health >= 3).then_some(lines)
    })
    .await;
    assert!(lines.iter().all(|l| l.instance == instance.id));
    assert!(lines.iter().all(|l| l.stream == LogStreamKind::Stdout));
    assert!(
        lines
            .iter()
            .any(|l| l.line.starts_with("demo-app: listening on ") && l.line.contains("version=v5")),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| !l.line.contains('\n')));

    let tail = env
        .scheduler
        .logs(
            &instance.id,
            LogOptions {
                follow: false,
                tail: Some(2),
            },
        )
        .await
        .unwrap();
    let tail = collect(tail).await;
    assert_eq!(tail.len(), 2, "{tail:?}");
    assert_eq!(&tail[..], &lines[lines.len() - 2..]);

    // Follow: new lines arrive, and the stream ends when the container stops.
    let mut follow = env
        .scheduler
        .logs(
            &instance.id,
            LogOptions {
                follow: true,
                tail: Some(0),
            },
        )
        .await
        .unwrap();
    let request = {
        let address = address.clone();
        tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(300));
            http_get(&address, "/env/VERSION", Duration::from_secs(5))
        })
    };
    let line = tokio::time::timeout(Duration::from_secs(10), follow.next())
        .await
        .expect("a followed line arrives")
        .expect("the stream is open")
        .unwrap();
    assert!(line.line.starts_with("GET /env/VERSION 200"), "{line:?}");
    request.await.unwrap().unwrap();
    env.scheduler
        .stop(&instance.id, Duration::from_secs(10))
        .await
        .unwrap();
    let rest: Vec<_> = tokio::time::timeout(Duration::from_secs(10), follow.collect::<Vec<_>>())
        .await
        .expect("a follow stream ends when the container stops");
    assert!(
        rest.iter().any(|l| l
            .as_ref()
            .is_ok_and(|l| l.line.contains("shutting down gracefully"))),
        "{rest:?}"
    );

    // Unknown instances have no logs.
    let missing = env
        .scheduler
        .logs("paz-no-such-container", LogOptions::default())
        .await;
    assert!(matches!(
        missing,
        Err(paz_core::Error::NotFound {
            kind: "instance",
            ..
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_lines_and_service_logs() {
    let Some(env) = TestEnv::new("svclogs").await else {
        return;
    };
    let web = env.service("web");
    let broken = env
        .scheduler
        .start(&env.spec(&web, 0, &[("PORT", "99999")]))
        .await
        .unwrap();
    let healthy = env.scheduler.start(&env.spec(&web, 1, &[])).await.unwrap();
    wait_http(healthy.address.as_deref().unwrap(), "/");

    let lines = eventually(Duration::from_secs(10), "both instances' lines", || async {
        let stream = env
            .scheduler
            .logs_of_service(&web, LogOptions::default())
            .await
            .unwrap();
        let lines = collect(stream).await;
        let from = |id: &str| lines.iter().any(|l| l.instance == id);
        (from(&broken.id) && from(&healthy.id)).then_some(lines)
    })
    .await;
    let stderr: Vec<_> = lines.iter().filter(|l| l.instance == broken.id).collect();
    assert!(
        stderr
            .iter()
            .any(|l| l.stream == LogStreamKind::Stderr && l.line.contains("PORT out of range")),
        "{stderr:?}"
    );
    // Without follow, instances come one after the other (slot 0 first).
    let first_healthy = lines.iter().position(|l| l.instance == healthy.id).unwrap();
    assert!(
        lines[..first_healthy]
            .iter()
            .all(|l| l.instance == broken.id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_report_start_die_and_remove() {
    let Some(env) = TestEnv::new("events").await else {
        return;
    };
    let web = env.service("web");
    let mut events = env.scheduler.events().await.unwrap();
    let instance = env
        .scheduler
        .start(&env.spec(&web, 0, &[("CRASH_AFTER_S", "1")]))
        .await
        .unwrap();

    // Other tests run at the same time: keep only this instance's events.
    let ours = |event: &SchedulerEvent| match event {
        SchedulerEvent::Started { id, .. }
        | SchedulerEvent::Exited { id, .. }
        | SchedulerEvent::Removed { id, .. } => *id == instance.id,
        SchedulerEvent::Resync => panic!("no gap expected"),
    };
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), async {
        while !seen
            .iter()
            .any(|e| matches!(e, SchedulerEvent::Exited { .. }))
        {
            let event = events.next().await.expect("the stream goes on").unwrap();
            if ours(&event) {
                seen.push(event);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("start and die not both seen: {seen:?}"));
    assert_eq!(
        seen,
        vec![
            SchedulerEvent::Started {
                id: instance.id.clone(),
                service: web.clone()
            },
            SchedulerEvent::Exited {
                id: instance.id.clone(),
                service: web.clone(),
                exit_code: Some(1)
            },
        ]
    );
    let crashed = env.scheduler.inspect(&instance.id).await.unwrap().unwrap();
    assert_eq!(crashed.message.as_deref(), Some("exited with code 1"));

    env.scheduler.remove(&instance.id).await.unwrap();
    let removed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let SchedulerEvent::Removed { id, .. } = events.next().await.unwrap().unwrap()
                && id == instance.id
            {
                return;
            }
        }
    })
    .await;
    assert!(removed.is_ok(), "the removal is reported");
}

//! The `Scheduler` contract every backend passes, and connection errors.

use paz_core::contract::scheduler::{Fixture, run};
use paz_docker::{DockerConfig, DockerScheduler, Error};

use crate::support::{IMAGE, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_scheduler_contract() {
    let Some(env) = TestEnv::new("contract").await else {
        return;
    };
    let _one_at_a_time = crate::support::CONTRACT.lock().await;
    // The contract uses fixed service names: clear leftovers of an interrupted run first.
    env.guard.service("contract-a");
    env.guard.service("contract-b");
    env.guard.service("contract-pin");
    env.guard.remove_containers();
    let fixture = Fixture {
        image: IMAGE.to_owned(),
        port: 8080,
    };
    run(&env.scheduler, &fixture).await;
}

#[tokio::test]
async fn an_unreachable_daemon_is_a_clear_error() {
    for host in ["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:1"] {
        let config = DockerConfig {
            host: Some(host.to_owned()),
            ..DockerConfig::default()
        };
        let error = DockerScheduler::connect(config)
            .await
            .expect_err("no daemon there");
        assert!(
            matches!(error, Error::DaemonUnavailable { .. }),
            "{host}: {error:?}"
        );
        let text = error.to_string();
        eprintln!("unreachable daemon reported as: {text}");
        assert!(
            text.starts_with(&format!("Docker daemon is not reachable at {host}")),
            "{text}"
        );
        let core: paz_core::Error = error.into();
        assert!(core.to_string().contains("not reachable"), "{core}");
    }
}

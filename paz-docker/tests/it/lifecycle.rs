//! Start, stop, remove, list and inspect against the real engine.

use std::time::{Duration, Instant};

use paz_core::model::{HostStatus, InstanceState};
use paz_core::scheduler::Scheduler;
use paz_core::service::{Resources, VolumeSpec};
use paz_docker::DockerConfig;

use crate::support::{IMAGE, TestEnv, docker, eventually, http_get, wait_http};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_instances_are_labelled_and_answer_on_their_address() {
    let Some(env) = TestEnv::new("start").await else {
        return;
    };
    let web = env.service("web");
    let mut spec = env.spec(&web, 2, &[("VERSION", "v7")]);
    spec.release = 4;
    let instance = env.scheduler.start(&spec).await.expect("start");
    assert_eq!(instance.state, InstanceState::Starting);
    assert_eq!((instance.release, instance.slot), (4, 2));

    // Visible with plain `docker ps` label filters, named after service/release/slot.
    let filter = format!("label=paz.service={web}");
    let listed = docker(&[
        "ps",
        "--no-trunc",
        "--filter",
        "label=paz.managed=true",
        "--filter",
        &filter,
        "--format",
        r#"{{.ID}} {{.Names}} {{.Label "paz.release"}} {{.Label "paz.instance"}}"#,
    ])
    .unwrap();
    let fields: Vec<&str> = listed.split_whitespace().collect();
    assert_eq!(fields.len(), 4, "one container: {listed:?}");
    assert_eq!(fields[0], instance.id);
    let prefix = format!("paz-{web}-v4-2-");
    assert!(
        fields[1].starts_with(&prefix) && fields[1].len() == prefix.len() + 6,
        "{}",
        fields[1]
    );
    assert_eq!((fields[2], fields[3]), ("4", "2"));

    // The address is the container's IP on the Paz network plus the routed port.
    let address = instance.address.clone().expect("an address");
    let ip = docker(&[
        "inspect",
        "--format",
        &format!(
            r#"{{{{(index .NetworkSettings.Networks "{}").IPAddress}}}}"#,
            env.network
        ),
        &instance.id,
    ])
    .unwrap();
    assert_eq!(address, format!("{ip}:8080"));
    let response = wait_http(&address, "/");
    assert_eq!((response.status, response.body.as_str()), (200, "v7\n"));
    assert_eq!(
        instance.host,
        docker(&["info", "--format", "{{.Name}}"]).unwrap()
    );

    // The network: labelled, and its gateway is the one reported.
    assert_eq!(env.scheduler.network_name(), env.network);
    let (label, gateway) = docker(&[
        "network",
        "inspect",
        "--format",
        r#"{{index .Labels "paz.managed"}} {{(index .IPAM.Config 0).Gateway}}"#,
        &env.network,
    ])
    .unwrap()
    .split_once(' ')
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .unwrap();
    assert_eq!(label, "true");
    assert_eq!(
        env.scheduler.network_gateway().map(|ip| ip.to_string()),
        Some(gateway)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_command_resources_volumes_and_dns_are_applied() {
    let config = DockerConfig {
        dns: vec!["192.0.2.53".to_owned()],
        extra_labels: [("team".to_owned(), "core".to_owned())].into(),
        ..DockerConfig::default()
    };
    let Some(env) = TestEnv::with_config("spec", config).await else {
        return;
    };
    let web = env.service("web");
    let volume = format!("paz-test-data-{}", env.suffix);
    env.guard.volume(&volume);
    let mut spec = env.spec(&web, 0, &[("GREETING", "hello world"), ("EMPTY", "")]);
    // demo-app ignores its arguments: the command only has to reach the container.
    spec.command = vec!["--flag".to_owned(), "value".to_owned()];
    spec.resources = Resources {
        memory_mb: Some(64),
        cpus: Some(0.5),
    };
    spec.volumes = vec![
        VolumeSpec {
            source: volume.clone(),
            target: "/data".to_owned(),
            read_only: false,
        },
        VolumeSpec {
            source: "/etc".to_owned(),
            target: "/host-etc".to_owned(),
            read_only: true,
        },
    ];
    let instance = env.scheduler.start(&spec).await.expect("start");
    let address = instance.address.clone().expect("an address");
    let response = wait_http(&address, "/env/GREETING");
    assert_eq!(
        (response.status, response.body.as_str()),
        (200, "hello world")
    );

    let inspected = docker(&[
        "inspect",
        "--format",
        concat!(
            "{{json .Config.Cmd}}|{{.HostConfig.Memory}}|{{.HostConfig.NanoCpus}}|",
            "{{json .HostConfig.Dns}}|{{.HostConfig.RestartPolicy.Name}}|{{.Config.StopSignal}}|",
            "{{json .HostConfig.PortBindings}}|{{index .Config.Labels \"team\"}}|",
            "{{range .Mounts}}{{.Type}}:{{.Destination}}:{{.RW}};{{end}}"
        ),
        &instance.id,
    ])
    .unwrap();
    let parts: Vec<&str> = inspected.split('|').collect();
    assert_eq!(parts[0], r#"["--flag","value"]"#);
    assert_eq!(parts[1], (64 * 1024 * 1024).to_string());
    assert_eq!(parts[2], "500000000");
    assert_eq!(parts[3], r#"["192.0.2.53"]"#);
    assert_eq!(parts[4], "no");
    assert_eq!(parts[5], "SIGTERM");
    assert!(
        matches!(parts[6], "null" | "{}"),
        "no published ports: {}",
        parts[6]
    );
    assert_eq!(parts[7], "core");
    let mut mounts: Vec<&str> = parts[8].split(';').filter(|m| !m.is_empty()).collect();
    mounts.sort_unstable();
    assert_eq!(mounts, ["bind:/host-etc:false", "volume:/data:true"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_is_a_clear_error() {
    let Some(env) = TestEnv::new("image").await else {
        return;
    };
    let web = env.service("web");
    let image = format!("paz-no-such-image-{}:v9", env.suffix);
    assert!(!env.scheduler.image_exists(&image).await.unwrap());
    assert!(env.scheduler.image_exists(IMAGE).await.unwrap());

    let mut spec = env.spec(&web, 0, &[]);
    spec.image = image.clone();
    let error = env
        .scheduler
        .start(&spec)
        .await
        .expect_err("the image cannot be found");
    let text = error.to_string();
    eprintln!("missing image reported as: {text}");
    assert!(
        text.contains(&format!(
            "image {image:?} is not available locally and cannot be pulled: "
        )),
        "{text}"
    );
    assert_eq!(error.code(), "IMAGE_UNAVAILABLE");
    assert!(env.scheduler.list(Some(&web)).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_exiting_at_once_is_failed_with_its_exit_code() {
    let Some(env) = TestEnv::new("exit").await else {
        return;
    };
    let web = env.service("web");
    // An invalid PORT makes demo-app print to stderr and exit with status 2.
    let spec = env.spec(&web, 0, &[("PORT", "99999")]);
    let instance = env.scheduler.start(&spec).await.expect("start");
    assert!(
        matches!(
            instance.state,
            InstanceState::Starting | InstanceState::Failed
        ),
        "{instance:?}"
    );
    let failed = eventually(Duration::from_secs(10), "the instance to fail", || async {
        env.scheduler
            .inspect(&instance.id)
            .await
            .unwrap()
            .filter(|i| i.state == InstanceState::Failed)
    })
    .await;
    assert_eq!(failed.message.as_deref(), Some("exited with code 2"));
    assert_eq!(failed.address, None, "an exited container has no address");
    let listed = env.scheduler.list(Some(&web)).await.unwrap();
    assert_eq!(listed, vec![failed]);

    // Stopping an instance that failed on its own does not turn it into "stopped".
    env.scheduler
        .stop(&instance.id, Duration::from_secs(1))
        .await
        .unwrap();
    let still = env.scheduler.inspect(&instance.id).await.unwrap().unwrap();
    assert_eq!(still.state, InstanceState::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_lets_an_in_flight_request_finish() {
    let Some(env) = TestEnv::new("grace").await else {
        return;
    };
    let web = env.service("web");
    let instance = env
        .scheduler
        .start(&env.spec(&web, 0, &[]))
        .await
        .expect("start");
    let address = instance.address.clone().expect("an address");
    wait_http(&address, "/health");

    let slow = {
        let address = address.clone();
        std::thread::spawn(move || http_get(&address, "/slow?ms=2000", Duration::from_secs(20)))
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = Instant::now();
    env.scheduler
        .stop(&instance.id, Duration::from_secs(20))
        .await
        .expect("stop");
    let took = started.elapsed();
    let response = slow
        .join()
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(
        (response.status, response.body.as_str()),
        (200, "slept 2000ms\n")
    );
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_secs(15),
        "stop waits for the drain, not the whole grace: {took:?}"
    );

    let stopped = env.scheduler.inspect(&instance.id).await.unwrap().unwrap();
    assert_eq!(stopped.state, InstanceState::Stopped);
    assert_eq!(
        stopped.message.as_deref(),
        Some("stopped by Paz (exit code 0)")
    );
    let name = docker(&["inspect", "--format", "{{.Name}}", &instance.id]).unwrap();
    assert!(name.ends_with(".stopped"), "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_after_the_grace_period() {
    let Some(env) = TestEnv::new("kill").await else {
        return;
    };
    let web = env.service("web");
    let instance = env
        .scheduler
        .start(&env.spec(&web, 0, &[("HANG_ON_TERM", "1")]))
        .await
        .expect("start");
    wait_http(instance.address.as_deref().unwrap(), "/health");
    let started = Instant::now();
    env.scheduler
        .stop(&instance.id, Duration::from_secs(1))
        .await
        .expect("stop");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "{took:?}"
    );
    let stopped = env.scheduler.inspect(&instance.id).await.unwrap().unwrap();
    assert_eq!(stopped.state, InstanceState::Stopped);
    assert!(
        stopped
            .message
            .as_deref()
            .unwrap()
            .contains("exit code 137"),
        "{stopped:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_by_service_and_ignores_foreign_containers() {
    let Some(env) = TestEnv::new("list").await else {
        return;
    };
    let web = env.service("web");
    let worker = env.service("worker");
    let w1 = env.scheduler.start(&env.spec(&web, 1, &[])).await.unwrap();
    let w0 = env.scheduler.start(&env.spec(&web, 0, &[])).await.unwrap();
    let k0 = env
        .scheduler
        .start(&env.spec(&worker, 0, &[]))
        .await
        .unwrap();
    // A container that looks like Paz's but is not managed by it.
    let foreign = docker(&["create", "--label", &format!("paz.service={web}"), IMAGE]).unwrap();

    let listed = env.scheduler.list(Some(&web)).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, [w0.id.as_str(), w1.id.as_str()], "ordered by slot");
    let listed = env.scheduler.list(Some(&worker)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, k0.id);
    let all = env.scheduler.list(None).await.unwrap();
    for id in [&w0.id, &w1.id, &k0.id] {
        assert!(all.iter().any(|i| &i.id == id));
    }
    assert!(!all.iter().any(|i| i.id == foreign));

    // Foreign containers are invisible and left alone.
    assert_eq!(env.scheduler.inspect(&foreign).await.unwrap(), None);
    env.scheduler
        .remove(&foreign)
        .await
        .expect("unknown ids are fine");
    assert!(docker(&["inspect", &foreign]).is_ok(), "not removed");

    env.scheduler.remove(&w0.id).await.unwrap();
    let listed = env.scheduler.list(Some(&web)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, w1.id);
}

/// Defect: containers were recognised by `paz.managed=true` alone, so a server of another
/// store removed them. A scheduler of another cluster now neither sees nor touches them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clusters_containers_are_invisible_and_left_alone() {
    let Some(env) = TestEnv::new("clusters").await else {
        return;
    };
    let web = env.service("web");
    let mine = env.scheduler.start(&env.spec(&web, 0, &[])).await.unwrap();
    let other = paz_docker::DockerScheduler::connect(DockerConfig {
        network: env.network.clone(),
        cluster: "another-cluster".into(),
        ..DockerConfig::default()
    })
    .await
    .unwrap();
    assert!(
        other
            .list(None)
            .await
            .unwrap()
            .iter()
            .all(|i| i.id != mine.id)
    );
    assert!(other.list(Some(&web)).await.unwrap().is_empty());
    assert_eq!(other.inspect(&mine.id).await.unwrap(), None);
    other.stop(&mine.id, Duration::from_secs(1)).await.unwrap();
    other.remove(&mine.id).await.unwrap();
    let still = env.scheduler.inspect(&mine.id).await.unwrap();
    assert!(
        still.is_some_and(|i| i.state != InstanceState::Stopped),
        "another cluster's scheduler left it running"
    );
    let label = docker(&[
        "inspect",
        "--format",
        r#"{{index .Config.Labels "paz.cluster"}}"#,
        &mine.id,
    ])
    .unwrap();
    assert_eq!(label.trim(), "default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_report_the_daemon_and_placement_uses_its_labels() {
    let Some(env) = TestEnv::new("hosts").await else {
        return;
    };
    let hosts = env.scheduler.hosts().await.unwrap();
    assert_eq!(hosts.len(), 1);
    let host = &hosts[0];
    assert_eq!(host.status, HostStatus::Ready);
    assert_eq!(
        host.name,
        docker(&["info", "--format", "{{.Name}}"]).unwrap()
    );
    assert_eq!(
        host.labels.get("docker.version").map(String::as_str),
        Some(
            docker(&["version", "--format", "{{.Server.Version}}"])
                .unwrap()
                .as_str()
        )
    );

    let web = env.service("web");
    let mut spec = env.spec(&web, 0, &[]);
    spec.constraints = vec!["zone==nowhere".to_owned()];
    let error = env.scheduler.start(&spec).await.expect_err("unschedulable");
    assert!(
        error.to_string().contains("placement constraint"),
        "{error}"
    );
    spec.constraints = vec!["zone!=nowhere".to_owned()];
    env.scheduler.start(&spec).await.expect("schedulable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_twice_reuses_the_network() {
    let Some(env) = TestEnv::new("net").await else {
        return;
    };
    let config = DockerConfig {
        network: env.network.clone(),
        ..DockerConfig::default()
    };
    let (a, b) = tokio::join!(
        paz_docker::DockerScheduler::connect(config.clone()),
        paz_docker::DockerScheduler::connect(config)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.network_gateway(), env.scheduler.network_gateway());
    assert_eq!(b.network_gateway(), env.scheduler.network_gateway());
    let names = docker(&[
        "network",
        "ls",
        "--filter",
        &format!("name=^{}$", env.network),
        "--format",
        "{{.Name}}",
    ])
    .unwrap();
    assert_eq!(names.lines().count(), 1, "{names}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_pin_to_their_id_or_digest_and_a_pin_outlives_its_tag() {
    let Some(env) = TestEnv::new("pin").await else {
        return;
    };
    let id_of = |image: &str| docker(&["image", "inspect", "--format", "{{.Id}}", image]).unwrap();
    // A local image (never pushed) pins to its image id.
    let tag = format!("paz-demo:pin-{}", env.suffix);
    docker(&["tag", "paz-demo:v1", &tag]).unwrap();
    let pin = env.scheduler.pin_image(&tag).await.expect("pin");
    assert_eq!(pin, id_of("paz-demo:v1"));
    // The tag moves on; the pin still starts the first image.
    docker(&["tag", "paz-demo:v2", &tag]).unwrap();
    let web = env.service("web");
    let mut spec = env.spec(&web, 0, &[]);
    spec.image = pin.clone();
    let instance = env.scheduler.start(&spec).await.expect("start by image id");
    let image = docker(&["inspect", "--format", "{{.Image}}", &instance.id]).unwrap();
    assert_eq!(image, pin, "the container runs the pinned image");
    assert_eq!(
        env.scheduler.resolve_image(&tag).await.unwrap(),
        Some(id_of("paz-demo:v2"))
    );
    // A reference with a digest is its own pin; an unknown image id cannot be pulled.
    let digest = format!("sha256:{}", "0".repeat(64));
    assert_eq!(
        env.scheduler
            .pin_image(&format!("registry.local:5000/x:v1@{digest}"))
            .await
            .unwrap(),
        format!("registry.local:5000/x@{digest}")
    );
    let gone = env.scheduler.pin_image(&digest).await.unwrap_err();
    assert!(
        gone.to_string().contains("cannot be pulled again"),
        "{gone}"
    );
    assert_eq!(gone.port_kind(), paz_core::PortErrorKind::ImageUnavailable);
    let _ = docker(&["rmi", &tag]);
}

//! Core micro-benchmarks: validation and planning-input building for 10,000 services.
//!
//! `cargo bench --bench core`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use paz::core::deploy::routes::{RoutedInstance, Weights, route_table};
use paz::core::model::{Instance, InstanceState};
use paz::core::planning::DesiredState;
use paz::core::route::RouteTable;
use paz::core::{ImageRef, PortSpec, Protocol, Service, ServiceSpec};

const SERVICES: usize = 10_000;

fn services() -> Vec<Service> {
    (0..SERVICES)
        .map(|i| {
            let mut spec = ServiceSpec::new(
                format!("svc-{i}"),
                format!("registry.local:5000/team/app-{i}:v{}", i % 7),
            );
            spec.instances = 2;
            spec.ports.push(PortSpec {
                port: 8080,
                protocol: Protocol::Http,
            });
            spec.public = i % 2 == 0;
            spec.env.insert("MODE".into(), "prod".into());
            if i % 10 == 0 {
                spec.domains.push(format!("shop-{i}.example.com"));
            }
            Service {
                spec,
                current_release: Some(1),
                latest_release: 1,
                latest_deployment: 1,
                pruned_below: 0,
                pinned_releases: Default::default(),
                secrets: Default::default(),
                created_at: jiff::Timestamp::UNIX_EPOCH,
                updated_at: jiff::Timestamp::UNIX_EPOCH,
                revision: 1,
            }
        })
        .collect()
}

fn instances(services: &[Service]) -> Vec<Instance> {
    services
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            (0..2u32).map(move |slot| Instance {
                id: format!("c-{i}-{slot}"),
                service: s.spec.name.clone(),
                release: 1,
                slot,
                host: "h1".into(),
                address: Some(format!(
                    "10.{}.{}.{}:8080",
                    i / 65536,
                    (i / 256) % 256,
                    i % 256
                )),
                state: InstanceState::Healthy,
                message: None,
                epoch: None,
                started_at: None,
            })
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let services = services();
    let instances = instances(&services);
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(SERVICES as u64));
    group.bench_function("validate_10k_services", |b| {
        b.iter(|| {
            for service in &services {
                black_box(service.spec.validate()).unwrap();
            }
        })
    });
    group.bench_function("desired_state_10k_services", |b| {
        b.iter(|| {
            black_box(DesiredState::from_services(
                black_box(&services),
                "localhost",
            ))
        })
    });
    // The builder the runtime runs: host names (public and `.paz`), weights by release,
    // drains kept only where the previous table routed them.
    let routed: Vec<RoutedInstance> = instances
        .iter()
        .map(|i| RoutedInstance {
            service: &i.service,
            release: i.release,
            address: i.address.as_deref().unwrap_or_default(),
            state: i.state,
        })
        .collect();
    let weights: Weights = services
        .iter()
        .map(|s| (s.spec.name.clone(), [(1u64, 100u32)].into()))
        .collect();
    let previous = RouteTable::default();
    group.bench_function("route_table_10k_services_20k_instances", |b| {
        b.iter(|| {
            black_box(route_table(
                black_box(&services),
                "localhost",
                black_box(&routed),
                &weights,
                &previous,
            ))
        })
    });
    let table = route_table(&services, "localhost", &routed, &weights, &previous);
    let mut changed = table.clone();
    for route in changed.routes.values_mut().step_by(100) {
        route.backends.clear();
    }
    group.bench_function("route_table_diff_10k_routes", |b| {
        b.iter(|| black_box(table.diff(black_box(&changed))))
    });
    group.finish();
    c.bench_function("image_ref_parse", |b| {
        b.iter(|| ImageRef::parse(black_box("registry.local:5000/team/app:v1.2.3")).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

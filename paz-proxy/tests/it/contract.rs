use paz_proxy::{Router, RouterConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_passes_the_proxy_contract() {
    let router = Router::new(RouterConfig::default());
    paz_core::contract::proxy::run(&*router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_on_the_callers_runtime_passes_the_proxy_contract() {
    let router = Router::new(RouterConfig {
        workers: 0,
        ..RouterConfig::default()
    });
    paz_core::contract::proxy::run(&*router).await;
}

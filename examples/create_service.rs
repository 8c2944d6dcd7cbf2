//! Creates a service with the SDK client and reads it back.
//!
//! ```sh
//! cargo run --example create_service            # service `hello`, image `demo:v1`
//! cargo run --example create_service -- api demo:v2
//! ```
//!
//! The server is `PAZ_SERVER` (default `http://127.0.0.1:7700`); the token is `PAZ_TOKEN`, or
//! else the admin token a local server wrote to `<PAZ_DATA_DIR or ./paz-data>/admin-token`.

#![allow(clippy::print_stdout, reason = "an example prints what it did")]

use std::path::PathBuf;

use paz::core::{PortSpec, Protocol};
use paz::{Client, ServiceSpec};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "hello".into());
    let image = args.next().unwrap_or_else(|| "demo:v1".into());
    let server = std::env::var("PAZ_SERVER").unwrap_or_else(|_| "http://127.0.0.1:7700".into());
    let token = std::env::var("PAZ_TOKEN").ok().or_else(local_admin_token);

    let client = Client::new(&server, token)?;
    let health = client.health().await?;
    println!(
        "server {server}: {} (version {})",
        health.status, health.version
    );

    let mut spec = ServiceSpec::new(&name, &image);
    spec.ports.push(PortSpec {
        port: 8080,
        protocol: Protocol::Http,
    });
    spec.public = true;
    match client.create_service(&spec).await {
        Ok(service) => println!(
            "created {} at revision {} (release v{})",
            service.spec.name,
            service.revision,
            service.current_release.unwrap_or_default()
        ),
        // Stable error codes make the API's errors easy to match.
        Err(e) if e.code() == Some("SERVICE_EXISTS") => println!("{name} already exists"),
        Err(e) => return Err(e.into()),
    }

    let service = client.service(&name).await?;
    println!(
        "read back: {} runs {} x{}, public: {}",
        service.spec.name, service.spec.image, service.spec.instances, service.spec.public
    );
    println!("{}", serde_json::to_string_pretty(&service)?);
    for deployment in client.deployments(&name).await? {
        println!(
            "deployment {}: release v{} {}",
            deployment.id, deployment.release, deployment.status
        );
    }
    Ok(())
}

/// The admin token of a server started in this directory, if there is one.
fn local_admin_token() -> Option<String> {
    let data_dir =
        std::env::var_os("PAZ_DATA_DIR").map_or_else(|| PathBuf::from("paz-data"), PathBuf::from);
    let token = std::fs::read_to_string(data_dir.join("admin-token")).ok()?;
    Some(token.trim().to_owned()).filter(|t| !t.is_empty())
}

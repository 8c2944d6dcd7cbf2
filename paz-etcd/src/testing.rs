//! Test support (feature `testing`): real etcd members (Debian's `etcd-server`) as child
//! processes on free loopback ports, one or several as a cluster, each of which a test can
//! kill, stop (SIGSTOP: a member that hangs) and restart on its own data.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use anyhow::Result;

use crate::EtcdConfig;

/// Whether etcd can be used; `CI=true` makes its absence a failure.
pub fn etcd_available(test: &str) -> bool {
    if Command::new("etcd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: etcd is not installed (apt-get install etcd-server); CI=true needs it");
    }
    eprintln!("SKIPPED {test}: etcd is not installed (apt-get install etcd-server)");
    false
}

/// A free loopback port (bound and released: etcd takes ports by number).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data: PathBuf,
    child: Option<Child>,
}

/// The PEM files of a TLS test cluster: a CA, the members' certificate (for `localhost` and
/// 127.0.0.1) and a client certificate, all signed by the CA.
#[derive(Debug, Clone)]
pub struct TestTls {
    /// The CA certificate.
    pub ca: PathBuf,
    /// A client certificate the members accept…
    pub client_cert: PathBuf,
    /// …and its key.
    pub client_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl TestTls {
    fn generate(dir: &std::path::Path) -> Result<TestTls> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "paz etcd test CA");
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let write = |name: &str, pem: String| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, pem)?;
            Ok(path)
        };
        let server_key = rcgen::KeyPair::generate()?;
        let server = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?
            .signed_by(&server_key, &issuer)?;
        let client_key = rcgen::KeyPair::generate()?;
        let mut client = rcgen::CertificateParams::new(vec!["paz".into()])?;
        client
            .distinguished_name
            .push(rcgen::DnType::CommonName, "paz");
        let client = client.signed_by(&client_key, &issuer)?;
        Ok(TestTls {
            ca: write("ca.pem", ca_cert.pem())?,
            server_cert: write("server.pem", server.pem())?,
            server_key: write("server-key.pem", server_key.serialize_pem())?,
            client_cert: write("client.pem", client.pem())?,
            client_key: write("client-key.pem", client_key.serialize_pem())?,
        })
    }
}

/// etcd members on loopback, killed on drop.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    tls: Option<TestTls>,
    also_on: Option<std::net::Ipv4Addr>,
    _dir: tempfile::TempDir,
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl EtcdCluster {
    /// One member.
    pub fn single() -> Result<EtcdCluster> {
        Self::start(1)
    }

    /// `size` members forming one cluster; returns once it has a leader.
    pub fn start(size: usize) -> Result<EtcdCluster> {
        Self::start_with(size, false)
    }

    /// One member serving clients over TLS only, requiring a client certificate signed by
    /// the test CA ([`EtcdCluster::tls`]).
    pub fn single_tls() -> Result<EtcdCluster> {
        Self::start_with(1, true)
    }

    /// The TLS files, for a cluster started with [`EtcdCluster::single_tls`].
    pub fn tls(&self) -> Option<&TestTls> {
        self.tls.as_ref()
    }

    /// One member serving clients on loopback and on `ip` too (an address of the machine
    /// that hosts in network namespaces reach: [`EtcdCluster::url_on`]).
    pub fn single_also_on(ip: std::net::Ipv4Addr) -> Result<EtcdCluster> {
        Self::start_with_on(1, false, Some(ip))
    }

    fn start_with(size: usize, tls: bool) -> Result<EtcdCluster> {
        Self::start_with_on(size, tls, None)
    }

    fn start_with_on(
        size: usize,
        tls: bool,
        also_on: Option<std::net::Ipv4Addr>,
    ) -> Result<EtcdCluster> {
        let dir = tempfile::tempdir()?;
        let tls = if tls {
            Some(TestTls::generate(dir.path())?)
        } else {
            None
        };
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data: dir.path().join(format!("m{i}")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            members,
            initial_cluster,
            token: format!("paz-test-{}-{}", std::process::id(), free_port()),
            tls,
            also_on,
            _dir: dir,
        };
        for i in 0..size {
            cluster.spawn(i)?;
        }
        cluster.wait_ready(Duration::from_secs(20))?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let member = &self.members[i];
        let mut client = format!("{}://127.0.0.1:{}", self.scheme(), member.client_port);
        if let Some(ip) = self.also_on {
            client.push_str(&format!(",{}://{ip}:{}", self.scheme(), member.client_port));
        }
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let mut command = Command::new("etcd");
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let child = command
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&member.data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            // Fast elections for tests (the minimum lease TTL follows: about 1 s).
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--experimental-watch-progress-notify-interval", "1s"])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("start etcd: {e}"))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// Waits until a majority of members answers with a leader.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let answering = self
                .members
                .iter()
                .filter(|m| m.child.is_some() && self.has_leader(m))
                .count();
            if answering * 2 > self.members.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("etcd did not get a leader within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Runs `etcdctl` against member `i` (with the client certificate under TLS).
    pub fn etcdctl(&self, i: usize, args: &[&str]) -> std::process::Output {
        let member = &self.members[i];
        let mut command = Command::new("etcdctl");
        command.env("ETCDCTL_API", "3").args([
            "--endpoints",
            &format!("{}://127.0.0.1:{}", self.scheme(), member.client_port),
            "--command-timeout",
            "1s",
        ]);
        if let Some(tls) = &self.tls {
            command
                .arg("--cacert")
                .arg(&tls.ca)
                .arg("--cert")
                .arg(&tls.client_cert)
                .arg("--key")
                .arg(&tls.client_key);
        }
        command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("etcdctl cannot run: {e}"))
    }

    fn has_leader(&self, member: &Member) -> bool {
        let i = self
            .members
            .iter()
            .position(|m| m.name == member.name)
            .expect("a member of this cluster");
        self.etcdctl(i, &["get", "--consistency", "l", "/paz-probe"])
            .status
            .success()
    }

    /// The client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client_port))
            .collect()
    }

    /// The store URL through `ip` (given to [`EtcdCluster::single_also_on`]).
    pub fn url_on(&self, ip: std::net::Ipv4Addr) -> String {
        let hosts: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{ip}:{}", m.client_port))
            .collect();
        format!("etcd://{}", hosts.join(","))
    }

    /// The store URL (`etcd://…`) of every member.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect();
        let scheme = if self.tls.is_some() { "etcds" } else { "etcd" };
        format!("{scheme}://{}", hosts.join(","))
    }

    /// A config for every member, with keys under `namespace` (so several tests can share a
    /// cluster), and short timeouts.
    pub fn config(&self, namespace: &str) -> EtcdConfig {
        let mut config = EtcdConfig::new(self.endpoints());
        config.namespace = namespace.to_owned();
        config.connect_timeout = Duration::from_secs(2);
        config.request_timeout = Duration::from_secs(2);
        config.keep_alive_interval = Duration::from_millis(500);
        config.keep_alive_timeout = Duration::from_millis(500);
        if let Some(tls) = &self.tls {
            config.tls = Some(crate::EtcdTls {
                ca: Some(tls.ca.clone()),
                cert: Some(tls.client_cert.clone()),
                key: Some(tls.client_key.clone()),
                domain: Some("localhost".into()),
            });
        }
        config
    }

    /// The client port of member `i`.
    pub fn client_port(&self, i: usize) -> u16 {
        self.members[i].client_port
    }

    /// Kills member `i` (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data and ports (after [`EtcdCluster::kill`]).
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.kill(i);
        // Its ports are free once it exited; give the kernel a moment to release them.
        let port = self.members[i].client_port;
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                anyhow::bail!("port {port} stayed busy");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.spawn(i)
    }

    /// The pid of member `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }
}

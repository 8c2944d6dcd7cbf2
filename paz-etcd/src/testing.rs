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

/// etcd members on loopback, killed on drop.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
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
        let dir = tempfile::tempdir()?;
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
        let client = format!("http://127.0.0.1:{}", member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let child = Command::new("etcd")
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

    fn has_leader(&self, member: &Member) -> bool {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &format!("http://127.0.0.1:{}", member.client_port),
                "--command-timeout",
                "1s",
                "endpoint",
                "status",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            && Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args([
                    "--endpoints",
                    &format!("http://127.0.0.1:{}", member.client_port),
                    "--command-timeout",
                    "1s",
                    "get",
                    "--consistency",
                    "l",
                    "/paz-probe",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }

    /// The client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// The store URL (`etcd://…`) of every member.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect();
        format!("etcd://{}", hosts.join(","))
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

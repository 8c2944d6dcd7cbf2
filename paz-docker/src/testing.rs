//! Extra "hosts" for tests (feature `testing`): network namespaces of the test's own on a
//! bridge it creates, each with its own Docker Engine, optionally joined into a Swarm.
//!
//! The recipe, checked on the machines Paz's CI runs on:
//! - a bridge (`<prefix>br`) with `10.<a>.<b>.1/24` on the machine's side, and per host a
//!   namespace (`<prefix>h<n>`) holding one end of a veth pair at `10.<a>.<b>.<n+1>`, the
//!   other end on the bridge; traffic goes only to these addresses;
//! - one `iptables -I DOCKER-USER -i <bridge> -o <bridge> -j ACCEPT` rule, since the machine's
//!   Docker sets the `FORWARD` policy to `DROP` and bridged traffic passes iptables;
//! - each engine started with `nsenter --net=/var/run/netns/<ns> dockerd` (not `ip netns
//!   exec`, which remounts `/sys` and hides the cgroups), with a config file, data root, exec
//!   root, pid file and socket of its own, its iptables and bridge left on (inside the
//!   namespace they are the namespace's own, and host-mode ports need them);
//! - images moved with `docker save | docker load` (there is no registry).
//!
//! Everything is torn down when [`TestHosts`] is dropped, also after a failed test: the
//! Swarm left, each daemon stopped by its pid, the mounts under its roots unmounted, the
//! namespaces, links and bridge deleted, the iptables rule removed.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long one command (a `docker` call, `ip`, a load) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long an engine has to answer after it started.
const ENGINE_START: Duration = Duration::from_secs(60);

/// One extra host: a namespace with its own engine.
#[derive(Debug)]
pub struct TestHost {
    /// `h1`, `h2`, …
    pub name: String,
    /// The network namespace.
    pub netns: String,
    /// Its address on the test bridge.
    pub address: Ipv4Addr,
    /// Its engine's socket (on the machine's file system).
    pub socket: PathBuf,
    /// Its Swarm node id, once it joined.
    pub node_id: Option<String>,
    root: PathBuf,
    veth: String,
    dockerd: Option<Child>,
}

impl TestHost {
    /// The engine as a Docker host: `unix:///…/docker.sock`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Whether its engine runs.
    pub fn engine_running(&self) -> bool {
        self.dockerd.is_some()
    }
}

/// A set of extra hosts on a bridge of their own (see the [module docs](self)).
#[derive(Debug)]
pub struct TestHosts {
    /// The hosts.
    pub hosts: Vec<TestHost>,
    /// The bridge's address: the machine as the hosts see it.
    pub gateway: Ipv4Addr,
    bridge: String,
    dir: PathBuf,
    rule: bool,
    log: String,
}

/// Why the hosts cannot be made here: not root, or a tool is missing.
pub fn unavailable_reason() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("network namespaces and extra engines need root".into());
    }
    for tool in ["ip", "nsenter", "dockerd", "iptables", "docker", "timeout"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("`{tool}` is missing"));
        }
    }
    None
}

/// Runs `program args…` with a deadline; its trimmed stdout, or why it failed.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new("timeout")
        .arg(COMMAND_TIMEOUT.as_secs().to_string())
        .arg(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn random_byte(salt: u64) -> u8 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(salt);
    hasher.write_u32(std::process::id());
    (hasher.finish() % 250) as u8 + 1
}

impl TestHosts {
    /// Makes `count` hosts, each with a running engine. Whatever was made before a failure
    /// is torn down.
    pub fn create(count: usize) -> Result<TestHosts, String> {
        if let Some(reason) = unavailable_reason() {
            return Err(reason);
        }
        let tag = format!("{:02x}{:02x}", random_byte(1), random_byte(2));
        let prefix = format!("pz{tag}");
        // A /24 no interface of the machine uses.
        let addresses = run("ip", &["-4", "-o", "addr"])?;
        let (a, b) = (0..64)
            .map(|n| (random_byte(3 + n), random_byte(100 + n)))
            .find(|(a, b)| !addresses.contains(&format!(" 10.{a}.{b}.")))
            .ok_or("no free 10.x.y.0/24 for the test bridge")?;
        let dir = std::env::temp_dir().join(format!("paz-hosts-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let mut hosts = TestHosts {
            hosts: Vec::new(),
            gateway: Ipv4Addr::new(10, a, b, 1),
            bridge: format!("{prefix}br"),
            dir,
            rule: false,
            log: String::new(),
        };
        hosts.make_bridge()?;
        for n in 1..=count {
            let host = hosts.make_host(&prefix, n, a, b)?;
            hosts.hosts.push(host);
        }
        for n in 0..count {
            hosts.start_engine(n)?;
        }
        Ok(hosts)
    }

    fn make_bridge(&mut self) -> Result<(), String> {
        let bridge = self.bridge.clone();
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        let gateway = format!("{}/24", self.gateway);
        run("ip", &["addr", "add", &gateway, "dev", &bridge])?;
        run("ip", &["link", "set", &bridge, "up"])?;
        run(
            "iptables",
            &[
                "-I",
                "DOCKER-USER",
                "-i",
                &bridge,
                "-o",
                &bridge,
                "-j",
                "ACCEPT",
            ],
        )?;
        self.rule = true;
        Ok(())
    }

    fn make_host(&mut self, prefix: &str, n: usize, a: u8, b: u8) -> Result<TestHost, String> {
        let name = format!("h{n}");
        let netns = format!("{prefix}{name}");
        let veth = format!("{prefix}{name}a");
        let inside = format!("{prefix}{name}b");
        let address = Ipv4Addr::new(10, a, b, u8::try_from(n + 1).map_err(|e| e.to_string())?);
        let root = self.dir.join(&name);
        std::fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
        run("ip", &["netns", "add", &netns])?;
        // From here on the namespace is deleted at teardown even if a step fails.
        let host = TestHost {
            name,
            netns: netns.clone(),
            address,
            socket: root.join("docker.sock"),
            node_id: None,
            root,
            veth: veth.clone(),
            dockerd: None,
        };
        let cidr = format!("{address}/24");
        let steps: [&[&str]; 6] = [
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", &inside,
            ],
            &["link", "set", &inside, "netns", &netns],
            &["link", "set", &veth, "master", &self.bridge, "up"],
            &["-n", &netns, "addr", "add", &cidr, "dev", &inside],
            &["-n", &netns, "link", "set", &inside, "up"],
            &["-n", &netns, "link", "set", "lo", "up"],
        ];
        for step in steps {
            if let Err(error) = run("ip", step) {
                self.hosts.push(host);
                return Err(error);
            }
        }
        Ok(host)
    }

    fn start_engine(&mut self, index: usize) -> Result<(), String> {
        let host = &mut self.hosts[index];
        let config = host.root.join("daemon.json");
        std::fs::write(&config, r#"{"storage-driver": "fuse-overlayfs"}"#)
            .map_err(|e| format!("write {}: {e}", config.display()))?;
        let log = std::fs::File::create(host.root.join("dockerd.log"))
            .map_err(|e| format!("create the engine log: {e}"))?;
        let netns = format!("--net=/var/run/netns/{}", host.netns);
        let child = Command::new("nsenter")
            .arg(&netns)
            .arg("dockerd")
            .arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(host.root.join("data"))
            .arg("--exec-root")
            .arg(host.root.join("exec"))
            .arg("--pidfile")
            .arg(host.root.join("docker.pid"))
            .arg("-H")
            .arg(host.docker_host())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start dockerd in {}: {e}", host.netns))?;
        host.dockerd = Some(child);
        let deadline = Instant::now() + ENGINE_START;
        loop {
            let docker_host = self.hosts[index].docker_host();
            if run("docker", &["-H", &docker_host, "version"]).is_ok() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.hosts[index].dockerd.as_mut().map(|c| c.try_wait())
            {
                self.hosts[index].dockerd = None;
                return Err(format!(
                    "dockerd in {} exited ({status}): {}",
                    self.hosts[index].netns,
                    self.engine_log(index)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "dockerd in {} did not answer within {ENGINE_START:?}: {}",
                    self.hosts[index].netns,
                    self.engine_log(index)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of a host's engine log.
    pub fn engine_log(&self, index: usize) -> String {
        let text =
            std::fs::read_to_string(self.hosts[index].root.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// `docker -H <host's engine> args…`.
    pub fn docker(&self, index: usize, args: &[&str]) -> Result<String, String> {
        let host = self.hosts[index].docker_host();
        let mut all = vec!["-H", host.as_str()];
        all.extend_from_slice(args);
        run("docker", &all)
    }

    /// Copies images from the machine's engine to every host's (`docker save | docker load`).
    pub fn load_images(&self, images: &[&str]) -> Result<(), String> {
        let archive = self.dir.join("images.tar");
        let archive_text = archive.display().to_string();
        let mut args = vec!["save", "-o", archive_text.as_str()];
        args.extend_from_slice(images);
        run("docker", &args)?;
        for index in 0..self.hosts.len() {
            self.docker(index, &["load", "-i", &archive_text])?;
        }
        let _ = std::fs::remove_file(&archive);
        Ok(())
    }

    /// Makes a Swarm: the first host initializes it (heartbeat `heartbeat`, so a lost node
    /// is noticed quickly), the others join as workers; every node gets the label
    /// `paz.host=<name>`.
    pub fn swarm(&mut self, heartbeat: Duration) -> Result<(), String> {
        let manager = self.hosts[0].address.to_string();
        let heartbeat = format!("{}ms", heartbeat.as_millis());
        self.docker(
            0,
            &[
                "swarm",
                "init",
                "--advertise-addr",
                &manager,
                "--dispatcher-heartbeat",
                &heartbeat,
            ],
        )?;
        let token = self.docker(0, &["swarm", "join-token", "-q", "worker"])?;
        let join = format!("{manager}:2377");
        for index in 1..self.hosts.len() {
            let own = self.hosts[index].address.to_string();
            self.docker(
                index,
                &[
                    "swarm",
                    "join",
                    "--token",
                    &token,
                    "--advertise-addr",
                    &own,
                    &join,
                ],
            )?;
        }
        for index in 0..self.hosts.len() {
            let id = self.docker(index, &["info", "--format", "{{.Swarm.NodeID}}"])?;
            let label = format!("paz.host={}", self.hosts[index].name);
            self.docker(0, &["node", "update", "--label-add", &label, &id])?;
            self.hosts[index].node_id = Some(id);
        }
        // Until every node is ready.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let states = self.docker(0, &["node", "ls", "--format", "{{.Status}}"])?;
            if states.lines().filter(|s| *s == "Ready").count() == self.hosts.len() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("the Swarm's nodes are not all ready: {states}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops a host's engine (SIGTERM, as a shutdown would; its containers stop with it).
    pub fn stop_engine(&mut self, index: usize) -> Result<(), String> {
        let Some(mut child) = self.hosts[index].dockerd.take() else {
            return Ok(());
        };
        stop_child(&mut child, Duration::from_secs(20));
        Ok(())
    }

    /// Where the hosts' files live (engine logs, sockets).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn teardown(&mut self) {
        let mut problems = String::new();
        for index in (0..self.hosts.len()).rev() {
            if self.hosts[index].dockerd.is_some() && self.hosts[index].node_id.is_some() {
                let _ = self.docker(index, &["swarm", "leave", "--force"]);
            }
            if let Some(mut child) = self.hosts[index].dockerd.take() {
                stop_child(&mut child, Duration::from_secs(20));
            }
            // A dockerd that died on its own may leave its containerd behind.
            kill_by_pidfile(
                &self.hosts[index]
                    .root
                    .join("exec/containerd/containerd.pid"),
            );
            unmount_under(&self.hosts[index].root);
            let host = &self.hosts[index];
            if let Err(e) = run("ip", &["link", "del", &host.veth]) {
                let _ = writeln!(problems, "{e}");
            }
            if let Err(e) = run("ip", &["netns", "del", &host.netns]) {
                let _ = writeln!(problems, "{e}");
            }
        }
        if self.rule {
            let bridge = self.bridge.clone();
            if let Err(e) = run(
                "iptables",
                &[
                    "-D",
                    "DOCKER-USER",
                    "-i",
                    &bridge,
                    "-o",
                    &bridge,
                    "-j",
                    "ACCEPT",
                ],
            ) {
                let _ = writeln!(problems, "{e}");
            }
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
        unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
        self.log.push_str(&problems);
        if !self.log.trim().is_empty() {
            eprintln!("[test hosts] teardown: {}", self.log.trim());
        }
    }
}

impl Drop for TestHosts {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// SIGTERM, then SIGKILL after `grace`; reaps the child.
fn stop_child(child: &mut Child, grace: Duration) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn kill_by_pidfile(path: &Path) {
    if let Ok(pid) = std::fs::read_to_string(path) {
        let pid = pid.trim();
        if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
}

/// Unmounts (lazily) every mount point under `root`, deepest first.
fn unmount_under(root: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let root = root.display().to_string();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| p.starts_with(&root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = run("umount", &["-l", point]);
    }
}

/// The machine's own engine as a one-node Swarm manager for a test: made a manager on
/// loopback (a free port) when it is not in a Swarm, and left again when dropped (a Swarm
/// that was there is kept). Dropping it also removes the Paz Swarm services labelled
/// `paz.managed=true`, or only `paz.cluster=<cluster>` when [`LocalSwarm::cluster`] is set.
#[derive(Debug)]
pub struct LocalSwarm {
    made: bool,
    /// Only this cluster's Swarm services are removed at the end, when set.
    pub cluster: Option<String>,
}

impl LocalSwarm {
    /// Joins (or makes) the Swarm of the machine's engine.
    pub fn join() -> Result<LocalSwarm, String> {
        let state = run("docker", &["info", "--format", "{{.Swarm.LocalNodeState}}"])?;
        let made = match state.as_str() {
            "active" => false,
            "inactive" => {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map_err(|e| format!("a free port: {e}"))?
                    .port();
                let addr = format!("127.0.0.1:{port}");
                run(
                    "docker",
                    &[
                        "swarm",
                        "init",
                        "--advertise-addr",
                        &addr,
                        "--listen-addr",
                        &addr,
                    ],
                )?;
                true
            }
            other => return Err(format!("the engine's Swarm is {other:?}: not usable")),
        };
        Ok(LocalSwarm {
            made,
            cluster: None,
        })
    }
}

impl Drop for LocalSwarm {
    fn drop(&mut self) {
        let filter = match &self.cluster {
            Some(cluster) => format!("label=paz.cluster={cluster}"),
            None => "label=paz.managed=true".to_owned(),
        };
        let ids = run("docker", &["service", "ls", "-q", "--filter", &filter]).unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["service", "rm"];
            args.extend(ids);
            if let Err(e) = run("docker", &args) {
                eprintln!("[local swarm] cleanup: {e}");
            }
        }
        if self.made
            && let Err(e) = run("docker", &["swarm", "leave", "--force"])
        {
            eprintln!("[local swarm] cleanup: {e}");
        }
    }
}

//! HAProxy as a [`Proxy`] backend: Paz renders a complete `haproxy.cfg`, starts HAProxy in
//! master-worker mode and supervises it, and drives it without dropping connections.
//!
//! - **Layout** ([`layout`]): an HTTP frontend routes by `Host` through a map file to one
//!   backend per service; each backend has numbered server slots (`s1`..`sN`, room for its
//!   instances plus a surge) with active health checks on the service's health path.
//! - **Changes without reloads**: an instance joining, leaving, draining or changing weight,
//!   and a host name added or removed, are runtime-API commands (`set server … addr/weight/
//!   state`, `add/set/del map`) on the admin socket. The config on disk is rewritten with the
//!   same state each time, so a reload or a restart serves exactly what was set.
//! - **Reloads** only for structure (a new service, more slots, a new health check): the new
//!   config is checked with `haproxy -c` first (a rejected one is an error naming its line,
//!   and the old one keeps serving), then the master reloads it; listeners pass to the new
//!   worker through the admin socket (`expose-fd listeners`), and `option
//!   idle-close-on-response` lets the old worker finish in-flight keep-alive requests.
//! - **Supervision**: a HAProxy that exits is started again with the last config, with
//!   backoff; it gets `SIGTERM` if Paz dies (`setpriv --pdeathsig`, where installed).
//!
//! The slots are explicit `server` lines rather than a `server-template`: a template gives
//! every slot the same address, and the rendered config must carry each slot's current
//! address, weight and state across reloads (HAProxy forgets runtime-API changes when it
//! reloads).

pub mod layout;
pub mod socket;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use paz_core::proxy::Proxy;
use paz_core::route::RouteTable;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::error::{Error, Result};
use layout::{Layout, Paths};

/// How long HAProxy may take to answer on its admin socket after a start or a reload.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between restarts of a HAProxy that keeps exiting.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Lines of HAProxy's own output kept for error messages.
const TAIL_LINES: usize = 20;
/// The longest unix socket path (`sun_path` holds 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// How Paz runs HAProxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaproxyConfig {
    /// The `haproxy` executable (a name on `PATH` or a path).
    pub binary: PathBuf,
    /// Where the HTTP frontend listens (port 0: a free port, chosen at start).
    pub listen: SocketAddr,
    /// Where the config, the map file and the sockets live (created, mode 0700).
    pub dir: PathBuf,
    /// Worker threads (`nbthread`).
    pub threads: usize,
    /// Connections at most (`maxconn`, globally and per frontend).
    pub maxconn: u32,
    /// How long an old worker may finish its connections after a reload (`hard-stop-after`).
    pub hard_stop_after: Duration,
    /// Lines added to the `defaults` section as they are (an operator's tuning).
    pub extra_defaults: Vec<String>,
}

impl HaproxyConfig {
    /// `haproxy` from `PATH` on `listen`, its files in `dir`, one thread per core.
    pub fn new(listen: SocketAddr, dir: PathBuf) -> Self {
        HaproxyConfig {
            binary: PathBuf::from("haproxy"),
            listen,
            dir,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            maxconn: 10_000,
            hard_stop_after: Duration::from_secs(60),
            extra_defaults: Vec::new(),
        }
    }
}

/// What `paz status` shows of a supervised HAProxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaproxyStatus {
    /// Whether it answers on its admin socket.
    pub running: bool,
    /// Its version, as it reports it.
    pub version: String,
    /// The master process.
    pub master_pid: Option<u32>,
    /// The current worker process.
    pub worker_pid: Option<u32>,
    /// Connections it holds now.
    pub connections: Option<u64>,
    /// Reloads done (structural changes).
    pub reloads: u64,
    /// Times it was started again after it exited.
    pub restarts: u64,
    /// The last problem, if any.
    pub last_error: Option<String>,
}

/// Where each address is served: (backend, server) names.
type Servers = BTreeMap<SocketAddr, (String, String)>;

/// The state set last.
struct Applied {
    layout: Layout,
    extra_defaults: Vec<String>,
    /// A reload failed: the next change reloads whatever it is.
    reload_pending: bool,
}

/// A HAProxy that Paz started and drives. Dropping it does not stop HAProxy; the task
/// [`Haproxy::start`] returns does, at shutdown.
pub struct Haproxy {
    config: HaproxyConfig,
    files: Files,
    applied: tokio::sync::Mutex<Applied>,
    /// The table in effect and where each address is served, for reads during an apply.
    current: Mutex<(RouteTable, Servers)>,
    process: Arc<Process>,
    reloads: AtomicU64,
}

impl std::fmt::Debug for Haproxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Haproxy")
            .field("listen", &self.config.listen)
            .field("dir", &self.config.dir)
            .finish_non_exhaustive()
    }
}

/// The paths of one HAProxy's files.
#[derive(Debug, Clone)]
struct Files {
    config: PathBuf,
    map: PathBuf,
    admin: PathBuf,
    master: PathBuf,
    check_config: PathBuf,
    check_map: PathBuf,
}

impl Files {
    fn in_dir(dir: &Path) -> Files {
        Files {
            config: dir.join("haproxy.cfg"),
            map: dir.join("hosts.map"),
            admin: dir.join("admin.sock"),
            master: dir.join("master.sock"),
            check_config: dir.join("check.cfg"),
            check_map: dir.join("check.map"),
        }
    }

    fn paths(&self, map: &Path) -> Paths {
        Paths {
            admin_socket: self.admin.display().to_string(),
            map: map.display().to_string(),
        }
    }
}

impl Haproxy {
    /// Checks the binary (HAProxy 2.6 or newer), renders an empty table, starts HAProxy and
    /// waits until it answers. The returned task supervises it (restarts it if it exits) and,
    /// once `shutdown` is signalled, stops it gracefully: in-flight requests finish.
    pub async fn start(
        mut config: HaproxyConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Arc<Haproxy>, tokio::task::JoinHandle<()>)> {
        let version = check_binary(&config.binary).await?;
        prepare_dir(&config.dir)?;
        if config.listen.port() == 0 {
            config.listen = free_port(config.listen)?;
        }
        // HAProxy needs two descriptors per connection and refuses to start past the limit.
        if let Ok((_, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
            let fits = u32::try_from(hard.saturating_sub(256) / 2)
                .unwrap_or(u32::MAX)
                .max(256);
            if config.maxconn > fits {
                tracing::info!(
                    maxconn = fits,
                    "HAProxy's maxconn lowered to the open files limit"
                );
                config.maxconn = fits;
            }
        }
        let files = Files::in_dir(&config.dir);
        for socket in [&files.admin, &files.master] {
            if socket.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(Error::HaproxyStart {
                    message: format!(
                        "the socket path {} is longer than {MAX_SOCKET_PATH} bytes; give a shorter directory",
                        socket.display()
                    ),
                });
            }
        }
        let process = Arc::new(Process {
            binary: config.binary.clone(),
            files: files.clone(),
            version,
            setpriv: which("setpriv"),
            state: Mutex::new(ProcessState::default()),
            hard_stop_after: config.hard_stop_after,
        });
        let haproxy = Haproxy {
            config: config.clone(),
            files,
            applied: tokio::sync::Mutex::new(Applied {
                layout: Layout::default(),
                extra_defaults: config.extra_defaults.clone(),
                reload_pending: false,
            }),
            current: Mutex::new(Default::default()),
            process: process.clone(),
            reloads: AtomicU64::new(0),
        };
        let empty = Layout::default();
        haproxy.check(&empty, &config.extra_defaults).await?;
        haproxy.write(&empty, &config.extra_defaults)?;
        let child = process.spawn().await?;
        tracing::info!(listen = %config.listen, version = %process.version, "HAProxy started");
        let task = tokio::spawn(process.supervise(child, shutdown));
        Ok((Arc::new(haproxy), task))
    }

    /// Where the HTTP frontend listens.
    pub fn address(&self) -> SocketAddr {
        self.config.listen
    }

    /// The current worker's pid, from the admin socket (it changes at each reload).
    pub async fn worker_pid(&self) -> Result<u32> {
        let info = socket::ask(&self.files.admin, "show info").await?;
        socket::info_field(&info, "Pid")
            .and_then(|pid| pid.parse().ok())
            .ok_or_else(|| Error::HaproxySocket {
                command: "show info".into(),
                message: "no Pid in the answer".into(),
            })
    }

    /// The master's pid (what a supervisor signals), while it runs.
    pub fn master_pid(&self) -> Option<u32> {
        self.process.lock().pid
    }

    /// Its health, for `paz status`.
    pub async fn status(&self) -> HaproxyStatus {
        let info = socket::ask(&self.files.admin, "show info").await.ok();
        let field = |name| {
            info.as_deref()
                .and_then(|info| socket::info_field(info, name))
                .and_then(|v| v.parse().ok())
        };
        let state = self.process.lock();
        HaproxyStatus {
            running: info.is_some(),
            version: self.process.version.clone(),
            master_pid: state.pid,
            worker_pid: field("Pid").map(|p: u64| p as u32),
            connections: field("CurrConns"),
            reloads: self.reloads.load(Ordering::Relaxed),
            restarts: state.restarts,
            last_error: state.last_error.clone(),
        }
    }

    /// Replaces the operator's `defaults` lines: checked with `haproxy -c` and reloaded; a
    /// config HAProxy rejects is an error naming the line, and the old one keeps serving.
    pub async fn set_extra_defaults(&self, lines: Vec<String>) -> Result<()> {
        let mut applied = self.applied.lock().await;
        self.check(&applied.layout, &lines).await?;
        self.write(&applied.layout, &lines)?;
        applied.extra_defaults = lines;
        self.reload_or_mark(&mut applied).await
    }

    /// Checks the config for `layout` with `haproxy -c` (on copies of the files).
    async fn check(&self, layout: &Layout, extra: &[String]) -> Result<()> {
        let config = HaproxyConfig {
            extra_defaults: extra.to_vec(),
            ..self.config.clone()
        };
        let text = layout.render(&config, &self.files.paths(&self.files.check_map));
        write_atomic(&self.files.check_map, &layout.map_file())?;
        write_atomic(&self.files.check_config, &text)?;
        let output = Command::new(&self.config.binary)
            .arg("-c")
            .arg("-f")
            .arg(&self.files.check_config)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| Error::HaproxyMissing {
                binary: self.config.binary.clone(),
                source,
            })?;
        if output.status.success() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&output.stderr);
        let alerts: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("[ALERT]"))
            .map(|l| l.split_once(" : ").map_or(l, |(_, rest)| rest).trim())
            .filter(|l| !l.starts_with("config : Fatal errors"))
            .collect();
        Err(Error::HaproxyRejected {
            message: if alerts.is_empty() {
                text.trim().to_owned()
            } else {
                alerts.join("; ")
            },
        })
    }

    /// Writes the config and map file for `layout`.
    fn write(&self, layout: &Layout, extra: &[String]) -> Result<()> {
        let config = HaproxyConfig {
            extra_defaults: extra.to_vec(),
            ..self.config.clone()
        };
        write_atomic(&self.files.map, &layout.map_file())?;
        write_atomic(
            &self.files.config,
            &layout.render(&config, &self.files.paths(&self.files.map)),
        )
    }

    async fn reload_or_mark(&self, applied: &mut Applied) -> Result<()> {
        match self.process.reload().await {
            Ok(()) => {
                applied.reload_pending = false;
                self.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(error) => {
                applied.reload_pending = true;
                self.process.lock().last_error = Some(error.to_string());
                Err(error)
            }
        }
    }
}

#[async_trait]
impl Proxy for Haproxy {
    async fn apply(&self, table: &RouteTable) -> paz_core::Result<()> {
        let mut applied = self.applied.lock().await;
        let next = applied.layout.plan(table)?;
        let reload = applied.reload_pending || applied.layout.needs_reload(&next);
        if reload {
            let extra = applied.extra_defaults.clone();
            self.check(&next, &extra).await?;
            self.write(&next, &extra)?;
            self.publish(&mut applied, next, table);
            let started = Instant::now();
            self.reload_or_mark(&mut applied).await?;
            tracing::debug!(
                took_ms = started.elapsed().as_millis() as u64,
                "HAProxy reloaded"
            );
            return Ok(());
        }
        let map = self.files.map.display().to_string();
        let mut failed = None;
        for command in applied.layout.commands(&next, &map) {
            if let Err(error) = socket::change(&self.files.admin, &command).await {
                failed = Some(error);
                break;
            }
        }
        let extra = applied.extra_defaults.clone();
        self.write(&next, &extra)?;
        self.publish(&mut applied, next, table);
        if let Some(error) = failed {
            // The files hold the whole table: a reload (or the restart of a HAProxy that
            // died) serves it.
            tracing::warn!(%error, "a runtime-API change failed; reloading the full config");
            self.reload_or_mark(&mut applied).await?;
        }
        Ok(())
    }

    async fn routes(&self) -> paz_core::Result<RouteTable> {
        Ok(self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone())
    }

    async fn in_flight(&self, address: &str) -> paz_core::Result<u64> {
        let Ok(address) = address.parse::<SocketAddr>() else {
            return Ok(0);
        };
        let server = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .get(&address)
            .cloned();
        let Some((backend, server)) = server else {
            return Ok(0);
        };
        let stat = socket::ask(&self.files.admin, "show stat").await?;
        Ok(socket::current_sessions(&stat, &backend, &server).unwrap_or(0))
    }
}

impl Haproxy {
    fn publish(&self, applied: &mut Applied, next: Layout, table: &RouteTable) {
        let servers = next.servers();
        applied.layout = next;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = (table.clone(), servers);
    }
}

/// The HAProxy process and its supervision.
struct Process {
    binary: PathBuf,
    files: Files,
    version: String,
    setpriv: Option<PathBuf>,
    state: Mutex<ProcessState>,
    hard_stop_after: Duration,
}

#[derive(Default)]
struct ProcessState {
    pid: Option<u32>,
    restarts: u64,
    last_error: Option<String>,
    tail: VecDeque<String>,
}

impl Process {
    fn lock(&self) -> std::sync::MutexGuard<'_, ProcessState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tail(&self) -> String {
        let state = self.lock();
        state.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Starts HAProxy on the config on disk and waits until its admin socket answers.
    async fn spawn(self: &Arc<Self>) -> Result<Child> {
        for socket in [&self.files.admin, &self.files.master] {
            let _ = std::fs::remove_file(socket);
        }
        let mut command = match &self.setpriv {
            // HAProxy gets SIGTERM when Paz dies, however it dies.
            Some(setpriv) => {
                let mut command = Command::new(setpriv);
                command
                    .args(["--pdeathsig", "TERM", "--"])
                    .arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        command
            .arg("-W")
            .arg("-db")
            .arg("-S")
            .arg(&self.files.master)
            .arg("-f")
            .arg(&self.files.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        self.lock().tail.clear();
        let mut child = command.spawn().map_err(|source| Error::HaproxyMissing {
            binary: self.binary.clone(),
            source,
        })?;
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(self.clone().read_output(stderr));
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                // Let the output reader catch up with the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(Error::HaproxyStart {
                    message: format!("HAProxy exited ({status}): {}", self.tail()),
                });
            }
            if socket::ask(&self.files.admin, "show info").await.is_ok() {
                self.lock().pid = child.id();
                return Ok(child);
            }
            if Instant::now() >= deadline {
                let _ = child.kill().await;
                return Err(Error::HaproxyStart {
                    message: format!(
                        "HAProxy did not answer on {} within {READY_TIMEOUT:?}: {}",
                        self.files.admin.display(),
                        self.tail()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn read_output(self: Arc<Self>, stderr: tokio::process::ChildStderr) {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("[ALERT]") {
                tracing::warn!(target: "haproxy", "{line}");
            } else {
                tracing::debug!(target: "haproxy", "{line}");
            }
            let mut state = self.lock();
            if state.tail.len() == TAIL_LINES {
                state.tail.pop_front();
            }
            state.tail.push_back(line);
        }
    }

    /// Has the master load the config on disk, and waits for the new worker.
    async fn reload(&self) -> Result<()> {
        let before = worker_pid(&self.files.admin).await;
        let failed_before = failed_reloads(&self.files.master).await;
        socket::ask(&self.files.master, "reload").await?;
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut polls = 0u32;
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = worker_pid(&self.files.admin).await;
            if now.is_some() && now != before {
                return Ok(());
            }
            polls += 1;
            // The master is asked rarely: while it re-executes it leaves connections hanging.
            let failed = if polls.is_multiple_of(25) {
                failed_reloads(&self.files.master).await
            } else {
                None
            };
            if failed.is_some() && failed > failed_before {
                return Err(Error::HaproxyStart {
                    message: format!("HAProxy refused the reload: {}", self.tail()),
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::HaproxyStart {
                    message: format!(
                        "no new HAProxy worker within {READY_TIMEOUT:?} of a reload: {}",
                        self.tail()
                    ),
                });
            }
        }
    }

    /// Restarts HAProxy whenever it exits; stops it gracefully at shutdown.
    async fn supervise(self: Arc<Self>, child: Child, mut shutdown: watch::Receiver<bool>) {
        let mut child = Some(child);
        let mut backoff = Duration::from_millis(200);
        let mut started = Instant::now();
        loop {
            let Some(running) = child.as_mut() else {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    () = stopped(&mut shutdown) => return,
                }
                match self.spawn().await {
                    Ok(new) => {
                        tracing::info!("HAProxy started again with the last config");
                        child = Some(new);
                        started = Instant::now();
                    }
                    Err(error) => {
                        tracing::error!(%error, "HAProxy cannot be started again");
                        self.lock().last_error = Some(error.to_string());
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
                continue;
            };
            tokio::select! {
                status = running.wait() => {
                    let message = format!(
                        "HAProxy exited ({}); starting it again: {}",
                        status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                        self.tail()
                    );
                    tracing::error!("{message}");
                    let mut state = self.lock();
                    state.pid = None;
                    state.restarts += 1;
                    state.last_error = Some(message);
                    drop(state);
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff = Duration::from_millis(200);
                    }
                    child = None;
                }
                () = stopped(&mut shutdown) => {
                    self.stop(running).await;
                    return;
                }
            }
        }
    }

    /// Soft stop (`SIGUSR1`): listeners close, in-flight requests finish; killed after
    /// `hard-stop-after`.
    async fn stop(&self, child: &mut Child) {
        let signalled = child
            .id()
            .and_then(|pid| rustix::process::Pid::from_raw(pid as i32))
            .is_some_and(|pid| {
                rustix::process::kill_process(pid, rustix::process::Signal::USR1).is_ok()
            });
        if signalled
            && tokio::time::timeout(self.hard_stop_after + Duration::from_secs(1), child.wait())
                .await
                .is_ok()
        {
            return;
        }
        let _ = child.kill().await;
    }
}

/// Resolves once `shutdown` is signalled or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

async fn worker_pid(admin: &Path) -> Option<String> {
    let info = socket::ask(admin, "show info").await.ok()?;
    socket::info_field(&info, "Pid").map(str::to_owned)
}

/// The master's count of failed reloads (`show proc`: `<reloads> [failed: N]`).
async fn failed_reloads(master: &Path) -> Option<u64> {
    let proc = socket::ask_within(master, "show proc", Duration::from_millis(200))
        .await
        .ok()?;
    let (_, rest) = proc.split_once("[failed: ")?;
    rest.split(']').next()?.trim().parse().ok()
}

/// Runs `binary -v`: HAProxy 2.6 or newer (`option idle-close-on-response`).
async fn check_binary(binary: &Path) -> Result<String> {
    let output = Command::new(binary)
        .arg("-v")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| Error::HaproxyMissing {
            binary: binary.to_owned(),
            source,
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let mut numbers = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if (major, minor) < (2, 6) {
        return Err(Error::HaproxyVersion {
            binary: binary.to_owned(),
            found: if version.is_empty() {
                text.trim().to_owned()
            } else {
                version
            },
        });
    }
    Ok(version)
}

fn prepare_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| Error::HaproxyFiles {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)
}

/// A free port on `listen`'s address (HAProxy binds by address, so Paz picks the port).
fn free_port(listen: SocketAddr) -> Result<SocketAddr> {
    std::net::TcpListener::bind(listen)
        .and_then(|l| l.local_addr())
        .map_err(|source| Error::HaproxyFiles {
            path: PathBuf::from(listen.to_string()),
            source,
        })
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let io = |source| Error::HaproxyFiles {
        path: path.to_owned(),
        source,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, text).map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)
}

/// `name` on `PATH`, if there.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

//! Upgrades that drop nothing: a running server hands its listening sockets, its route table
//! and its certificates to a successor (`paz-server --upgrade`), as pingora's graceful
//! upgrade and HAProxy's `expose-fd listeners` do.
//!
//! The sockets are the same kernel sockets in both processes, so a connection waiting in a
//! listen queue is accepted by one or the other, never refused. The exchange, over a Unix
//! socket in the server's data dir (mode 0600 inside a 0700 dir: only its user):
//!
//! 1. the successor connects and sends a [`Hello`] line;
//! 2. the running server answers with one byte carrying every listening socket
//!    (`SCM_RIGHTS`), then a [`Handover`] line: the sockets' names, its route table and its
//!    certificates;
//! 3. the successor serves the route table on the sockets (both processes accept now), then
//!    sends `routing`;
//! 4. the running server stops: it stops accepting, answers its requests in flight (the
//!    last one on each connection with `Connection: close`), releases the store and exits;
//!    the successor sees the end of the stream, opens the store and starts its runtime and
//!    API, which resume from the store.
//!
//! A successor that fails before step 3 changes nothing: the running server goes on.
//!
//! The exchange is written here with `rustix`'s `sendmsg`/`recvmsg` (no crate of the field
//! does this exchange; it is a few lines over the system calls), tested in this module and
//! end to end by `tests/it/upgrade.rs`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paz_core::RouteTable;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// The version of the exchange; a successor speaking another is refused.
pub const PROTOCOL: u32 = 1;

/// The most sockets handed over.
const MAX_SOCKETS: usize = 16;

/// The successor's first line.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL`].
    pub protocol: u32,
    /// The successor's process id (for the logs).
    pub pid: u32,
}

/// What the running server hands over besides its sockets.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Handover {
    /// [`PROTOCOL`].
    pub protocol: u32,
    /// The names of the sockets, in the order they were sent.
    pub sockets: Vec<String>,
    /// The router's route table.
    pub routes: RouteTable,
    /// The certificates its TLS listener serves.
    pub certificates: Vec<HandedCertificate>,
}

/// A certificate as handed over.
#[derive(Clone, Serialize, Deserialize)]
pub struct HandedCertificate {
    /// The names it is served for.
    pub names: Vec<String>,
    /// Its chain, PEM.
    pub chain_pem: String,
    /// Its key, PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for HandedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandedCertificate")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl From<paz_proxy::CertificatePem> for HandedCertificate {
    fn from(c: paz_proxy::CertificatePem) -> Self {
        HandedCertificate {
            names: c.names,
            chain_pem: c.chain_pem,
            key_pem: c.key_pem,
        }
    }
}

impl From<HandedCertificate> for paz_proxy::CertificatePem {
    fn from(c: HandedCertificate) -> Self {
        paz_proxy::CertificatePem {
            names: c.names,
            chain_pem: c.chain_pem,
            key_pem: c.key_pem,
        }
    }
}

/// Listening sockets by name (`api`, `router`, `tls`, …): taken over from a predecessor or
/// bound here, and kept (as duplicates) so that they can be handed to a successor.
#[derive(Default)]
pub struct Sockets {
    inherited: Mutex<HashMap<String, OwnedFd>>,
    held: Mutex<Vec<(String, OwnedFd)>>,
}

impl std::fmt::Debug for Sockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sockets")
            .field(
                "inherited",
                &lock(&self.inherited).keys().collect::<Vec<_>>(),
            )
            .field(
                "held",
                &lock(&self.held).iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sockets {
    /// No socket yet: each is bound when asked for.
    pub fn new() -> Arc<Sockets> {
        Arc::default()
    }

    /// The sockets a predecessor handed over, by name.
    pub fn inherited(sockets: Vec<(String, OwnedFd)>) -> Arc<Sockets> {
        Arc::new(Sockets {
            inherited: Mutex::new(sockets.into_iter().collect()),
            held: Mutex::default(),
        })
    }

    /// Whether a socket of that name was handed over and not taken yet.
    pub fn has_inherited(&self, name: &str) -> bool {
        lock(&self.inherited).contains_key(name)
    }

    /// The TCP listener `name`: the one handed over (which must listen on `address`, or on
    /// any port when `address`'s port is 0), else a new one bound on `address`.
    pub async fn tcp(
        &self,
        name: &str,
        address: SocketAddr,
    ) -> Result<tokio::net::TcpListener, ConfigError> {
        let listener = match self.take(name) {
            Some(fd) => {
                let listener = std::net::TcpListener::from(fd);
                check_address(name, listener.local_addr()?, address)?;
                listener.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(listener)?
            }
            None => tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| listen_error(name, address, source))?,
        };
        self.hold(name, listener.as_fd())?;
        Ok(listener)
    }

    /// The TCP listener `name` if it was handed over, whatever its address.
    pub fn inherited_tcp(
        &self,
        name: &str,
    ) -> Result<Option<tokio::net::TcpListener>, ConfigError> {
        let Some(fd) = self.take(name) else {
            return Ok(None);
        };
        let listener = std::net::TcpListener::from(fd);
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        self.hold(name, listener.as_fd())?;
        Ok(Some(listener))
    }

    /// The UDP socket `name`: the one handed over, else a new one bound on `address`.
    pub async fn udp(
        &self,
        name: &str,
        address: SocketAddr,
    ) -> Result<tokio::net::UdpSocket, ConfigError> {
        let socket = match self.take(name) {
            Some(fd) => {
                let socket = std::net::UdpSocket::from(fd);
                check_address(name, socket.local_addr()?, address)?;
                socket.set_nonblocking(true)?;
                tokio::net::UdpSocket::from_std(socket)?
            }
            None => tokio::net::UdpSocket::bind(address)
                .await
                .map_err(|source| listen_error(name, address, source))?,
        };
        self.hold(name, socket.as_fd())?;
        Ok(socket)
    }

    /// The upgrade socket at `path`: the one handed over, else a new one. A stale socket
    /// file (no server answers on it) is replaced; one a server answers on is refused.
    pub fn upgrade_listener(&self, path: &Path) -> Result<UnixListener, ConfigError> {
        let listener = match self.take(UPGRADE) {
            Some(fd) => UnixListener::from(fd),
            None => {
                if path.exists() {
                    if UnixStream::connect(path).is_ok() {
                        return Err(ConfigError::AlreadyRunning { path: path.into() });
                    }
                    std::fs::remove_file(path)?;
                }
                let listener = UnixListener::bind(path)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                listener
            }
        };
        self.hold(UPGRADE, listener.as_fd())?;
        Ok(listener)
    }

    fn take(&self, name: &str) -> Option<OwnedFd> {
        lock(&self.inherited).remove(name)
    }

    fn hold(&self, name: &str, fd: BorrowedFd<'_>) -> Result<(), ConfigError> {
        let copy = fd.try_clone_to_owned()?;
        let mut held = lock(&self.held);
        held.retain(|(n, _)| n != name);
        held.push((name.to_owned(), copy));
        Ok(())
    }

    /// The names of the sockets held, in order.
    pub fn names(&self) -> Vec<String> {
        lock(&self.held).iter().map(|(n, _)| n.clone()).collect()
    }
}

/// The API's listener (`--api-listen`).
pub const API: &str = "api";
/// The router's plain-HTTP listener (`--router-listen`).
pub const ROUTER: &str = "router";
/// The router's HTTPS listener (`--tls-listen`).
pub const TLS: &str = "tls";
/// The unauthenticated metrics listener (`--metrics-listen`).
pub const METRICS: &str = "metrics";
/// The router's listener for `<service>.paz` on the gateway (port 80).
pub const INTERNAL_HTTP: &str = "internal-http";
/// The name server for `<service>.paz` on the gateway (port 53).
pub const INTERNAL_DNS: &str = "internal-dns";
/// The upgrade socket itself.
const UPGRADE: &str = "upgrade";

/// The setting that chooses where socket `name` listens, for messages.
fn setting_of(name: &str) -> &'static str {
    match name {
        API => "--api-listen",
        ROUTER => "--router-listen",
        TLS => "--tls-listen",
        METRICS => "--metrics-listen",
        INTERNAL_HTTP | INTERNAL_DNS => "--internal-names",
        _ => "--data-dir",
    }
}

fn listen_error(name: &str, address: SocketAddr, source: std::io::Error) -> ConfigError {
    ConfigError::Listen {
        setting: setting_of(name).into(),
        address,
        source,
    }
}

fn check_address(name: &str, running: SocketAddr, wanted: SocketAddr) -> Result<(), ConfigError> {
    let same_ip = running.ip() == wanted.ip();
    let same_port = wanted.port() == 0 || running.port() == wanted.port();
    if same_ip && same_port {
        return Ok(());
    }
    Err(ConfigError::SocketMismatch {
        setting: setting_of(name).into(),
        running: running.to_string(),
        wanted,
    })
}

/// The path of the upgrade socket of a data dir.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("upgrade.sock")
}

/// How long a successor waits for each step of the running server's answer.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running server being taken over: what it handed over, and the stream to tell it that
/// the successor routes.
#[derive(Debug)]
pub struct Predecessor {
    stream: UnixStream,
    /// Its sockets.
    pub sockets: Arc<Sockets>,
    /// Its route table.
    pub routes: RouteTable,
    /// Its certificates.
    pub certificates: Vec<paz_proxy::CertificatePem>,
}

/// Connects to the server running with the upgrade socket at `path` and takes its sockets,
/// route table and certificates. Nothing changes for the running server until
/// [`Predecessor::routing`].
pub async fn take_over(path: &Path) -> Result<Predecessor, ConfigError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || take_over_blocking(&path))
        .await
        .map_err(|e| ConfigError::Upgrade(std::io::Error::other(e)))?
}

fn take_over_blocking(path: &Path) -> Result<Predecessor, ConfigError> {
    let mut stream =
        UnixStream::connect(path).map_err(|source| ConfigError::NoServerToTakeOver {
            path: path.into(),
            source,
        })?;
    stream.set_read_timeout(Some(STEP_TIMEOUT))?;
    let hello = Hello {
        protocol: PROTOCOL,
        pid: std::process::id(),
    };
    writeln!(stream, "{}", serde_json::to_string(&hello)?)?;
    let fds = receive_fds(&stream)?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    if line.is_empty() {
        return Err(ConfigError::UpgradeRefused(
            "the running server closed the exchange".into(),
        ));
    }
    if let Some(reason) = line.strip_prefix("refused ") {
        return Err(ConfigError::UpgradeRefused(reason.trim().to_owned()));
    }
    let handover: Handover = serde_json::from_str(&line)?;
    if handover.protocol != PROTOCOL {
        return Err(ConfigError::UpgradeRefused(format!(
            "the running server speaks upgrade protocol {}, this one {PROTOCOL}",
            handover.protocol
        )));
    }
    if handover.sockets.len() != fds.len() {
        return Err(ConfigError::UpgradeRefused(format!(
            "{} sockets named, {} received",
            handover.sockets.len(),
            fds.len()
        )));
    }
    let sockets = Sockets::inherited(handover.sockets.into_iter().zip(fds).collect());
    Ok(Predecessor {
        stream,
        sockets,
        routes: handover.routes,
        certificates: handover.certificates.into_iter().map(Into::into).collect(),
    })
}

impl Predecessor {
    /// Tells the running server that this process routes now: it stops accepting, drains
    /// and exits. Then waits (at most `timeout`) until it has exited, so that its store is
    /// free; returns whether it did in time.
    pub async fn routing(self, timeout: Duration) -> Result<bool, ConfigError> {
        let mut stream = self.stream;
        tokio::task::spawn_blocking(move || {
            stream.write_all(b"routing\n")?;
            stream.set_read_timeout(Some(timeout))?;
            // The stream ends when the old process exits (nothing more is sent).
            let mut rest = Vec::new();
            match stream.read_to_end(&mut rest) {
                Ok(_) => Ok(true),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    Ok(false)
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
        .map_err(|e| ConfigError::Upgrade(std::io::Error::other(e)))?
    }
}

/// What a running server hands over: its sockets and, at the moment of the request, its
/// route table and certificates.
pub trait HandoverSource: Send + Sync {
    /// The route table and certificates served now.
    fn snapshot(&self) -> (RouteTable, Vec<paz_proxy::CertificatePem>);
}

impl HandoverSource for paz_proxy::Router {
    fn snapshot(&self) -> (RouteTable, Vec<paz_proxy::CertificatePem>) {
        (self.route_table(), self.certificates())
    }
}

/// Serves upgrade requests on `listener` until a successor takes over (then returns
/// `true`: the caller shuts down) or `shutdown` turns true (`false`). One request at a
/// time; a request that fails or that the successor abandons changes nothing.
pub async fn serve_upgrades(
    listener: UnixListener,
    sockets: Arc<Sockets>,
    source: Option<Arc<dyn HandoverSource>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> bool {
    if let Err(error) = listener.set_nonblocking(true) {
        tracing::error!(%error, "the upgrade socket is unusable: upgrades are off");
        return false;
    }
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "the upgrade socket is unusable: upgrades are off");
            return false;
        }
    };
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|s| *s) => return false,
        };
        let stream = match accepted.and_then(|(s, _)| s.into_std()) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "upgrade socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (sockets, source) = (sockets.clone(), source.clone());
        let exchange =
            tokio::task::spawn_blocking(move || hand_over(stream, &sockets, source.as_deref()));
        match exchange.await {
            Ok(Ok(pid)) => {
                tracing::info!(successor = pid, "a successor routes now: stopping");
                return true;
            }
            Ok(Err(error)) => tracing::warn!(%error, "upgrade abandoned: serving on"),
            Err(error) => tracing::error!(%error, "upgrade exchange panicked: serving on"),
        }
    }
}

/// The running server's side of one exchange; the successor's pid once it routes.
fn hand_over(
    mut stream: UnixStream,
    sockets: &Sockets,
    source: Option<&dyn HandoverSource>,
) -> Result<u32, ConfigError> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(STEP_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let hello: Hello = serde_json::from_str(&line)?;
    if hello.protocol != PROTOCOL {
        let reason = format!(
            "this server speaks upgrade protocol {PROTOCOL}, the successor {}",
            hello.protocol
        );
        let _ = send_fds(&stream, &[]);
        let _ = writeln!(stream, "refused {reason}");
        return Err(ConfigError::UpgradeRefused(reason));
    }
    tracing::info!(
        successor = hello.pid,
        "handing the sockets over to a successor"
    );
    let held = lock(&sockets.held);
    let names: Vec<String> = held.iter().map(|(n, _)| n.clone()).collect();
    let fds: Vec<BorrowedFd<'_>> = held.iter().map(|(_, fd)| fd.as_fd()).collect();
    send_fds(&stream, &fds)?;
    drop(fds);
    drop(held);
    let (routes, certificates) = source.map(|s| s.snapshot()).unwrap_or_default();
    let handover = Handover {
        protocol: PROTOCOL,
        sockets: names,
        routes,
        certificates: certificates.into_iter().map(Into::into).collect(),
    };
    writeln!(stream, "{}", serde_json::to_string(&handover)?)?;
    // The successor sets up its router; that may take a while (reading certificates…).
    stream.set_read_timeout(Some(STEP_TIMEOUT))?;
    line.clear();
    reader.read_line(&mut line)?;
    if line.trim() != "routing" {
        return Err(ConfigError::UpgradeRefused(
            "the successor stopped before routing".into(),
        ));
    }
    // The stream stays open until this process exits: the successor waits for that.
    std::mem::forget(stream);
    Ok(hello.pid)
}

/// Sends one byte carrying `fds`.
fn send_fds(stream: &UnixStream, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if fds.len() > MAX_SOCKETS || !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other("too many sockets to hand over"));
    }
    sendmsg(
        stream,
        &[std::io::IoSlice::new(b"F")],
        &mut control,
        SendFlags::empty(),
    )?;
    Ok(())
}

/// Receives the byte carrying the sockets.
fn receive_fds(stream: &UnixStream) -> std::io::Result<Vec<OwnedFd>> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let received = recvmsg(
        stream,
        &mut [std::io::IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    if received.bytes != 1 || byte[0] != b'F' {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the running server closed the exchange",
        ));
    }
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[tokio::test]
    async fn sockets_routes_and_certificates_move_to_the_successor() {
        let dir = dir();
        let path = socket_path(dir.path());
        let old = Sockets::new();
        let api = old
            .tcp("api", "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let api_address = api.local_addr().unwrap();
        let dns = old
            .udp("dns", "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let upgrade = old.upgrade_listener(&path).unwrap();
        assert!(matches!(
            Sockets::new().upgrade_listener(&path),
            Err(ConfigError::AlreadyRunning { .. })
        ));
        let router = paz_proxy::Router::new(Default::default());
        let mut table = RouteTable::default();
        table.routes.insert(
            "web.localhost".into(),
            paz_core::route::Route {
                backends: [("127.0.0.1:9".to_owned(), Default::default())].into(),
                ..paz_core::route::Route::new("web")
            },
        );
        router.apply_table(&table).unwrap();
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let serving = tokio::spawn(serve_upgrades(
            upgrade,
            old.clone(),
            Some(router.clone() as Arc<dyn HandoverSource>),
            shutdown,
        ));

        let successor = take_over(&path).await.unwrap();
        assert_eq!(successor.routes, table);
        let new = successor.sockets.clone();
        // The same socket: a connection made now is accepted by the successor's copy.
        let api2 = new.tcp("api", api_address).await.unwrap();
        assert_eq!(api2.local_addr().unwrap(), api_address);
        let client = tokio::net::TcpStream::connect(api_address);
        let (client, accepted) = tokio::join!(client, api2.accept());
        client.unwrap();
        accepted.unwrap();
        let dns2 = new.udp("dns", dns.local_addr().unwrap()).await.unwrap();
        assert_eq!(dns2.local_addr().unwrap(), dns.local_addr().unwrap());
        // A socket at another address than configured is refused by name.
        let other = Sockets::inherited(vec![(
            "router".into(),
            std::net::TcpListener::bind("127.0.0.1:0").unwrap().into(),
        )]);
        let err = other
            .tcp("router", "127.0.0.2:80".parse().unwrap())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("listens on 127.0.0.1:")
                && err.to_string().contains("for --router-listen"),
            "{err}"
        );
        assert!(new.has_inherited("upgrade"));
        let new_upgrade = new.upgrade_listener(&path).unwrap();
        drop(new_upgrade);
        // `routing` ends the old server's upgrade loop with "taken over".
        let waiting = tokio::spawn(successor.routing(Duration::from_millis(200)));
        assert!(serving.await.unwrap());
        drop(stop);
        // This process does not exit, so the stream stays open: not gone in time.
        assert!(!waiting.await.unwrap().unwrap());
    }

    #[tokio::test]
    async fn an_abandoned_upgrade_changes_nothing() {
        let dir = dir();
        let path = socket_path(dir.path());
        let old = Sockets::new();
        let _api = old
            .tcp("api", "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let upgrade = old.upgrade_listener(&path).unwrap();
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let serving = tokio::spawn(serve_upgrades(upgrade, old.clone(), None, shutdown));
        // A successor that takes the sockets and goes away before routing.
        let successor = take_over(&path).await.unwrap();
        drop(successor);
        // Garbage instead of a hello.
        let mut junk = UnixStream::connect(&path).unwrap();
        junk.write_all(b"{not json\n").unwrap();
        drop(junk);
        // The old server still serves upgrades, and stops on shutdown without a successor.
        let again = take_over(&path).await.unwrap();
        assert!(again.sockets.has_inherited("api"));
        drop(again);
        stop.send(true).unwrap();
        assert!(!serving.await.unwrap());
    }

    #[tokio::test]
    async fn taking_over_with_nobody_running_says_so() {
        let dir = dir();
        let err = take_over(&socket_path(dir.path())).await.unwrap_err();
        assert!(err.to_string().contains("no running paz-server"), "{err}");
    }
}

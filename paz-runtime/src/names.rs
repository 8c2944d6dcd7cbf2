//! The internal name server: answers `<service>.paz` with the address where the router's
//! internal listener runs (the Paz network's gateway), and relays every other query to the
//! host's resolver. Containers get it as their DNS server; Docker's embedded resolver still
//! answers container names and forwards the rest here. Traffic to `<service>.paz` thus goes
//! through the router, so draining and retries apply to internal calls too (the 2015 Paz did
//! the same with dnsmasq + HAProxy).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::watch;

use paz_core::route::INTERNAL_SUFFIX;

/// Time to live of the answers, in seconds (short: the router address rarely changes).
const TTL: u32 = 5;
/// How long an upstream resolver may take.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// A running name server.
pub struct NameServer {
    socket: Arc<UdpSocket>,
    answer: Ipv4Addr,
    upstream: Option<SocketAddr>,
}

impl NameServer {
    /// Serves on `socket`, answering internal names with `answer` and relaying other
    /// queries to `upstream` (when `None`, they get SERVFAIL).
    pub fn new(socket: UdpSocket, answer: Ipv4Addr, upstream: Option<SocketAddr>) -> Self {
        NameServer {
            socket: Arc::new(socket),
            answer,
            upstream,
        }
    }

    /// The first usable `nameserver` of `/etc/resolv.conf`.
    pub fn system_upstream() -> Option<SocketAddr> {
        let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
        text.lines()
            .filter_map(|line| line.trim().strip_prefix("nameserver"))
            .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
            .next()
    }

    /// Answers queries until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut buffer = [0u8; 1500];
        loop {
            let (len, peer) = tokio::select! {
                received = self.socket.recv_from(&mut buffer) => match received {
                    Ok(received) => received,
                    Err(error) => {
                        tracing::warn!(%error, "dns receive failed");
                        continue;
                    }
                },
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let query = buffer[..len].to_vec();
            match answer_internal(&query, self.answer) {
                Some(reply) => {
                    let _ = self.socket.send_to(&reply, peer).await;
                }
                None => {
                    let socket = Arc::clone(&self.socket);
                    let upstream = self.upstream;
                    tokio::spawn(async move {
                        let reply = match upstream {
                            Some(upstream) => relay(&query, upstream).await,
                            None => None,
                        };
                        let reply = reply.or_else(|| failure(&query, 2));
                        if let Some(reply) = reply {
                            let _ = socket.send_to(&reply, peer).await;
                        }
                    });
                }
            }
        }
    }
}

async fn relay(query: &[u8], upstream: SocketAddr) -> Option<Vec<u8>> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let socket = UdpSocket::bind(bind).await.ok()?;
    socket.send_to(query, upstream).await.ok()?;
    let mut buffer = vec![0u8; 4096];
    let len = tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv(&mut buffer))
        .await
        .ok()?
        .ok()?;
    buffer.truncate(len);
    // Only relay the answer to this query.
    (buffer.len() >= 2 && buffer[..2] == query[..2]).then_some(buffer)
}

/// The question of a query: its name (lowercase, without the final dot), type and where
/// the question section ends.
fn question(query: &[u8]) -> Option<(String, u16, usize)> {
    if query.len() < 12 || query[2] & 0x80 != 0 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(
            std::str::from_utf8(query.get(at..at + len)?)
                .ok()?
                .to_ascii_lowercase(),
        );
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    Some((labels.join("."), qtype, at + 4))
}

/// The answer to a query for an internal name, or `None` for other names.
pub fn answer_internal(query: &[u8], address: Ipv4Addr) -> Option<Vec<u8>> {
    let (name, qtype, end) = question(query)?;
    let internal = name
        .strip_suffix(INTERNAL_SUFFIX)
        .is_some_and(|service| !service.is_empty());
    if !internal {
        return None;
    }
    let mut reply = query[..end].to_vec();
    // QR, opcode from the query, AA, RD copied, RA; NOERROR.
    reply[2] = 0x84 | (query[2] & 0x01);
    reply[3] = 0x80;
    let answers: u16 = if qtype == 1 || qtype == 255 { 1 } else { 0 };
    reply[6..8].copy_from_slice(&answers.to_be_bytes());
    reply[8..12].fill(0);
    if answers == 1 {
        reply.extend_from_slice(&[0xc0, 0x0c]); // the name, by pointer to the question
        reply.extend_from_slice(&1u16.to_be_bytes()); // A
        reply.extend_from_slice(&1u16.to_be_bytes()); // IN
        reply.extend_from_slice(&TTL.to_be_bytes());
        reply.extend_from_slice(&4u16.to_be_bytes());
        reply.extend_from_slice(&address.octets());
    }
    Some(reply)
}

/// An empty answer with `rcode` (2 = SERVFAIL).
fn failure(query: &[u8], rcode: u8) -> Option<Vec<u8>> {
    let (_, _, end) = question(query)?;
    let mut reply = query[..end].to_vec();
    reply[2] = 0x80 | (query[2] & 0x01);
    reply[3] = 0x80 | rcode;
    reply[6..12].fill(0);
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    #[test]
    fn answers_internal_names_only() {
        let ip = Ipv4Addr::new(172, 30, 0, 1);
        let reply = answer_internal(&query("Web.PAZ", 1), ip).expect("internal");
        assert_eq!(&reply[..2], &[0x12, 0x34]);
        assert_eq!(u16::from_be_bytes([reply[6], reply[7]]), 1, "one answer");
        assert_eq!(&reply[reply.len() - 4..], &ip.octets());
        let aaaa = answer_internal(&query("web.paz", 28), ip).unwrap();
        assert_eq!(
            u16::from_be_bytes([aaaa[6], aaaa[7]]),
            0,
            "no AAAA record, NOERROR"
        );
        assert!(answer_internal(&query("example.com", 1), ip).is_none());
        assert!(answer_internal(&query("paz", 1), ip).is_none());
        assert!(
            answer_internal(&[0u8; 5], ip).is_none(),
            "garbage is ignored"
        );
    }

    #[tokio::test]
    async fn relays_other_names_upstream() {
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buffer = [0u8; 512];
            let (len, peer) = upstream.recv_from(&mut buffer).await.unwrap();
            let mut reply = buffer[..len].to_vec();
            reply[2] |= 0x80;
            reply.push(0xAB);
            upstream.send_to(&reply, peer).await.unwrap();
        });
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server_addr = socket.local_addr().unwrap();
        let (stop, receiver) = watch::channel(false);
        let task = tokio::spawn(
            NameServer::new(socket, Ipv4Addr::LOCALHOST, Some(upstream_addr)).run(receiver),
        );
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buffer = [0u8; 512];
        client
            .send_to(&query("web.paz", 1), server_addr)
            .await
            .unwrap();
        let len = client.recv(&mut buffer).await.unwrap();
        assert_eq!(&buffer[len - 4..len], &[127, 0, 0, 1]);
        client
            .send_to(&query("example.com", 1), server_addr)
            .await
            .unwrap();
        let len = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buffer))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buffer[len - 1], 0xAB, "the upstream answer is relayed");
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}

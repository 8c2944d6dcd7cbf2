//! The internal name server: answers `<service>.paz` with the address where the router's
//! internal listener runs (the Paz network's gateway), and relays every other query to the
//! host's resolver. Containers get it as their DNS server; Docker's embedded resolver still
//! answers container names and forwards the rest here. Traffic to `<service>.paz` thus goes
//! through the router, so draining and retries apply to internal calls too (the 2015 Paz did
//! the same with dnsmasq + HAProxy).
//!
//! It is exposed to every container, so it is built to take anything: messages are parsed and
//! written by `hickory-proto` (no hand-written wire code), a datagram that does not parse is
//! dropped, only clients on the Paz network's subnet are answered, relays in flight are
//! bounded (past the bound a query gets SERVFAIL at once instead of a socket), and a relayed
//! answer is accepted only from the upstream (connected socket) with the query's id and
//! question.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, watch};

use paz_core::route::INTERNAL_SUFFIX;

/// Time to live of the answers, in seconds (short: the router address rarely changes).
const TTL: u32 = 5;
/// How long an upstream resolver may take.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// How many queries may be relayed at once (each holds one socket until answered or timed
/// out).
pub const MAX_RELAYS_IN_FLIGHT: usize = 256;
/// The largest answer relayed.
const MAX_ANSWER: usize = 4096;

/// A name server, ready to [`run`](NameServer::run). Cheap to clone (the clones share the
/// socket), so a supervisor can start it again.
#[derive(Clone)]
pub struct NameServer {
    socket: Arc<UdpSocket>,
    answer: Ipv4Addr,
    upstream: Option<SocketAddr>,
    clients: Option<(Ipv4Addr, u8)>,
    relays: Arc<Semaphore>,
}

/// What to do with one datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Handling {
    /// Send this answer.
    Answer(Vec<u8>),
    /// Relay the query upstream; the answer must carry this id and question.
    Relay {
        /// The query's id.
        id: u16,
        /// Its question.
        question: Query,
    },
    /// Not a query worth an answer (garbage, a response): send nothing.
    Drop,
}

impl NameServer {
    /// Serves on `socket`, answering internal names with `answer` and relaying other
    /// queries to `upstream` (when `None`, they get SERVFAIL).
    pub fn new(socket: UdpSocket, answer: Ipv4Addr, upstream: Option<SocketAddr>) -> Self {
        NameServer {
            socket: Arc::new(socket),
            answer,
            upstream,
            clients: None,
            relays: Arc::new(Semaphore::new(MAX_RELAYS_IN_FLIGHT)),
        }
    }

    /// Answers only clients in `network/prefix` (the Paz network's subnet); others get no
    /// answer at all.
    pub fn allow_clients(mut self, network: Ipv4Addr, prefix: u8) -> Self {
        self.clients = Some((network, prefix.min(32)));
        self
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

    fn allowed(&self, peer: SocketAddr) -> bool {
        let Some((network, prefix)) = self.clients else {
            return true;
        };
        let IpAddr::V4(ip) = peer.ip() else {
            return false;
        };
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        u32::from(ip) & mask == u32::from(network) & mask
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
            if !self.allowed(peer) {
                tracing::debug!(%peer, "dns query from outside the Paz network ignored");
                continue;
            }
            let query = &buffer[..len];
            match handle(query, self.answer) {
                Handling::Answer(reply) => {
                    let _ = self.socket.send_to(&reply, peer).await;
                }
                Handling::Drop => {}
                Handling::Relay { id, question } => {
                    let (Some(upstream), Ok(permit)) =
                        (self.upstream, self.relays.clone().try_acquire_owned())
                    else {
                        // No upstream, or too many relays in flight: fail this one now.
                        if let Some(reply) = failure(id, &question, ResponseCode::ServFail) {
                            let _ = self.socket.send_to(&reply, peer).await;
                        }
                        continue;
                    };
                    let socket = Arc::clone(&self.socket);
                    let query = query.to_vec();
                    tokio::spawn(async move {
                        let _permit = permit;
                        let reply = match relay(&query, id, &question, upstream).await {
                            Some(reply) => Some(reply),
                            None => failure(id, &question, ResponseCode::ServFail),
                        };
                        if let Some(reply) = reply {
                            let _ = socket.send_to(&reply, peer).await;
                        }
                    });
                }
            }
        }
    }
}

/// Decides what to do with one datagram: answer an internal name, relay any other query,
/// drop what is not a query.
pub fn handle(datagram: &[u8], address: Ipv4Addr) -> Handling {
    let Ok(message) = Message::from_vec(datagram) else {
        return Handling::Drop;
    };
    let header = &message.metadata;
    if header.message_type != MessageType::Query {
        return Handling::Drop;
    }
    let [question] = message.queries.as_slice() else {
        return error_reply(&message, ResponseCode::FormErr);
    };
    if header.op_code != OpCode::Query {
        return error_reply(&message, ResponseCode::NotImp);
    }
    if !is_internal(question) {
        return Handling::Relay {
            id: header.id,
            question: question.clone(),
        };
    }
    let mut reply = Message::response(header.id, OpCode::Query);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = header.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(question.clone());
    let wants_a = matches!(question.query_type(), RecordType::A | RecordType::ANY);
    if wants_a && question.query_class() == DNSClass::IN {
        reply.add_answer(Record::from_rdata(
            question.name().clone(),
            TTL,
            RData::A(A(address)),
        ));
    }
    match reply.to_vec() {
        Ok(bytes) => Handling::Answer(bytes),
        Err(_) => Handling::Drop,
    }
}

/// Whether the question asks for `<service>.paz`.
fn is_internal(question: &Query) -> bool {
    let name = question.name().to_lowercase().to_ascii();
    let name = name.trim_end_matches('.');
    name.strip_suffix(INTERNAL_SUFFIX)
        .is_some_and(|service| !service.is_empty())
}

fn error_reply(query: &Message, code: ResponseCode) -> Handling {
    let mut reply = Message::error_msg(query.metadata.id, query.metadata.op_code, code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    for question in query.queries.iter().take(1) {
        reply.add_query(question.clone());
    }
    reply.to_vec().map_or(Handling::Drop, Handling::Answer)
}

/// An answer with no records and `code`.
fn failure(id: u16, question: &Query, code: ResponseCode) -> Option<Vec<u8>> {
    let mut reply = Message::error_msg(id, OpCode::Query, code);
    reply.metadata.recursion_available = true;
    reply.add_query(question.clone());
    reply.to_vec().ok()
}

/// Asks `upstream` on a socket connected to it (the kernel drops datagrams from anyone
/// else), and accepts only an answer to this query: same id, a response, the same question.
async fn relay(query: &[u8], id: u16, question: &Query, upstream: SocketAddr) -> Option<Vec<u8>> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await.ok()?;
    socket.connect(upstream).await.ok()?;
    socket.send(query).await.ok()?;
    let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
    let mut buffer = vec![0u8; MAX_ANSWER];
    loop {
        let len = tokio::time::timeout_at(deadline, socket.recv(&mut buffer))
            .await
            .ok()?
            .ok()?;
        let answer = &buffer[..len];
        if is_answer_to(answer, id, question) {
            return Some(answer.to_vec());
        }
        tracing::debug!(%upstream, "dns answer that does not match its query ignored");
    }
}

/// Whether `answer` is the response to the query `id` asking `question`.
fn is_answer_to(answer: &[u8], id: u16, question: &Query) -> bool {
    let Ok(message) = Message::from_vec(answer) else {
        return false;
    };
    let same_question = |q: &Query| {
        q.query_type() == question.query_type()
            && q.query_class() == question.query_class()
            && q.name().to_lowercase() == question.name().to_lowercase()
    };
    message.metadata.id == id
        && message.metadata.message_type == MessageType::Response
        && message.queries.len() == 1
        && same_question(&message.queries[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;
    use proptest::prelude::*;

    fn query(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        message.to_vec().unwrap()
    }

    fn answers(reply: &Handling) -> Vec<Record> {
        match reply {
            Handling::Answer(bytes) => Message::from_vec(bytes).unwrap().answers,
            other => panic!("not an answer: {other:?}"),
        }
    }

    #[test]
    fn answers_internal_names_only() {
        let ip = Ipv4Addr::new(172, 30, 0, 1);
        let reply = handle(&query("Web.PAZ.", RecordType::A), ip);
        let Handling::Answer(bytes) = &reply else {
            panic!("{reply:?}")
        };
        let message = Message::from_vec(bytes).unwrap();
        assert_eq!(message.metadata.id, 0x1234);
        assert!(message.metadata.authoritative);
        assert_eq!(message.answers.len(), 1, "one answer");
        assert_eq!(message.answers[0].data, RData::A(A(ip)));
        assert!(
            answers(&handle(&query("web.paz", RecordType::AAAA), ip)).is_empty(),
            "no AAAA record, NOERROR"
        );
        assert!(matches!(
            handle(&query("example.com", RecordType::A), ip),
            Handling::Relay { id: 0x1234, .. }
        ));
        assert!(matches!(
            handle(&query("paz", RecordType::A), ip),
            Handling::Relay { .. }
        ));
        // The defect of the hand-written parser: a short datagram (no QCLASS) killed the
        // server. Now it, and every other malformed datagram, is dropped.
        let mut short = query("web.paz", RecordType::A);
        short.truncate(short.len() - 2);
        assert_eq!(handle(&short, ip), Handling::Drop);
        assert_eq!(handle(&[0u8; 5], ip), Handling::Drop);
        // A response is never answered (no reflection loops).
        let mut response = Message::from_vec(&query("web.paz", RecordType::A)).unwrap();
        response.metadata.message_type = MessageType::Response;
        assert_eq!(handle(&response.to_vec().unwrap(), ip), Handling::Drop);
    }

    #[test]
    fn only_the_answer_to_the_query_is_relayed() {
        let question = Query::query(Name::from_ascii("example.com.").unwrap(), RecordType::A);
        let answer = |id, name: &str| {
            let mut m = Message::response(id, OpCode::Query);
            m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
            m.to_vec().unwrap()
        };
        assert!(is_answer_to(&answer(7, "Example.COM."), 7, &question));
        assert!(
            !is_answer_to(&answer(8, "example.com."), 7, &question),
            "other id"
        );
        assert!(
            !is_answer_to(&answer(7, "evil.example."), 7, &question),
            "other question"
        );
        assert!(!is_answer_to(
            &query("example.com.", RecordType::A),
            0x1234,
            &question
        ));
        assert!(!is_answer_to(b"\x00\x07", 7, &question));
    }

    proptest! {
        /// Arbitrary bytes never panic the handler, and an answer it sends always parses.
        #[test]
        fn arbitrary_datagrams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Handling::Answer(reply) = handle(&bytes, Ipv4Addr::LOCALHOST) {
                prop_assert!(Message::from_vec(&reply).is_ok());
            }
        }

        /// Mutations of a valid internal query never panic either.
        #[test]
        fn mutated_queries_never_panic(at in 0usize..40, value in any::<u8>(), cut in 0usize..40) {
            let mut bytes = query("web.paz", RecordType::A);
            let at = at % bytes.len();
            bytes[at] = value;
            bytes.truncate(bytes.len().saturating_sub(cut % 8));
            let _ = handle(&bytes, Ipv4Addr::LOCALHOST);
        }
    }

    async fn server(
        upstream: Option<SocketAddr>,
        clients: Option<(Ipv4Addr, u8)>,
    ) -> (SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let mut names = NameServer::new(socket, Ipv4Addr::LOCALHOST, upstream);
        if let Some((network, prefix)) = clients {
            names = names.allow_clients(network, prefix);
        }
        let (stop, receiver) = watch::channel(false);
        (address, stop, tokio::spawn(names.run(receiver)))
    }

    #[tokio::test]
    async fn relays_other_names_upstream_and_survives_garbage() {
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buffer = [0u8; 512];
            let (len, peer) = upstream.recv_from(&mut buffer).await.unwrap();
            let mut reply = Message::from_vec(&buffer[..len]).unwrap();
            reply.metadata.message_type = MessageType::Response;
            reply.add_answer(Record::from_rdata(
                Name::from_ascii("example.com.").unwrap(),
                60,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 7))),
            ));
            upstream
                .send_to(&reply.to_vec().unwrap(), peer)
                .await
                .unwrap();
        });
        let (server_addr, stop, task) = server(Some(upstream_addr), None).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buffer = [0u8; 512];
        // Garbage first: the server must still answer afterwards.
        for junk in [
            &b"\x00"[..],
            &[0xff; 11],
            &query("web.paz", RecordType::A)[..14],
        ] {
            client.send_to(junk, server_addr).await.unwrap();
        }
        client
            .send_to(&query("web.paz", RecordType::A), server_addr)
            .await
            .unwrap();
        let len = client.recv(&mut buffer).await.unwrap();
        let message = Message::from_vec(&buffer[..len]).unwrap();
        assert_eq!(message.answers[0].data, RData::A(A(Ipv4Addr::LOCALHOST)));
        client
            .send_to(&query("example.com", RecordType::A), server_addr)
            .await
            .unwrap();
        let len = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buffer))
            .await
            .unwrap()
            .unwrap();
        let message = Message::from_vec(&buffer[..len]).unwrap();
        assert_eq!(
            message.answers[0].data,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 7))),
            "the upstream answer is relayed"
        );
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    /// An upstream that never answers: past the bound of relays in flight, queries get
    /// SERVFAIL at once instead of a socket each (≈700 queries/s once exhausted the
    /// process's file descriptors).
    #[tokio::test]
    async fn relays_in_flight_are_bounded() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (server_addr, stop, task) = server(Some(silent.local_addr().unwrap()), None).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let extra = 40;
        for _ in 0..MAX_RELAYS_IN_FLIGHT + extra {
            client
                .send_to(&query("example.com", RecordType::A), server_addr)
                .await
                .unwrap();
        }
        let mut failed = 0;
        let mut buffer = [0u8; 512];
        while let Ok(Ok(len)) =
            tokio::time::timeout(Duration::from_millis(500), client.recv(&mut buffer)).await
        {
            let message = Message::from_vec(&buffer[..len]).unwrap();
            assert_eq!(message.metadata.response_code, ResponseCode::ServFail);
            failed += 1;
        }
        assert!(
            failed >= extra,
            "only {failed} of the {extra} over the bound failed fast"
        );
        assert!(
            failed < MAX_RELAYS_IN_FLIGHT,
            "the bounded ones are still waiting upstream"
        );
        stop.send(true).unwrap();
        task.await.unwrap();
        drop(silent);
    }

    #[tokio::test]
    async fn clients_outside_the_subnet_get_no_answer() {
        let (server_addr, stop, task) = server(None, Some((Ipv4Addr::new(10, 99, 0, 0), 16))).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(&query("web.paz", RecordType::A), server_addr)
            .await
            .unwrap();
        let mut buffer = [0u8; 512];
        let answered =
            tokio::time::timeout(Duration::from_millis(300), client.recv(&mut buffer)).await;
        assert!(answered.is_err(), "127.0.0.1 is not in 10.99.0.0/16");
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}

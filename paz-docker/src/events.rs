//! The Docker events feed of managed containers, as a [`SchedulerEvent`] stream that survives
//! daemon restarts.
//!
//! The state machine, in the manner of kube-runtime's watcher:
//!
//! 1. **Connect**: ping the daemon (after a backoff delay when this is a retry), then open
//!    `GET /events` filtered to `type=container`, `label=paz.managed=true` and the
//!    `start`/`die`/`destroy` actions, with `since` = the time of the last event seen (the
//!    time [`events`](paz_core::scheduler::Scheduler::events) was called, at first), so the
//!    daemon replays what it still has in memory. Events replayed twice are dropped.
//! 2. **Stream**: map each message; `start` → `Started`, `die` → `Exited` (with the exit
//!    code), `destroy` → `Removed`.
//! 3. When the stream errors or ends (the daemon restarted), go back to 1, and after
//!    reconnecting emit [`SchedulerEvent::Resync`] first: the daemon's replay buffer is small
//!    and lost on restart, so consumers must re-list to catch up.
//!
//! The delay between attempts doubles from 250 ms up to 30 s, and resets once a connection
//! has stayed up for 30 s. The stream never ends and never yields an error: failures are
//! logged (tracing) and end in a `Resync`.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{EventsOptions, EventsOptionsBuilder};
use futures_util::{Stream, StreamExt};
use paz_core::scheduler::{EventStream, SchedulerEvent};

use crate::state::{LABEL_CLUSTER, LABEL_MANAGED, LABEL_SERVICE};

/// The first retry delay.
const BACKOFF_START: Duration = Duration::from_millis(250);
/// The longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection up this long counts as healthy: the next failure retries at once.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// How long a reconnect ping may take.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

type Messages = Pin<Box<dyn Stream<Item = Result<EventMessage, bollard::errors::Error>> + Send>>;

/// Exponential backoff with a reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff {
            next: BACKOFF_START,
        }
    }

    /// The delay to wait now; doubles the following one, up to the maximum.
    pub(crate) fn delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }

    pub(crate) fn reset(&mut self) {
        self.next = BACKOFF_START;
    }
}

/// A Docker `since`/`until` value: seconds and nanoseconds since the epoch.
pub(crate) fn docker_time(nanos: i128) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let rest = nanos.rem_euclid(1_000_000_000);
    format!("{secs}.{rest:09}")
}

/// Maps one Docker event message; `None` for events Paz does not care about.
pub(crate) fn map_event(message: &EventMessage, cluster: &str) -> Option<SchedulerEvent> {
    if message.typ != Some(EventMessageTypeEnum::CONTAINER) {
        return None;
    }
    let actor = message.actor.as_ref()?;
    let id = actor.id.clone()?;
    let empty = HashMap::new();
    let attributes = actor.attributes.as_ref().unwrap_or(&empty);
    if attributes.get(LABEL_MANAGED).map(String::as_str) != Some("true")
        || attributes.get(LABEL_CLUSTER).map(String::as_str) != Some(cluster)
    {
        return None;
    }
    let service = attributes.get(LABEL_SERVICE)?.clone();
    match message.action.as_deref()? {
        "start" => Some(SchedulerEvent::Started { id, service }),
        "die" => Some(SchedulerEvent::Exited {
            id,
            service,
            exit_code: attributes.get("exitCode").and_then(|c| c.parse().ok()),
        }),
        "destroy" => Some(SchedulerEvent::Removed { id, service }),
        _ => None,
    }
}

/// Drops events the daemon replays after a reconnect.
#[derive(Debug, Default)]
pub(crate) struct Dedup {
    /// The newest event time seen and the events seen at exactly that time.
    last: Option<(i64, HashSet<String>)>,
}

impl Dedup {
    /// Whether `message` is new; remembers it.
    pub(crate) fn is_new(&mut self, message: &EventMessage) -> bool {
        let Some(time) = message.time_nano else {
            return true;
        };
        let key = format!(
            "{}/{}",
            message
                .actor
                .as_ref()
                .and_then(|a| a.id.as_deref())
                .unwrap_or_default(),
            message.action.as_deref().unwrap_or_default()
        );
        match &mut self.last {
            Some((last, _)) if time < *last => false,
            Some((last, seen)) if time == *last => seen.insert(key),
            _ => {
                self.last = Some((time, HashSet::from([key])));
                true
            }
        }
    }

    /// Where to resume: the newest event time seen.
    pub(crate) fn resume_nanos(&self) -> Option<i128> {
        self.last.as_ref().map(|(t, _)| i128::from(*t))
    }
}

enum Phase {
    Connect,
    Streaming { messages: Messages, since: Instant },
}

struct State {
    docker: Docker,
    /// Only this cluster's containers are followed.
    cluster: String,
    phase: Phase,
    start_nanos: i128,
    dedup: Dedup,
    backoff: Backoff,
    /// A reconnect happened: emit `Resync` once connected again.
    gap: bool,
    /// Whether the next connect attempt waits first.
    retrying: bool,
}

fn options(since: &str, cluster: &str) -> EventsOptions {
    let filters = HashMap::from([
        ("type", vec!["container".to_owned()]),
        (
            "label",
            vec![
                format!("{LABEL_MANAGED}=true"),
                format!("{LABEL_CLUSTER}={cluster}"),
            ],
        ),
        (
            "event",
            vec!["start".to_owned(), "die".to_owned(), "destroy".to_owned()],
        ),
    ]);
    EventsOptionsBuilder::new()
        .since(since)
        .filters(&filters)
        .build()
}

/// The reconnecting event stream; replays from `start` (the time of the call).
pub(crate) fn event_stream(docker: Docker, start: SystemTime, cluster: String) -> EventStream {
    let start_nanos = start
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    let state = State {
        docker,
        cluster,
        phase: Phase::Connect,
        start_nanos,
        dedup: Dedup::default(),
        backoff: Backoff::new(),
        gap: false,
        retrying: false,
    };
    Box::pin(futures_util::stream::unfold(
        state,
        |mut state| async move {
            loop {
                match &mut state.phase {
                    Phase::Connect => {
                        if state.retrying {
                            let delay = state.backoff.delay();
                            tracing::debug!(?delay, "reconnecting to the Docker events stream");
                            tokio::time::sleep(delay).await;
                        }
                        state.retrying = true;
                        match tokio::time::timeout(PING_TIMEOUT, state.docker.ping()).await {
                            Ok(Ok(_)) => {}
                            Ok(Err(error)) => {
                                tracing::warn!(%error, "Docker daemon unreachable; events paused");
                                state.gap = true;
                                continue;
                            }
                            Err(_) => {
                                tracing::warn!("Docker daemon ping timed out; events paused");
                                state.gap = true;
                                continue;
                            }
                        }
                        let since =
                            docker_time(state.dedup.resume_nanos().unwrap_or(state.start_nanos));
                        let messages: Messages =
                            Box::pin(state.docker.events(Some(options(&since, &state.cluster))));
                        state.phase = Phase::Streaming {
                            messages,
                            since: Instant::now(),
                        };
                        if state.gap {
                            state.gap = false;
                            tracing::info!("Docker events stream reconnected; consumers re-list");
                            return Some((Ok(SchedulerEvent::Resync), state));
                        }
                    }
                    Phase::Streaming { messages, since } => {
                        let next = messages.next().await;
                        if since.elapsed() >= HEALTHY_AFTER {
                            state.backoff.reset();
                        }
                        match next {
                            Some(Ok(message)) => {
                                if !state.dedup.is_new(&message) {
                                    continue;
                                }
                                if let Some(event) = map_event(&message, &state.cluster) {
                                    return Some((Ok(event), state));
                                }
                            }
                            Some(Err(error)) => {
                                tracing::warn!(%error, "Docker events stream failed; reconnecting");
                                state.phase = Phase::Connect;
                                state.gap = true;
                            }
                            None => {
                                tracing::info!(
                                    "Docker events stream ended (daemon restart?); reconnecting"
                                );
                                state.phase = Phase::Connect;
                                state.gap = true;
                            }
                        }
                    }
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    fn message(action: &str, id: &str, time: i64, exit: Option<&str>) -> EventMessage {
        let mut attributes = HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_CLUSTER.to_owned(), "c1".to_owned()),
            (LABEL_SERVICE.to_owned(), "web".to_owned()),
        ]);
        if let Some(code) = exit {
            attributes.insert("exitCode".into(), code.into());
        }
        EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some(id.into()),
                attributes: Some(attributes),
            }),
            time_nano: Some(time),
            ..Default::default()
        }
    }

    #[test]
    fn maps_start_die_destroy() {
        assert_eq!(
            map_event(&message("start", "c1", 1, None), "c1"),
            Some(SchedulerEvent::Started {
                id: "c1".into(),
                service: "web".into()
            })
        );
        assert_eq!(
            map_event(&message("die", "c1", 2, Some("137")), "c1"),
            Some(SchedulerEvent::Exited {
                id: "c1".into(),
                service: "web".into(),
                exit_code: Some(137)
            })
        );
        assert_eq!(
            map_event(&message("destroy", "c1", 3, None), "c1"),
            Some(SchedulerEvent::Removed {
                id: "c1".into(),
                service: "web".into()
            })
        );
        assert_eq!(map_event(&message("kill", "c1", 3, None), "c1"), None);
        let mut unmanaged = message("start", "c2", 4, None);
        unmanaged.actor.as_mut().unwrap().attributes = Some(HashMap::new());
        assert_eq!(map_event(&unmanaged, "c1"), None);
        assert_eq!(
            map_event(&message("start", "c1", 5, None), "c2"),
            None,
            "another cluster's events are not this scheduler's"
        );
    }

    #[test]
    fn replayed_events_are_dropped() {
        let mut dedup = Dedup::default();
        assert!(dedup.is_new(&message("start", "a", 10, None)));
        assert!(dedup.is_new(&message("start", "b", 10, None)));
        assert!(!dedup.is_new(&message("start", "a", 10, None)));
        assert!(dedup.is_new(&message("die", "a", 11, None)));
        assert!(!dedup.is_new(&message("start", "b", 10, None)));
        assert_eq!(dedup.resume_nanos(), Some(11));
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut backoff = Backoff::new();
        let delays: Vec<_> = (0..10).map(|_| backoff.delay()).collect();
        assert_eq!(delays[0], Duration::from_millis(250));
        assert_eq!(delays[1], Duration::from_millis(500));
        assert_eq!(*delays.last().unwrap(), BACKOFF_MAX);
        backoff.reset();
        assert_eq!(backoff.delay(), BACKOFF_START);
    }

    /// A fake daemon on loopback: connection by connection, it answers what `script` says.
    /// `/events` answers are newline-delimited JSON events; `keep_open` holds the stream open.
    mod fake {
        use std::sync::{Arc, Mutex};

        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::TcpListener;

        pub enum Reply {
            Ping(u16),
            Events { body: String, keep_open: bool },
        }

        /// Serves `replies` in order (one per connection); returns the address and the
        /// request lines received.
        pub async fn serve(replies: Vec<Reply>) -> (String, Arc<Mutex<Vec<String>>>) {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap().to_string();
            let requests = Arc::new(Mutex::new(Vec::new()));
            let seen = requests.clone();
            tokio::spawn(async move {
                for reply in replies {
                    let (mut socket, _) = listener.accept().await.unwrap();
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if socket.read(&mut byte).await.unwrap() == 0 {
                            break;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let line = head.lines().next().unwrap_or_default().to_owned();
                    seen.lock().unwrap().push(line);
                    let (status, body, keep_open) = match reply {
                        Reply::Ping(status) => (status, "OK".to_owned(), false),
                        Reply::Events { body, keep_open } => (200, body, keep_open),
                    };
                    let response = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{body}"
                    );
                    socket.write_all(response.as_bytes()).await.unwrap();
                    if keep_open {
                        tokio::spawn(async move {
                            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                            drop(socket);
                        });
                    }
                }
            });
            (address, requests)
        }
    }

    fn json(action: &str, id: &str, time_nano: i64, exit: Option<&str>) -> String {
        let exit = exit.map_or(String::new(), |c| format!(r#","exitCode":"{c}""#));
        format!(
            r#"{{"Type":"container","Action":"{action}","Actor":{{"ID":"{id}","Attributes":{{"paz.managed":"true","paz.cluster":"c1","paz.service":"web"{exit}}}}},"scope":"local","time":{},"timeNano":{time_nano}}}"#,
            time_nano / 1_000_000_000
        ) + "\n"
    }

    #[tokio::test]
    async fn reconnects_with_backoff_resyncs_and_resumes_without_duplicates() {
        use fake::Reply;
        let t1 = 1_700_000_000_000_000_001;
        let t2 = 1_700_000_005_000_000_000;
        let (address, requests) = fake::serve(vec![
            Reply::Ping(200),
            // The first connection delivers a start, then the daemon "restarts".
            Reply::Events {
                body: json("start", "c1", t1, None),
                keep_open: false,
            },
            Reply::Ping(500),
            Reply::Ping(200),
            // The replay repeats the start (dropped), then the news.
            Reply::Events {
                body: json("start", "c1", t1, None) + &json("die", "c1", t2, Some("3")),
                keep_open: true,
            },
        ])
        .await;
        let docker = Docker::connect_with_http(
            &format!("http://{address}"),
            5,
            bollard::API_DEFAULT_VERSION,
        )
        .unwrap();
        let start = UNIX_EPOCH + Duration::from_secs(1_699_999_999);
        let mut events = event_stream(docker, start, "c1".into());
        let mut got = Vec::new();
        for _ in 0..3 {
            let event = tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .expect("an event in time")
                .expect("the stream goes on")
                .expect("no error items");
            got.push(event);
        }
        assert_eq!(
            got,
            vec![
                SchedulerEvent::Started {
                    id: "c1".into(),
                    service: "web".into()
                },
                SchedulerEvent::Resync,
                SchedulerEvent::Exited {
                    id: "c1".into(),
                    service: "web".into(),
                    exit_code: Some(3)
                },
            ]
        );
        let requests = requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 5, "{requests:?}");
        assert!(
            requests[1].contains("since=1699999999.000000000"),
            "{}",
            requests[1]
        );
        assert!(
            requests[4].contains("since=1700000000.000000001"),
            "resumes from the last event: {}",
            requests[4]
        );
        assert!(
            requests[4].contains("paz.managed%3Dtrue") && requests[4].contains("paz.cluster%3Dc1"),
            "{}",
            requests[4]
        );
    }

    #[test]
    fn docker_times_have_nanoseconds() {
        assert_eq!(
            docker_time(1_700_000_000_000_000_123),
            "1700000000.000000123"
        );
    }
}

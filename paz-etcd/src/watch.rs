//! Watches that survive disconnects: a task owns the etcd watch stream, delivers its events
//! and, when the stream breaks, watches again from the revision after the last one it
//! delivered (etcd keeps the history until it is compacted), so nothing is lost or repeated.

use std::time::Duration;

use etcd_client::{EventType, WatchOptions, WatchResponse};
use paz_core::Result;
use paz_core::store::{EventKind, Revision, WatchEvent, WatchStream};
use tokio::sync::mpsc;

use crate::{EtcdStore, key_value, store_error};

/// Events waiting for a slow consumer; the task waits (etcd buffers) when it is full.
const BUFFER: usize = 1024;
/// The longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Starts a watch of `prefix` from `from_revision` (`0`: after the current revision). The
/// first watch is made here, so an unreachable etcd is an error of this call.
pub(crate) async fn start(
    store: &EtcdStore,
    prefix: &str,
    from_revision: Revision,
) -> Result<WatchStream> {
    let key = store.full_key(prefix);
    let next = if from_revision == 0 {
        // "From now" is pinned to a revision, so a reconnect before the first event cannot
        // skip one.
        let answer = store
            .timed("watch", |client| {
                let key = key.clone();
                async move {
                    client
                        .kv_client()
                        .get(key, Some(etcd_client::GetOptions::new().with_count_only()))
                        .await
                }
            })
            .await?;
        answer.header().map_or(0, |h| h.revision()) as Revision + 1
    } else {
        from_revision
    };
    let stream = open(store, &key, next).await?;
    let (sender, receiver) = mpsc::channel(BUFFER);
    let follower = Follower {
        store: store.clone(),
        key,
        next,
        sender,
    };
    tokio::spawn(follower.run(stream));
    Ok(Box::pin(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
    )))
}

async fn open(store: &EtcdStore, key: &str, from: Revision) -> Result<etcd_client::WatchStream> {
    let options = WatchOptions::new()
        .with_prefix()
        .with_progress_notify()
        .with_start_revision(from as i64);
    store
        .timed("watch", |client| {
            let options = options.clone();
            async move { client.watch_client().watch(key, Some(options)).await }
        })
        .await
}

struct Follower {
    store: EtcdStore,
    key: String,
    /// The revision of the next event to deliver.
    next: Revision,
    sender: mpsc::Sender<Result<WatchEvent>>,
}

/// What a stream's end means.
enum End {
    /// The consumer dropped the watch.
    Dropped,
    /// The stream broke: watch again.
    Broken(String),
    /// History before `next` is gone: the consumer must re-list.
    Compacted(Revision),
}

impl Follower {
    async fn run(mut self, mut stream: etcd_client::WatchStream) {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.follow(&mut stream).await {
                End::Dropped => return,
                End::Compacted(compact_revision) => {
                    let _ = self
                        .sender
                        .send(Err(paz_core::Error::Compacted {
                            requested: self.next,
                            compact_revision,
                        }))
                        .await;
                    return;
                }
                End::Broken(why) => {
                    tracing::debug!(key = %self.key, next = self.next, %why, "etcd watch broke; watching again");
                }
            }
            // Reconnect (with backoff) from the next undelivered revision.
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = self.sender.closed() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                match open(&self.store, &self.key, self.next).await {
                    Ok(reopened) => {
                        tracing::info!(key = %self.key, from = self.next, "etcd watch resumed");
                        stream = reopened;
                        break;
                    }
                    Err(error) => {
                        tracing::debug!(key = %self.key, %error, "etcd watch: cannot watch yet")
                    }
                }
            }
        }
    }

    /// Delivers the events of one stream until it ends.
    async fn follow(&mut self, stream: &mut etcd_client::WatchStream) -> End {
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                _ = self.sender.closed() => return End::Dropped,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => return End::Broken("the stream ended".into()),
                Err(error) => return End::Broken(store_error("watch", error).to_string()),
            };
            if response.compact_revision() > 0 {
                return End::Compacted(response.compact_revision() as Revision);
            }
            if response.canceled() {
                // E.g. "etcdserver: no leader" (require_leader): another member may have one.
                return End::Broken(format!("canceled: {}", response.cancel_reason()));
            }
            if let Err(end) = self.deliver(&response).await {
                return end;
            }
        }
    }

    async fn deliver(&mut self, response: &WatchResponse) -> std::result::Result<(), End> {
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let kv = match key_value(&self.store.config.namespace, kv) {
                Ok(kv) => kv,
                Err(error) => {
                    let _ = self.sender.send(Err(error)).await;
                    return Err(End::Dropped);
                }
            };
            if kv.mod_revision < self.next {
                // Already delivered before a reconnect.
                continue;
            }
            // Several events of one transaction share a revision: the next one to expect is
            // that revision again until a later one arrives.
            self.next = kv.mod_revision;
            let kind = match event.event_type() {
                EventType::Put => EventKind::Put,
                EventType::Delete => EventKind::Delete,
            };
            if self.sender.send(Ok(WatchEvent { kind, kv })).await.is_err() {
                return Err(End::Dropped);
            }
        }
        // A whole response is delivered (etcd does not split a revision across responses
        // unless asked to fragment): the next event is after its last revision.
        if let Some(last) = response.events().last().and_then(|e| e.kv()) {
            self.next = self.next.max(last.mod_revision() as Revision + 1);
        } else if !response.created()
            && let Some(header) = response.header()
        {
            // A progress notification: nothing for this prefix up to its revision. (Only
            // these are trusted: the header of a response with events may be ahead of
            // events still to come.)
            self.next = self.next.max(header.revision() as Revision + 1);
        }
        Ok(())
    }
}

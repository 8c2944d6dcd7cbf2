//! The streaming calls: the server's events (Server-Sent Events) and the services' logs
//! (newline-delimited JSON), as [`EventStream`] and [`LogLines`].

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{BoxStream, Stream};
use paz_core::Event;
use paz_core::scheduler::LogLine;
use reqwest::Method;
use reqwest::header::ACCEPT;

use super::decode::{LineSplitter, MAX_LOG_LINE, NdjsonDecoder, SseDecoder, SseParser, decoded};
use super::error::check;
use super::{Client, Error};

impl Client {
    /// `GET /v1/events`: the server's events as they happen (Server-Sent Events).
    ///
    /// Resolves once the server accepted the subscription; the stream then yields each event
    /// and ends when the server closes it. An event that cannot be decoded yields an
    /// [`Error::Decode`] item and the stream goes on; a broken connection yields an
    /// [`Error::Http`] item and the stream ends (subscribe again to resume).
    pub async fn events(&self) -> Result<EventStream, Error> {
        self.events_after(None).await
    }

    /// [`Client::events`], resuming after the event with id `last_id` (an [`Event::id`]
    /// seen before a disconnect): the events missed meanwhile come first. When the server
    /// cannot give them all (too old, or it restarted), the stream's first item is
    /// [`Error::EventsMissed`]: read the state again.
    pub async fn events_after(&self, last_id: Option<&str>) -> Result<EventStream, Error> {
        let mut request = self
            .request(Method::GET, &["v1", "events"])
            .header(ACCEPT, "text/event-stream");
        if let Some(id) = last_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.map_err(Error::Http)?;
        let response = check(response).await?;
        Ok(EventStream::new(response.bytes_stream()))
    }

    /// `GET /v1/services/{name}/logs`: the output of the service's instances, one
    /// [`LogLine`] at a time (the server sends newline-delimited JSON).
    ///
    /// `tail` keeps only the last lines of each instance's past output; with `follow`, the
    /// stream stays open and yields new lines as the instances print them (it has no overall
    /// timeout). Resolves once the server accepted the request, so `SERVICE_NOT_FOUND` (404)
    /// and `NO_SCHEDULER` (409, the server runs no scheduler) come back as an `Err`. A line
    /// that cannot be decoded yields an [`Error::Decode`] item and the stream goes on; a
    /// broken connection yields an [`Error::Http`] item and the stream ends.
    ///
    /// ```no_run
    /// # async fn run(client: paz::Client) -> Result<(), paz::Error> {
    /// use futures_util::StreamExt as _;
    ///
    /// let mut lines = client.logs("web", true, Some(10)).await?;
    /// while let Some(line) = lines.next().await {
    ///     let line = line?;
    ///     println!("{} | {}", line.instance, line.line);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn logs(
        &self,
        name: &str,
        follow: bool,
        tail: Option<usize>,
    ) -> Result<LogLines, Error> {
        let mut url = self.url(&["v1", "services", name, "logs"]);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("follow", if follow { "true" } else { "false" });
            if let Some(tail) = tail {
                query.append_pair("tail", &tail.to_string());
            }
        }
        // No `.timeout()`: a followed stream lasts as long as the caller reads it.
        let response = self
            .request_url(Method::GET, url)
            .header(ACCEPT, "application/x-ndjson")
            .send()
            .await
            .map_err(Error::Http)?;
        let response = check(response).await?;
        Ok(LogLines::new(response.bytes_stream()))
    }

    /// [`Client::events`], with the whole stream bounded by `limit`.
    pub(super) async fn events_until(&self, limit: Duration) -> Result<EventStream, Error> {
        let response = self
            .request(Method::GET, &["v1", "events"])
            .header(ACCEPT, "text/event-stream")
            .timeout(limit)
            .send()
            .await
            .map_err(Error::Http)?;
        let response = check(response).await?;
        Ok(EventStream::new(response.bytes_stream()))
    }
}

/// The events of a `paz-server` as they happen: a [`Stream`] of [`Event`]s, from
/// [`Client::events`].
pub struct EventStream {
    inner: BoxStream<'static, Result<Event, Error>>,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl EventStream {
    pub(super) fn new<S, B>(body: S) -> EventStream
    where
        S: Stream<Item = Result<B, reqwest::Error>> + Send + Unpin + 'static,
        B: AsRef<[u8]>,
    {
        EventStream {
            inner: decoded(body, SseDecoder(SseParser::default())),
        }
    }
}

impl Stream for EventStream {
    type Item = Result<Event, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// The output of a service's instances: a [`Stream`] of [`LogLine`]s, from [`Client::logs`].
pub struct LogLines {
    inner: BoxStream<'static, Result<LogLine, Error>>,
}

impl fmt::Debug for LogLines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogLines").finish_non_exhaustive()
    }
}

impl LogLines {
    pub(super) fn new<S, B>(body: S) -> LogLines
    where
        S: Stream<Item = Result<B, reqwest::Error>> + Send + Unpin + 'static,
        B: AsRef<[u8]>,
    {
        LogLines {
            inner: decoded(body, NdjsonDecoder(LineSplitter::new(MAX_LOG_LINE))),
        }
    }
}

impl Stream for LogLines {
    type Item = Result<LogLine, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::testing::{EVENT, LOG, one_shot_server, runtime};
    use futures_util::stream::StreamExt;

    #[test]
    fn event_stream_decodes_events_and_reports_bad_ones() {
        let chunks: Vec<Result<Vec<u8>, reqwest::Error>> = vec![
            Ok(format!("event: service_created\ndata: {}", &EVENT[..20]).into_bytes()),
            Ok(format!("{}\n\ndata: {{\"nope\":1}}\n\n", &EVENT[20..]).into_bytes()),
        ];
        let stream = EventStream::new(futures_util::stream::iter(chunks));
        let items: Vec<_> = runtime().block_on(stream.collect::<Vec<_>>());
        assert_eq!(items.len(), 2);
        let event = items[0].as_ref().unwrap();
        assert_eq!(event.revision, 5);
        assert_eq!(event.kind.name(), "service_created");
        assert!(matches!(items[1], Err(Error::Decode { .. })));
    }

    #[test]
    fn log_lines_decode_and_report_bad_lines() {
        let chunks: Vec<Result<Vec<u8>, reqwest::Error>> = vec![
            Ok(LOG.as_bytes()[..10].to_vec()),
            Ok(format!("{}\nnot json\n", &LOG[10..]).into_bytes()),
            Ok(br#"{"instance":"x","stream":"stderr","line":"oops"}"#.to_vec()),
        ];
        let items = runtime()
            .block_on(LogLines::new(futures_util::stream::iter(chunks)).collect::<Vec<_>>());
        assert_eq!(items.len(), 3, "{items:?}");
        let first = items[0].as_ref().unwrap();
        assert_eq!(first.instance, "3f2a9b1c2d3e4f");
        assert_eq!(first.line, "listening on :8080");
        assert!(matches!(items[1], Err(Error::Decode { .. })));
        let last = items[2].as_ref().unwrap();
        assert_eq!(last.stream, paz_core::scheduler::LogStreamKind::Stderr);
        assert_eq!(last.line, "oops");
    }

    #[test]
    fn logs_sends_follow_and_tail_and_streams_lines() {
        let (url, requests) = one_shot_server("200 OK", &format!("{LOG}\n{LOG}\n"));
        let client = Client::new(&url, Some("t0k".into())).unwrap();
        let lines = runtime().block_on(async {
            let stream = client.logs("web", true, Some(5)).await.unwrap();
            stream.collect::<Vec<_>>().await
        });
        assert_eq!(lines.len(), 2);
        assert!(
            lines
                .iter()
                .all(|l| l.as_ref().unwrap().line == "listening on :8080")
        );
        let request = requests.recv().unwrap().to_ascii_lowercase();
        assert!(
            request.starts_with("get /v1/services/web/logs?follow=true&tail=5 http/1.1"),
            "{request}"
        );
        assert!(
            request.contains("accept: application/x-ndjson"),
            "{request}"
        );
        assert!(request.contains("authorization: bearer t0k"), "{request}");

        let (url, requests) = one_shot_server("200 OK", "");
        let client = Client::new(&url, None).unwrap();
        runtime().block_on(client.logs("web", false, None)).unwrap();
        let request = requests.recv().unwrap().to_ascii_lowercase();
        assert!(
            request.starts_with("get /v1/services/web/logs?follow=false http/1.1"),
            "{request}"
        );
    }

    #[test]
    fn logs_without_a_scheduler_is_an_api_error() {
        let (url, _requests) = one_shot_server(
            "409 Conflict",
            r#"{"error":{"code":"NO_SCHEDULER","message":"this server runs no scheduler"}}"#,
        );
        let client = Client::new(&url, None).unwrap();
        let err = runtime()
            .block_on(client.logs("web", false, None))
            .unwrap_err();
        assert_eq!(err.code(), Some("NO_SCHEDULER"));
        assert_eq!(err.status(), Some(409));
    }
}

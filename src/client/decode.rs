//! Decoding streamed bodies, in whatever chunks they arrive: Server-Sent Events
//! (`text/event-stream`) and newline-delimited JSON.

use std::collections::VecDeque;

use futures_util::stream::{BoxStream, Stream, StreamExt};
use paz_core::Event;
use paz_core::scheduler::LogLine;

use super::Error;

/// The longest SSE line the event stream accepts before giving up.
pub(super) const MAX_SSE_LINE: usize = 16 * 1024 * 1024;
/// The longest NDJSON line the log stream accepts before giving up.
pub(super) const MAX_LOG_LINE: usize = 16 * 1024 * 1024;

/// Turns a response body, in whatever chunks it arrives, into items.
pub(super) trait ChunkDecoder: Send + 'static {
    /// What the body holds.
    type Item: Send + 'static;
    /// The items completed by `chunk`; an error ends the stream.
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Result<Self::Item, Error>>, Error>;
    /// The items left when the body ends.
    fn finish(&mut self) -> Vec<Result<Self::Item, Error>>;
}

/// Server-Sent Events of `paz_core::Event`.
pub(super) struct SseDecoder(pub(super) SseParser);

impl ChunkDecoder for SseDecoder {
    type Item = Event;
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Result<Event, Error>>, Error> {
        Ok(self.0.feed(chunk)?.into_iter().map(decode_event).collect())
    }
    fn finish(&mut self) -> Vec<Result<Event, Error>> {
        Vec::new()
    }
}

/// Newline-delimited JSON `LogLine`s.
pub(super) struct NdjsonDecoder(pub(super) LineSplitter);

impl ChunkDecoder for NdjsonDecoder {
    type Item = LogLine;
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Result<LogLine, Error>>, Error> {
        Ok(self
            .0
            .feed(chunk)?
            .iter()
            .map(|line| decode_log(line))
            .collect())
    }
    fn finish(&mut self) -> Vec<Result<LogLine, Error>> {
        // A last line without its newline still counts.
        self.0
            .finish()
            .map(|line| decode_log(&line))
            .into_iter()
            .collect()
    }
}

/// The items of a streamed body; a transport or framing error is the last item.
pub(super) fn decoded<S, B, D>(body: S, decoder: D) -> BoxStream<'static, Result<D::Item, Error>>
where
    S: Stream<Item = Result<B, reqwest::Error>> + Send + Unpin + 'static,
    B: AsRef<[u8]>,
    D: ChunkDecoder,
{
    let state = (body, decoder, VecDeque::new(), false);
    futures_util::stream::unfold(
        state,
        |(mut body, mut decoder, mut pending, mut done)| async move {
            loop {
                if let Some(item) = pending.pop_front() {
                    return Some((item, (body, decoder, pending, done)));
                }
                if done {
                    return None;
                }
                match body.next().await {
                    Some(Ok(chunk)) => match decoder.feed(chunk.as_ref()) {
                        Ok(items) => pending.extend(items),
                        Err(e) => {
                            done = true;
                            pending.push_back(Err(e));
                        }
                    },
                    Some(Err(e)) => {
                        done = true;
                        pending.push_back(Err(Error::Http(e)));
                    }
                    None => {
                        done = true;
                        pending.extend(decoder.finish());
                    }
                }
            }
        },
    )
    .boxed()
}

fn decode_log(line: &[u8]) -> Result<LogLine, Error> {
    serde_json::from_slice(line).map_err(|source| Error::Decode {
        what: "a log line".into(),
        source,
    })
}

/// Splits bytes in any chunking into the lines of newline-delimited JSON: lines end in LF
/// (a CR before it is dropped), blank lines are skipped.
#[derive(Debug)]
pub(super) struct LineSplitter {
    line: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    pub(super) fn new(max: usize) -> LineSplitter {
        LineSplitter {
            line: Vec::new(),
            max,
        }
    }

    /// The lines that `chunk` completes.
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..end]);
            rest = &rest[end + 1..];
            if let Some(line) = self.take() {
                out.push(line);
            }
        }
        self.line.extend_from_slice(rest);
        if self.line.len() > self.max {
            self.line = Vec::new();
            return Err(Error::LogLineTooLarge);
        }
        Ok(out)
    }

    /// The last line, when the input did not end with a newline.
    fn finish(&mut self) -> Option<Vec<u8>> {
        self.take()
    }

    fn take(&mut self) -> Option<Vec<u8>> {
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        (!line.iter().all(u8::is_ascii_whitespace)).then_some(line)
    }
}

fn decode_event(message: SseMessage) -> Result<Event, Error> {
    if message.event == "resync" {
        let reason = serde_json::from_str::<serde_json::Value>(&message.data)
            .ok()
            .and_then(|v| v.get("reason")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| "no reason given".into());
        return Err(Error::EventsMissed { reason });
    }
    serde_json::from_str(&message.data).map_err(|source| Error::Decode {
        what: format!("the {:?} event", message.event),
        source,
    })
}

/// One dispatched Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SseMessage {
    /// The `event:` field (`message` when absent).
    event: String,
    /// The `data:` lines joined by `\n`.
    data: String,
    /// The last `id:` seen.
    id: Option<String>,
}

/// An incremental parser of the `text/event-stream` format (WHATWG HTML, "Server-sent
/// events"): bytes in any chunking, lines ending in LF, CRLF or CR, `:` comments.
#[derive(Debug, Default)]
pub(super) struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended in CR: a leading LF belongs to that line ending.
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
    id: Option<String>,
}

impl SseParser {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseMessage>, Error> {
        let mut out = Vec::new();
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(stripped) = rest.strip_prefix(b"\n") {
                rest = stripped;
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, &mut out);
            let terminator = rest[end];
            rest = &rest[end + 1..];
            if terminator == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.line.extend_from_slice(rest);
        if self.line.len() > MAX_SSE_LINE {
            return Err(Error::EventTooLarge);
        }
        Ok(out)
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseMessage>) {
        if line.is_empty() {
            if self.has_data {
                let mut data = std::mem::take(&mut self.data);
                if data.ends_with('\n') {
                    data.pop();
                }
                let event = std::mem::take(&mut self.event);
                out.push(SseMessage {
                    event: if event.is_empty() {
                        "message".into()
                    } else {
                        event
                    },
                    data,
                    id: self.id.clone(),
                });
            } else {
                self.event.clear();
                self.data.clear();
            }
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {} // `retry` and unknown fields are ignored
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::testing::{EVENT, LOG};

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<SseMessage> {
        let mut parser = SseParser::default();
        chunks
            .iter()
            .flat_map(|c| parser.feed(c).unwrap())
            .collect()
    }

    #[test]
    fn sse_parses_events_in_any_chunking() {
        let text = format!(
            ": keep-alive\n\nevent: service_created\nid: 5\ndata: {EVENT}\n\n:ping\r\n\r\nevent: x\r\ndata: a\r\ndata:b\r\rdata: c\r\n\r\n"
        );
        let whole = parse_chunks(&[text.as_bytes()]);
        assert_eq!(
            whole,
            [
                SseMessage {
                    event: "service_created".into(),
                    data: EVENT.into(),
                    id: Some("5".into())
                },
                SseMessage {
                    event: "x".into(),
                    data: "a\nb".into(),
                    id: Some("5".into())
                },
                SseMessage {
                    event: "message".into(),
                    data: "c".into(),
                    id: Some("5".into())
                },
            ]
        );
        // Every split point, including inside CRLF pairs, gives the same events.
        let bytes = text.as_bytes();
        for split in 0..bytes.len() {
            assert_eq!(
                parse_chunks(&[&bytes[..split], &bytes[split..]]),
                whole,
                "split at {split}"
            );
        }
        let single_bytes: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_chunks(&single_bytes), whole);
    }

    #[test]
    fn sse_ignores_an_unfinished_event_and_empty_data() {
        assert!(parse_chunks(&[b"event: a\n\ndata: x"]).is_empty());
    }

    fn split_chunks(chunks: &[&[u8]]) -> Vec<String> {
        let mut splitter = LineSplitter::new(1024);
        let mut lines: Vec<Vec<u8>> = chunks
            .iter()
            .flat_map(|c| splitter.feed(c).unwrap())
            .collect();
        lines.extend(splitter.finish());
        lines
            .into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect()
    }

    #[test]
    fn ndjson_lines_split_the_same_in_any_chunking() {
        let text = format!("{LOG}\n\n{{\"a\":\"é\"}}\r\n  \n{LOG}");
        let whole = split_chunks(&[text.as_bytes()]);
        assert_eq!(whole, [LOG, "{\"a\":\"é\"}", LOG]);
        let bytes = text.as_bytes();
        for split in 0..bytes.len() {
            assert_eq!(
                split_chunks(&[&bytes[..split], &bytes[split..]]),
                whole,
                "split at {split}"
            );
        }
        let single_bytes: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(split_chunks(&single_bytes), whole);
    }

    #[test]
    fn ndjson_lines_have_a_size_limit() {
        let mut splitter = LineSplitter::new(8);
        assert!(splitter.feed(b"12345678\n1234").unwrap().len() == 1);
        assert!(matches!(
            splitter.feed(b"56789"),
            Err(Error::LogLineTooLarge)
        ));
    }
}

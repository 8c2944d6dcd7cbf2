//! Container output as lines: Docker's multiplexed frames are not line-aligned, so each
//! stream (stdout, stderr) keeps its own buffer of the unfinished line.

use std::collections::VecDeque;

use bollard::container::LogOutput;
use futures_util::{Stream, StreamExt};
use paz_core::scheduler::{LogLine, LogStream, LogStreamKind};

/// A line longer than this is cut into pieces of this size, so a process that never prints
/// a newline cannot make Paz buffer without bound.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Splits the bytes of one or two output streams into lines.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl LineSplitter {
    /// Adds bytes of `kind`; returns the lines they complete, in order.
    pub(crate) fn push(
        &mut self,
        kind: LogStreamKind,
        bytes: &[u8],
    ) -> Vec<(LogStreamKind, String)> {
        let buffer = match kind {
            LogStreamKind::Stdout => &mut self.stdout,
            LogStreamKind::Stderr => &mut self.stderr,
        };
        let mut lines = Vec::new();
        for &byte in bytes {
            if byte == b'\n' {
                lines.push((kind, take_line(buffer)));
            } else {
                buffer.push(byte);
                if buffer.len() >= MAX_LINE_BYTES {
                    lines.push((kind, take_line(buffer)));
                }
            }
        }
        lines
    }

    /// The unfinished lines, once the streams have ended (stdout first).
    pub(crate) fn finish(&mut self) -> Vec<(LogStreamKind, String)> {
        let mut lines = Vec::new();
        if !self.stdout.is_empty() {
            lines.push((LogStreamKind::Stdout, take_line(&mut self.stdout)));
        }
        if !self.stderr.is_empty() {
            lines.push((LogStreamKind::Stderr, take_line(&mut self.stderr)));
        }
        lines
    }
}

/// Empties `buffer` into a line: a trailing `\r` is dropped, invalid UTF-8 is replaced.
fn take_line(buffer: &mut Vec<u8>) -> String {
    if buffer.last() == Some(&b'\r') {
        buffer.pop();
    }
    let line = String::from_utf8_lossy(buffer).into_owned();
    buffer.clear();
    line
}

/// Turns bollard's frames into [`LogLine`]s of instance `id`. `StdIn` frames are dropped;
/// `Console` frames (TTY containers, which Paz does not create) count as stdout.
pub(crate) fn lines_of<S>(id: String, frames: S) -> LogStream
where
    S: Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send + 'static,
{
    struct State<S> {
        id: String,
        frames: std::pin::Pin<Box<S>>,
        splitter: LineSplitter,
        ready: VecDeque<(LogStreamKind, String)>,
        done: bool,
    }
    let state = State {
        id,
        frames: Box::pin(frames),
        splitter: LineSplitter::default(),
        ready: VecDeque::new(),
        done: false,
    };
    Box::pin(futures_util::stream::unfold(
        state,
        |mut state| async move {
            loop {
                if let Some((stream, line)) = state.ready.pop_front() {
                    let line = LogLine {
                        instance: state.id.clone(),
                        stream,
                        line,
                    };
                    return Some((Ok(line), state));
                }
                if state.done {
                    return None;
                }
                match state.frames.next().await {
                    Some(Ok(frame)) => {
                        let (kind, bytes) = match frame {
                            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                                (LogStreamKind::Stdout, message)
                            }
                            LogOutput::StdErr { message } => (LogStreamKind::Stderr, message),
                            LogOutput::StdIn { .. } => continue,
                        };
                        let lines = state.splitter.push(kind, &bytes);
                        state.ready.extend(lines);
                    }
                    Some(Err(error)) => {
                        state.done = true;
                        state.ready.extend(state.splitter.finish());
                        let error = paz_core::Error::Scheduler(
                            paz_core::PortError::internal(format!(
                                "reading the logs of instance {}: {error}",
                                state.id
                            ))
                            .with_source(error),
                        );
                        return Some((Err(error), state));
                    }
                    None => {
                        state.done = true;
                        state.ready.extend(state.splitter.finish());
                    }
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stderr: bool, text: &str) -> Result<LogOutput, bollard::errors::Error> {
        let message = text.as_bytes().to_vec().into();
        Ok(if stderr {
            LogOutput::StdErr { message }
        } else {
            LogOutput::StdOut { message }
        })
    }

    #[test]
    fn frames_are_split_into_lines_per_stream() {
        let mut s = LineSplitter::default();
        assert!(s.push(LogStreamKind::Stdout, b"hel").is_empty());
        assert!(s.push(LogStreamKind::Stderr, b"oops").is_empty());
        assert_eq!(
            s.push(LogStreamKind::Stdout, b"lo\r\nwor"),
            vec![(LogStreamKind::Stdout, "hello".to_owned())]
        );
        assert_eq!(
            s.push(LogStreamKind::Stderr, b"!\n\n"),
            vec![
                (LogStreamKind::Stderr, "oops!".to_owned()),
                (LogStreamKind::Stderr, String::new())
            ]
        );
        assert_eq!(s.finish(), vec![(LogStreamKind::Stdout, "wor".to_owned())]);
        assert!(s.finish().is_empty());
    }

    #[test]
    fn endless_lines_are_cut() {
        let mut s = LineSplitter::default();
        let lines = s.push(LogStreamKind::Stdout, &vec![b'x'; MAX_LINE_BYTES * 2 + 10]);
        assert_eq!(lines.len(), 2);
        assert_eq!(s.finish()[0].1.len(), 10);
    }

    #[test]
    fn multibyte_characters_split_across_frames_survive() {
        let mut s = LineSplitter::default();
        let bytes = "é\n".as_bytes();
        assert!(s.push(LogStreamKind::Stdout, &bytes[..1]).is_empty());
        assert_eq!(s.push(LogStreamKind::Stdout, &bytes[1..])[0].1, "é");
    }

    #[tokio::test]
    async fn a_frame_stream_becomes_log_lines() {
        let frames = futures_util::stream::iter(vec![
            frame(false, "a\nb"),
            frame(true, "err\n"),
            frame(false, "c\n"),
            frame(false, "tail"),
        ]);
        let lines: Vec<_> = lines_of("i1".into(), frames)
            .map(|l| {
                let l = l.unwrap();
                assert_eq!(l.instance, "i1");
                (l.stream, l.line)
            })
            .collect()
            .await;
        assert_eq!(
            lines,
            vec![
                (LogStreamKind::Stdout, "a".to_owned()),
                (LogStreamKind::Stderr, "err".to_owned()),
                (LogStreamKind::Stdout, "bc".to_owned()),
                (LogStreamKind::Stdout, "tail".to_owned()),
            ]
        );
    }
}

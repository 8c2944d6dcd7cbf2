//! The fast upstream path: a minimal HTTP/1.1 client connection driven inside the request's
//! own task (no connection task, no channels), for requests without a body — the vast
//! majority. It writes the request head in one write, parses the response head with
//! `httparse`, and reads the body (length, chunked or until close) straight from the socket
//! while the client's connection writes it. A response whose body is already buffered with
//! its head (small answers) completes at once and its connection goes back to the pool.
//!
//! Requests with a body and upgrades go through hyper's client instead (`pool::connect`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::connect::ConnectError;
use super::state::BackendSlot;

const READ_BUF: usize = 16 * 1024;
/// The largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
/// The longest chunk-size line (with extensions) or trailer line accepted.
const MAX_LINE: usize = 4 * 1024;

/// Why an upstream exchange failed.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    Io(io::Error),
    /// The connection closed before a complete response head.
    Closed,
    /// The response is not valid HTTP/1.x.
    Invalid(&'static str),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Io(e) => write!(f, "i/o: {e}"),
            UpstreamError::Closed => f.write_str("connection closed before a response"),
            UpstreamError::Invalid(what) => write!(f, "invalid response: {what}"),
        }
    }
}

impl std::error::Error for UpstreamError {}

impl From<io::Error> for UpstreamError {
    fn from(e: io::Error) -> Self {
        UpstreamError::Io(e)
    }
}

/// One keep-alive connection to a backend.
pub(crate) struct Upstream {
    io: TcpStream,
    /// Read buffer (initialised once); `buf[start..end]` is unread.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Request head being written (reused).
    head: Vec<u8>,
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Length(u64),
    Chunked(Chunk),
    /// Until the backend closes the connection.
    Eof,
    Done,
}

/// Where a chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

impl Upstream {
    /// A new connection.
    pub async fn connect(slot: &BackendSlot, timeout: Duration) -> Result<Upstream, ConnectError> {
        let connect = async {
            match slot.socket_addr {
                Some(addr) => TcpStream::connect(addr).await,
                None => TcpStream::connect(&*slot.address).await,
            }
        };
        let io = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map_err(ConnectError::Io)?;
        io.set_nodelay(true).map_err(ConnectError::Io)?;
        Ok(Upstream {
            io,
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
            head: Vec::with_capacity(512),
        })
    }

    /// Whether an idle connection still looks usable: nothing (no data, no EOF) arrived since
    /// its last response. Costs no system call: it reads the reactor's readiness state.
    pub fn idle_and_open(&self) -> bool {
        if self.start != self.end {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        matches!(self.io.poll_read_ready(&mut cx), Poll::Pending)
    }

    /// Sends a request without a body and reads the response head. On error, whether the
    /// request may have reached the backend (`false` only when not a byte was written).
    pub async fn send_head<B>(
        mut self,
        req: &Request<B>,
    ) -> Result<(Response<()>, RawBody), (UpstreamError, bool)> {
        self.encode_head(req);
        let head = std::mem::take(&mut self.head);
        let written = self.write_head(&head).await;
        self.head = head;
        written?;
        loop {
            match self.parse_head(req.method()) {
                Ok(Some((response, framing, reusable))) => {
                    return Ok((
                        response,
                        RawBody {
                            conn: self,
                            framing,
                            reusable,
                        },
                    ));
                }
                Ok(None) => {}
                Err(e) => return Err((e, true)),
            }
            match self.read_more().await {
                Ok(0) => return Err((UpstreamError::Closed, true)),
                Ok(_) => {}
                Err(e) => return Err((e.into(), true)),
            }
        }
    }

    /// Writes the head; on failure, whether any byte went out.
    async fn write_head(&mut self, head: &[u8]) -> Result<(), (UpstreamError, bool)> {
        let mut written = 0;
        while written < head.len() {
            match self.io.write(&head[written..]).await {
                Ok(0) => return Err((UpstreamError::Closed, written > 0)),
                Ok(n) => written += n,
                Err(e) => return Err((e.into(), written > 0)),
            }
        }
        Ok(())
    }

    fn encode_head<B>(&mut self, req: &Request<B>) {
        let head = &mut self.head;
        head.clear();
        head.extend_from_slice(req.method().as_str().as_bytes());
        head.push(b' ');
        let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in req.headers() {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
    }

    /// Reads more bytes into the buffer; 0 at EOF.
    async fn read_more(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read_more(cx)).await
    }

    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() < MAX_HEAD {
                self.buf.resize((self.buf.len() * 2).min(MAX_HEAD), 0);
            } else {
                return Poll::Ready(Err(io::Error::other("response head or line too large")));
            }
        }
        let mut read = ReadBuf::new(&mut self.buf[self.end..]);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        self.end += n;
        Poll::Ready(Ok(n))
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Takes up to `max` buffered bytes.
    fn take(&mut self, max: u64) -> Bytes {
        let n = usize::try_from(max)
            .unwrap_or(usize::MAX)
            .min(self.end - self.start);
        let bytes = Bytes::copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        bytes
    }

    /// Takes a CRLF-terminated line (without the CRLF) if complete.
    fn take_line(&mut self) -> Result<Option<(usize, usize)>, UpstreamError> {
        let data = self.buffered();
        match data.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                let line = (self.start, self.start + i);
                self.start += i + 2;
                Ok(Some(line))
            }
            None if data.len() > MAX_LINE => Err(UpstreamError::Invalid("line too long")),
            None => Ok(None),
        }
    }

    /// Parses a complete response head in the buffer (skipping 1xx), or `None` if more bytes
    /// are needed. Returns the head, the body framing and whether the connection can be
    /// reused after the body.
    fn parse_head(
        &mut self,
        method: &Method,
    ) -> Result<Option<(Response<()>, Framing, bool)>, UpstreamError> {
        loop {
            let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut []);
            let data = &self.buf[self.start..self.end];
            let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut parsed,
                data,
                &mut headers,
            ) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(UpstreamError::Invalid("too many headers"));
                }
                Err(_) => return Err(UpstreamError::Invalid("malformed head")),
            };
            let code = parsed.code.unwrap_or(0);
            if (100..200).contains(&code) {
                if code == 101 {
                    return Err(UpstreamError::Invalid("unrequested protocol switch"));
                }
                // 100 Continue, 103 Early Hints…: informational, skipped.
                self.start += len;
                continue;
            }
            let status =
                StatusCode::from_u16(code).map_err(|_| UpstreamError::Invalid("status code"))?;
            let http10 = parsed.version == Some(0);
            // Header values are slices of one copy of the head: no copy per header.
            let raw = Bytes::copy_from_slice(&data[..len]);
            let mut map = HeaderMap::with_capacity(parsed.headers.len());
            let mut content_length: Option<u64> = None;
            let mut chunked = false;
            let mut has_te = false;
            let mut close = http10;
            for h in parsed.headers.iter() {
                let name = HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|_| UpstreamError::Invalid("header name"))?;
                // `h.value` points into `data`; `raw` is a copy of `data[..len]`.
                let offset = h.value.as_ptr() as usize - data.as_ptr() as usize;
                let value =
                    HeaderValue::from_maybe_shared(raw.slice(offset..offset + h.value.len()))
                        .map_err(|_| UpstreamError::Invalid("header value"))?;
                if name == header::CONTENT_LENGTH {
                    let n = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .ok_or(UpstreamError::Invalid("content-length"))?;
                    if content_length.is_some_and(|c| c != n) {
                        return Err(UpstreamError::Invalid("conflicting content-length"));
                    }
                    content_length = Some(n);
                } else if name == header::TRANSFER_ENCODING {
                    has_te = true;
                    // Chunked must be the last coding.
                    chunked = h
                        .value
                        .rsplit(|b| *b == b',')
                        .next()
                        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                } else if name == header::CONNECTION {
                    for token in h.value.split(|b| *b == b',') {
                        let token = token.trim_ascii();
                        if token.eq_ignore_ascii_case(b"close") {
                            close = true;
                        } else if http10 && token.eq_ignore_ascii_case(b"keep-alive") {
                            close = false;
                        }
                    }
                }
                map.append(name, value);
            }
            self.start += len;
            let framing = if *method == Method::HEAD
                || status == StatusCode::NO_CONTENT
                || status == StatusCode::NOT_MODIFIED
            {
                Framing::Done
            } else if has_te {
                if chunked {
                    Framing::Chunked(Chunk::Size)
                } else {
                    Framing::Eof
                }
            } else if let Some(n) = content_length {
                if n == 0 {
                    Framing::Done
                } else {
                    Framing::Length(n)
                }
            } else {
                Framing::Eof
            };
            if has_te {
                // Framing is the router's business towards the client.
                map.remove(header::CONTENT_LENGTH);
            }
            let mut response = Response::new(());
            *response.status_mut() = status;
            *response.version_mut() = Version::HTTP_11;
            *response.headers_mut() = map;
            let reusable = !close && framing != Framing::Eof;
            return Ok(Some((response, framing, reusable)));
        }
    }
}

/// A response head left in the connection's buffer, for verbatim forwarding.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawHead {
    pub status: u16,
    /// Length of the head (at the start of `Upstream::buffered`).
    pub len: usize,
    pub framing: Framing,
    /// Whether the connection can carry another request after the body.
    pub reusable: bool,
    /// Whether the head has hop-by-hop headers to remove before forwarding.
    pub strip: bool,
}

/// Response header names that are not forwarded (hop-by-hop). `Transfer-Encoding` is kept:
/// the fast path forwards chunked bodies as they are.
pub(crate) fn is_hop_by_hop_response(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

impl Upstream {
    /// Writes a request head (no body) and reads until a complete response head is buffered
    /// (1xx skipped). On error, whether the request may have reached the backend.
    pub async fn exchange_raw(
        &mut self,
        head: &[u8],
        head_request: bool,
    ) -> Result<RawHead, (UpstreamError, bool)> {
        self.write_head(head).await?;
        loop {
            match self.scan_head(head_request) {
                Ok(Some(raw)) => return Ok(raw),
                Ok(None) => {}
                Err(e) => return Err((e, true)),
            }
            match self.read_more().await {
                Ok(0) => return Err((UpstreamError::Closed, true)),
                Ok(_) => {}
                Err(e) => return Err((e.into(), true)),
            }
        }
    }

    fn scan_head(&mut self, head_request: bool) -> Result<Option<RawHead>, UpstreamError> {
        loop {
            let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut []);
            let data = &self.buf[self.start..self.end];
            let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut parsed,
                data,
                &mut headers,
            ) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(_) => return Err(UpstreamError::Invalid("malformed head")),
            };
            let code = parsed.code.unwrap_or(0);
            if (100..200).contains(&code) {
                if code == 101 {
                    return Err(UpstreamError::Invalid("unrequested protocol switch"));
                }
                self.start += len;
                continue;
            }
            if !(200..=999).contains(&code) {
                return Err(UpstreamError::Invalid("status code"));
            }
            let http10 = parsed.version == Some(0);
            let mut scan = FramingScan::new(http10);
            // An HTTP/1.0 status line is rewritten as HTTP/1.1 (framing stays explicit).
            let mut strip = http10;
            for h in parsed.headers.iter() {
                scan.header(h.name, h.value)?;
                strip |= is_hop_by_hop_response(h.name);
            }
            if scan.has_te && scan.content_length.is_some() {
                return Err(UpstreamError::Invalid(
                    "both content-length and transfer-encoding",
                ));
            }
            let framing = scan.framing(head_request, code);
            return Ok(Some(RawHead {
                status: code,
                len,
                framing,
                reusable: !scan.close && framing != Framing::Eof,
                strip,
            }));
        }
    }

    /// The unread bytes.
    pub fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks `n` unread bytes as used.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
    }

    /// Reads more bytes (0 at EOF).
    pub async fn fill(&mut self) -> io::Result<usize> {
        self.read_more().await
    }

    /// Whether nothing is left unread (the connection is clean for reuse).
    pub fn is_clean(&self) -> bool {
        self.start == self.end
    }
}

/// What the framing headers of a response say.
struct FramingScan {
    content_length: Option<u64>,
    chunked: bool,
    has_te: bool,
    close: bool,
    http10: bool,
}

impl FramingScan {
    fn new(http10: bool) -> Self {
        FramingScan {
            content_length: None,
            chunked: false,
            has_te: false,
            close: http10,
            http10,
        }
    }

    fn header(&mut self, name: &str, value: &[u8]) -> Result<(), UpstreamError> {
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(UpstreamError::Invalid("content-length"))?;
            if self.content_length.is_some_and(|c| c != n) {
                return Err(UpstreamError::Invalid("conflicting content-length"));
            }
            self.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            self.has_te = true;
            // Chunked must be the last coding.
            self.chunked = value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if self.http10 && token.eq_ignore_ascii_case(b"keep-alive") {
                    self.close = false;
                }
            }
        }
        Ok(())
    }

    fn framing(&self, head_request: bool, status: u16) -> Framing {
        if head_request || status == 204 || status == 304 {
            Framing::Done
        } else if self.has_te {
            if self.chunked {
                Framing::Chunked(Chunk::Size)
            } else {
                Framing::Eof
            }
        } else if let Some(n) = self.content_length {
            if n == 0 {
                Framing::Done
            } else {
                Framing::Length(n)
            }
        } else {
            Framing::Eof
        }
    }
}

/// Finds where a chunked body ends in a byte stream without decoding it (the fast path
/// forwards chunked bodies verbatim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkScan {
    Size { value: u64, digits: u8, ext: bool },
    SizeLf { value: u64 },
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

impl ChunkScan {
    pub fn new() -> Self {
        ChunkScan::Size {
            value: 0,
            digits: 0,
            ext: false,
        }
    }

    /// Consumes body bytes of `data`; returns how many belong to the body (all of them unless
    /// the body ends inside `data`).
    pub fn scan(&mut self, data: &[u8]) -> Result<usize, UpstreamError> {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            *self = match *self {
                ChunkScan::Done => return Ok(i),
                ChunkScan::Data(n) => {
                    let take = n.min((data.len() - i) as u64);
                    i += usize::try_from(take).unwrap_or(0);
                    *self = if take == n {
                        ChunkScan::DataCr
                    } else {
                        ChunkScan::Data(n - take)
                    };
                    continue;
                }
                ChunkScan::Size { value, digits, ext } => match b {
                    b'\r' if digits > 0 => ChunkScan::SizeLf { value },
                    b';' | b' ' | b'\t' if digits > 0 => ChunkScan::Size {
                        value,
                        digits,
                        ext: true,
                    },
                    _ if ext && b != b'\n' && b != b'\r' => ChunkScan::Size { value, digits, ext },
                    _ if !ext && b.is_ascii_hexdigit() && digits < 16 => {
                        let d = u64::from((b as char).to_digit(16).unwrap_or(0));
                        ChunkScan::Size {
                            value: value * 16 + d,
                            digits: digits + 1,
                            ext,
                        }
                    }
                    _ => return Err(UpstreamError::Invalid("chunk size")),
                },
                ChunkScan::SizeLf { value } => match b {
                    b'\n' if value == 0 => ChunkScan::TrailerStart,
                    b'\n' => ChunkScan::Data(value),
                    _ => return Err(UpstreamError::Invalid("chunk size line")),
                },
                ChunkScan::DataCr => match b {
                    b'\r' => ChunkScan::DataLf,
                    _ => return Err(UpstreamError::Invalid("chunk end")),
                },
                ChunkScan::DataLf => match b {
                    b'\n' => ChunkScan::new(),
                    _ => return Err(UpstreamError::Invalid("chunk end")),
                },
                ChunkScan::TrailerStart => match b {
                    b'\r' => ChunkScan::EndLf,
                    _ => ChunkScan::TrailerLine,
                },
                ChunkScan::TrailerLine => match b {
                    b'\r' => ChunkScan::TrailerLf,
                    _ => ChunkScan::TrailerLine,
                },
                ChunkScan::TrailerLf => match b {
                    b'\n' => ChunkScan::TrailerStart,
                    _ => return Err(UpstreamError::Invalid("trailer line")),
                },
                ChunkScan::EndLf => match b {
                    b'\n' => ChunkScan::Done,
                    _ => return Err(UpstreamError::Invalid("body end")),
                },
            };
            i += 1;
        }
        Ok(i)
    }

    pub fn is_done(&self) -> bool {
        *self == ChunkScan::Done
    }
}

/// A response body read straight from the backend connection.
pub(crate) struct RawBody {
    conn: Upstream,
    framing: Framing,
    reusable: bool,
}

impl RawBody {
    /// Whether the body has ended.
    pub fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    /// The exact length when known.
    pub fn exact_len(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(n) => Some(n),
            Framing::Done => Some(0),
            _ => None,
        }
    }

    /// The whole body if it is already buffered (small answers): no waiting, no system call.
    pub fn try_complete(&mut self) -> Option<Bytes> {
        match self.framing {
            Framing::Done => Some(Bytes::new()),
            Framing::Length(n) if (self.conn.end - self.conn.start) as u64 >= n => {
                self.framing = Framing::Done;
                Some(self.conn.take(n))
            }
            _ => None,
        }
    }

    /// The connection, if the body ended cleanly and it can carry another request.
    pub fn into_reusable(self) -> Option<Upstream> {
        (self.framing == Framing::Done && self.reusable && self.conn.start == self.conn.end)
            .then_some(self.conn)
    }

    /// The next piece of the body.
    pub fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, UpstreamError>>> {
        loop {
            match self.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(n) => {
                    if self.conn.start < self.conn.end {
                        let bytes = self.conn.take(n);
                        let left = n - bytes.len() as u64;
                        self.framing = if left == 0 {
                            Framing::Done
                        } else {
                            Framing::Length(left)
                        };
                        return Poll::Ready(Some(Ok(bytes)));
                    }
                }
                Framing::Eof => {
                    if self.conn.start < self.conn.end {
                        return Poll::Ready(Some(Ok(self.conn.take(u64::MAX))));
                    }
                }
                Framing::Chunked(chunk) => match self.chunk_step(chunk) {
                    Err(e) => return Poll::Ready(Some(Err(e))),
                    Ok(Some(Some(bytes))) => return Poll::Ready(Some(Ok(bytes))),
                    Ok(Some(None)) => continue,
                    Ok(None) => {}
                },
            }
            // More bytes needed.
            let n = match ready!(self.conn.poll_read_more(cx)) {
                Ok(n) => n,
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            };
            if n == 0 {
                if self.framing == Framing::Eof {
                    self.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Err(UpstreamError::Closed)));
            }
        }
    }

    /// One step of the chunked decoder on buffered bytes: `Ok(Some(Some(data)))` yields data,
    /// `Ok(Some(None))` made progress, `Ok(None)` needs more bytes.
    #[allow(clippy::option_option)]
    fn chunk_step(&mut self, chunk: Chunk) -> Result<Option<Option<Bytes>>, UpstreamError> {
        let conn = &mut self.conn;
        match chunk {
            Chunk::Size => {
                let Some((from, to)) = conn.take_line()? else {
                    return Ok(None);
                };
                let line = &conn.buf[from..to];
                let digits = line
                    .split(|b| *b == b';')
                    .next()
                    .unwrap_or(&[])
                    .trim_ascii();
                let size = std::str::from_utf8(digits)
                    .ok()
                    .filter(|d| !d.is_empty() && d.len() <= 16)
                    .and_then(|d| u64::from_str_radix(d, 16).ok())
                    .ok_or(UpstreamError::Invalid("chunk size"))?;
                self.framing = Framing::Chunked(if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                });
                Ok(Some(None))
            }
            Chunk::Data(left) => {
                if conn.start == conn.end {
                    return Ok(None);
                }
                let bytes = conn.take(left);
                let left = left - bytes.len() as u64;
                self.framing = Framing::Chunked(if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                });
                Ok(Some(Some(bytes)))
            }
            Chunk::DataEnd => {
                if conn.end - conn.start < 2 {
                    return Ok(None);
                }
                if conn.buffered()[..2] != *b"\r\n" {
                    return Err(UpstreamError::Invalid("chunk end"));
                }
                conn.start += 2;
                self.framing = Framing::Chunked(Chunk::Size);
                Ok(Some(None))
            }
            Chunk::Trailers => {
                // Trailer fields are dropped; an empty line ends the body.
                let Some((from, to)) = conn.take_line()? else {
                    return Ok(None);
                };
                if from == to {
                    self.framing = Framing::Done;
                }
                Ok(Some(None))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// An `Upstream` to a one-shot server that reads a request and answers `reply` in pieces.
    async fn exchange(method: &str, pieces: &'static [&'static [u8]]) -> (Response<()>, RawBody) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            for piece in pieces {
                s.write_all(piece).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let slot = BackendSlot::new(1, &addr.to_string());
        let conn = Upstream::connect(&slot, Duration::from_secs(1))
            .await
            .unwrap();
        let req = Request::builder()
            .method(method)
            .uri("/x")
            .header("host", "h")
            .body(())
            .unwrap();
        conn.send_head(&req).await.map_err(|(e, _)| e).unwrap()
    }

    async fn collect(body: &mut RawBody) -> Result<Vec<u8>, UpstreamError> {
        let mut out = Vec::new();
        while let Some(bytes) = std::future::poll_fn(|cx| body.poll_data(cx)).await {
            out.extend_from_slice(&bytes?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn content_length_body_in_one_piece_completes_at_once() {
        let (head, mut body) = exchange(
            "GET",
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello"],
        )
        .await;
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(head.headers()["x-a"], "b");
        assert_eq!(body.try_complete().unwrap(), "hello");
        assert!(body.into_reusable().is_some());
    }

    #[tokio::test]
    async fn content_length_body_in_pieces() {
        let (_, mut body) = exchange(
            "GET",
            &[
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel",
                b"lo",
                b" world",
            ],
        )
        .await;
        assert!(body.try_complete().is_none());
        assert_eq!(collect(&mut body).await.unwrap(), b"hello worl");
        assert!(body.into_reusable().is_none(), "extra bytes: not reusable");
    }

    #[tokio::test]
    async fn chunked_body_with_extensions_and_trailers() {
        let (head, mut body) = exchange(
            "GET",
            &[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel",
                b"lo\r\n6\r\n world\r\n0\r\nX-T: 1\r\n",
                b"\r\n",
            ],
        )
        .await;
        assert_eq!(head.headers()["transfer-encoding"], "chunked");
        assert_eq!(collect(&mut body).await.unwrap(), b"hello world");
        assert!(body.into_reusable().is_some());
    }

    #[tokio::test]
    async fn informational_answers_are_skipped_and_head_has_no_body() {
        let (head, mut body) = exchange(
            "HEAD",
            &[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"],
        )
        .await;
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(head.headers()["content-length"], "99");
        assert_eq!(body.try_complete().unwrap(), "");
    }

    #[tokio::test]
    async fn body_until_close_and_connection_close() {
        let (_, mut body) = exchange("GET", &[b"HTTP/1.1 200 OK\r\n\r\nall ", b"of it"]).await;
        assert_eq!(collect(&mut body).await.unwrap(), b"all of it");
        assert!(body.into_reusable().is_none());
        let (_, mut body) = exchange(
            "GET",
            &[b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"],
        )
        .await;
        assert_eq!(body.try_complete().unwrap(), "ok");
        assert!(body.into_reusable().is_none());
    }

    #[tokio::test]
    async fn truncated_and_invalid_answers_are_errors() {
        let (_, mut body) = exchange(
            "GET",
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"],
        )
        .await;
        assert!(collect(&mut body).await.is_err());
        let (_, mut body) = exchange(
            "GET",
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
        )
        .await;
        assert!(collect(&mut body).await.is_err());
    }
}

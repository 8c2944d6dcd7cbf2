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
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::connect::ConnectError;
pub(crate) use super::h1::Framing;
use super::h1::{self, ChunkScan, Head};
use super::state::BackendSlot;

const READ_BUF: usize = 16 * 1024;
/// The largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;

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
                            chunks: ChunkScan::new(),
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

    /// Takes up to `max` buffered bytes.
    fn take(&mut self, max: u64) -> Bytes {
        let n = usize::try_from(max)
            .unwrap_or(usize::MAX)
            .min(self.end - self.start);
        let bytes = Bytes::copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        bytes
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
            let data = &self.buf[self.start..self.end];
            let (head, parsed) =
                match h1::parse_response(data, *method == Method::HEAD, &mut headers)
                    .map_err(UpstreamError::Invalid)?
                {
                    Head::Partial => return Ok(None),
                    Head::Informational(len) => {
                        // 100 Continue, 103 Early Hints…: skipped.
                        self.start += len;
                        continue;
                    }
                    Head::Final(head, _, parsed) => (head, parsed),
                };
            let status = StatusCode::from_u16(head.status)
                .map_err(|_| UpstreamError::Invalid("status code"))?;
            // Header values are slices of one copy of the head: no copy per header.
            let raw = Bytes::copy_from_slice(&data[..head.len]);
            let mut map = HeaderMap::with_capacity(parsed.len());
            for h in parsed {
                let name = HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|_| UpstreamError::Invalid("header name"))?;
                // `h.value` points into `data`; `raw` is a copy of `data[..len]`.
                let offset = h.value.as_ptr() as usize - data.as_ptr() as usize;
                let value =
                    HeaderValue::from_maybe_shared(raw.slice(offset..offset + h.value.len()))
                        .map_err(|_| UpstreamError::Invalid("header value"))?;
                map.append(name, value);
            }
            self.start += head.len;
            let mut response = Response::new(());
            *response.status_mut() = status;
            *response.version_mut() = Version::HTTP_11;
            *response.headers_mut() = map;
            return Ok(Some((response, head.framing, head.reusable)));
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
            let data = &self.buf[self.start..self.end];
            match h1::parse_response(data, head_request, &mut headers)
                .map_err(UpstreamError::Invalid)?
            {
                Head::Partial => return Ok(None),
                Head::Informational(len) => self.start += len,
                Head::Final(head, _, _) => {
                    return Ok(Some(RawHead {
                        status: head.status,
                        len: head.len,
                        framing: head.framing,
                        reusable: head.reusable,
                        // An HTTP/1.0 status line is rewritten as HTTP/1.1 (framing stays
                        // explicit).
                        strip: head.hop || head.http10,
                    }));
                }
            }
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

/// A response body read straight from the backend connection.
pub(crate) struct RawBody {
    conn: Upstream,
    framing: Framing,
    chunks: ChunkScan,
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
                Framing::Chunked => {
                    let conn = &mut self.conn;
                    let (skip, n) = match self.chunks.next(&conn.buf[conn.start..conn.end]) {
                        Ok(step) => step,
                        Err(e) => return Poll::Ready(Some(Err(UpstreamError::Invalid(e)))),
                    };
                    conn.start += skip;
                    if n > 0 {
                        // Trailer fields are dropped (hyper re-frames the body).
                        return Poll::Ready(Some(Ok(conn.take(n as u64))));
                    }
                    if self.chunks.is_done() {
                        self.framing = Framing::Done;
                        return Poll::Ready(None);
                    }
                }
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

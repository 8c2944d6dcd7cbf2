//! The router's HTTP/1 policy, one for every path: which headers are hop-by-hop, what the
//! `X-Forwarded-*`/`Forwarded` headers say, how a request body is framed (and which framings
//! are refused), what a valid `Host` is, and how a response head is parsed and framed.
//!
//! The fast path applies it to `httparse` output, the general path to hyper's `HeaderMap`;
//! both raw upstream readers parse response heads with [`parse_response`] and chunked bodies
//! with [`ChunkScan`]. Nothing here allocates.

use std::mem::MaybeUninit;

/// Why a message is refused (the text of the 400 or of the upstream error).
pub(crate) type Refusal = &'static str;

/// Whether `a` (a header name as received) is `b` (lower case), ignoring ASCII case.
fn is(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// Hop-by-hop header names (RFC 9110 §7.6.1, plus `Proxy-Connection`), never forwarded as
/// received. Lower case.
pub(crate) const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The headers that say who the client is; replaced at the edge (unless the peer is a
/// trusted proxy). Lower case.
pub(crate) const FORWARDING: [&str; 5] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-real-ip",
];

/// Whether `name` is hop-by-hop.
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
    // Most names are longer than the longest hop-by-hop one: one comparison.
    name.len() <= 17 && HOP_BY_HOP.iter().any(|h| is(name, h))
}

/// Whether `name` is one of [`FORWARDING`].
pub(crate) fn is_forwarding(name: &[u8]) -> bool {
    (9..=17).contains(&name.len()) && FORWARDING.iter().any(|h| is(name, h))
}

/// Whether a response header is not forwarded. `Transfer-Encoding` is kept: the fast path
/// forwards chunked bodies as they are.
pub(crate) fn is_hop_by_hop_response(name: &[u8]) -> bool {
    is_hop_by_hop(name) && !is(name, "transfer-encoding")
}

/// Whether `name` spells, with `_` for `-`, a header whose meaning the router controls
/// (framing, `Host`, hop-by-hop, forwarding): such names are dropped, since CGI-style
/// backends read `Content_Length` as `Content-Length`.
pub(crate) fn is_underscore_alias(name: &[u8]) -> bool {
    if name.len() < 4 || name.len() > 17 || !name.contains(&b'_') {
        return false;
    }
    let same = |h: &str| {
        h.len() == name.len()
            && h.bytes().zip(name).all(|(h, n)| {
                let n = if *n == b'_' {
                    b'-'
                } else {
                    n.to_ascii_lowercase()
                };
                h == n
            })
    };
    same("host")
        || same("content-length")
        || same("expect")
        || HOP_BY_HOP.iter().any(|h| same(h))
        || FORWARDING.iter().any(|h| same(h))
}

/// Whether a `Connection` option may remove the header it names: never `Host` or the
/// framing headers.
pub(crate) fn connection_may_remove(name: &[u8]) -> bool {
    !(is(name, "host") || is(name, "content-length") || is(name, "transfer-encoding"))
}

/// What a `Connection` value says.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionOptions {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// It names other headers (to remove).
    pub names: bool,
}

impl ConnectionOptions {
    /// Adds the options of one `Connection` value.
    pub(crate) fn add(&mut self, value: &[u8]) {
        for token in value.split(|b| *b == b',') {
            let token = token.trim_ascii();
            if is(token, "close") {
                self.close = true;
            } else if is(token, "keep-alive") {
                self.keep_alive = true;
            } else if is(token, "upgrade") {
                self.upgrade = true;
            } else if !token.is_empty() {
                self.names = true;
            }
        }
    }
}

/// The header names a `Connection` value asks to remove (those it may, see
/// [`connection_may_remove`]).
pub(crate) fn connection_names(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| {
            !t.is_empty()
                && !is(t, "close")
                && !is(t, "keep-alive")
                && !is(t, "upgrade")
                && connection_may_remove(t)
        })
}

/// Whether `value` is `host[:port]`: a registered name (letters, digits, `-._~`, sub-delims
/// other than `,`) or a bracketed IP literal, then optionally `:` and digits.
pub(crate) fn valid_host(value: &[u8]) -> bool {
    let (host_ok, rest) = if value.first() == Some(&b'[') {
        let Some(end) = value.iter().position(|b| *b == b']') else {
            return false;
        };
        let literal = &value[1..end];
        let ok = !literal.is_empty()
            && literal
                .iter()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
        (ok, &value[end + 1..])
    } else {
        let end = value.iter().position(|b| *b == b':').unwrap_or(value.len());
        let name = &value[..end];
        let ok = !name.is_empty()
            && name.iter().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'-' | b'.'
                            | b'_'
                            | b'~'
                            | b'!'
                            | b'$'
                            | b'&'
                            | b'\''
                            | b'('
                            | b')'
                            | b'*'
                            | b'+'
                            | b';'
                            | b'='
                    )
            });
        (ok, &value[end..])
    };
    host_ok
        && match rest {
            [] => true,
            // `host:` (an empty port) is allowed by RFC 3986.
            [b':', port @ ..] => port.len() <= 5 && port.iter().all(u8::is_ascii_digit),
            _ => false,
        }
}

/// A `Content-Length` value: digits only (no sign, no list, no spaces inside), at most 19.
pub(crate) fn parse_content_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Whether a `Transfer-Encoding` value ends with `chunked`.
fn ends_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|b| *b == b',')
        .next()
        .is_some_and(|last| is(last.trim_ascii(), "chunked"))
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Length(u64),
    Chunked,
    /// Until the peer closes the connection (responses only).
    Eof,
    Done,
}

/// The framing headers of a message, fed one header at a time.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FramingScan {
    content_length: Option<u64>,
    bad_length: bool,
    te: bool,
    chunked: bool,
    connection: ConnectionOptions,
}

impl FramingScan {
    /// Feeds one header; returns whether it was a framing or `Connection` header.
    pub(crate) fn header(&mut self, name: &[u8], value: &[u8]) -> bool {
        if is(name, "content-length") {
            match parse_content_length(value) {
                Some(n) if self.content_length.is_none_or(|c| c == n) => {
                    self.content_length = Some(n);
                }
                _ => self.bad_length = true,
            }
        } else if is(name, "transfer-encoding") {
            self.te = true;
            // Chunked must be the last coding (of the last line).
            self.chunked = ends_chunked(value);
        } else if is(name, "connection") {
            self.connection.add(value);
        } else {
            return false;
        }
        true
    }

    /// What the `Connection` headers said.
    pub(crate) fn connection(&self) -> ConnectionOptions {
        self.connection
    }

    /// The framing of a request body: `Content-Length` and `Transfer-Encoding` together, a
    /// bad or conflicting length, or a coding other than chunked last are refused (400).
    pub(crate) fn request(&self, http11: bool) -> Result<Framing, Refusal> {
        if self.bad_length {
            return Err("invalid or conflicting content-length");
        }
        if self.te {
            if self.content_length.is_some() {
                return Err("both content-length and transfer-encoding");
            }
            if !http11 {
                return Err("transfer-encoding in an HTTP/1.0 request");
            }
            if !self.chunked {
                return Err("transfer-encoding not ending with chunked");
            }
            return Ok(Framing::Chunked);
        }
        Ok(match self.content_length {
            None | Some(0) => Framing::Done,
            Some(n) => Framing::Length(n),
        })
    }

    /// The framing of a response body (RFC 9112 §6.3), and whether the connection can carry
    /// another request after it. `Content-Length` with `Transfer-Encoding` is refused.
    pub(crate) fn response(
        &self,
        head_request: bool,
        status: u16,
        http10: bool,
    ) -> Result<(Framing, bool), Refusal> {
        if self.bad_length {
            return Err("invalid or conflicting content-length");
        }
        if self.te && self.content_length.is_some() {
            return Err("both content-length and transfer-encoding");
        }
        let framing = if head_request || status == 204 || status == 304 {
            Framing::Done
        } else if self.te {
            if self.chunked {
                Framing::Chunked
            } else {
                Framing::Eof
            }
        } else {
            match self.content_length {
                Some(0) => Framing::Done,
                Some(n) => Framing::Length(n),
                None => Framing::Eof,
            }
        };
        let close = self.connection.close || (http10 && !self.connection.keep_alive);
        Ok((framing, !close && framing != Framing::Eof))
    }
}

/// The scheme the client spoke to the router, for `X-Forwarded-Proto` and `Forwarded`.
pub(crate) type Proto = &'static str;

/// What the router says about the client, and what a trusted proxy before it said.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Forwarding<'a> {
    /// The peer's IP, as text.
    pub client_ip: &'a [u8],
    /// The `Host` the client asked for.
    pub host: &'a [u8],
    pub proto: Proto,
    /// From a trusted peer: its `X-Forwarded-For` (joined), `Forwarded`, `X-Forwarded-Proto`
    /// and `X-Forwarded-Host`.
    pub prior_for: Option<&'a [u8]>,
    pub prior_forwarded: Option<&'a [u8]>,
    pub prior_proto: Option<&'a [u8]>,
    pub prior_host: Option<&'a [u8]>,
}

impl Forwarding<'_> {
    /// The `X-Forwarded-For` value.
    pub(crate) fn write_for(&self, out: &mut Vec<u8>) {
        if let Some(prior) = self.prior_for {
            out.extend_from_slice(prior);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(self.client_ip);
    }

    /// The `X-Forwarded-Proto` value.
    pub(crate) fn proto(&self) -> &[u8] {
        self.prior_proto.unwrap_or(self.proto.as_bytes())
    }

    /// The `X-Forwarded-Host` value.
    pub(crate) fn forwarded_host(&self) -> &[u8] {
        self.prior_host.unwrap_or(self.host)
    }

    /// The `Forwarded` value (RFC 7239): `for=…;host="…";proto=…`, after a trusted peer's.
    pub(crate) fn write_forwarded(&self, out: &mut Vec<u8>) {
        if let Some(prior) = self.prior_forwarded {
            out.extend_from_slice(prior);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(b"for=");
        if self.client_ip.contains(&b':') {
            out.extend_from_slice(b"\"[");
            out.extend_from_slice(self.client_ip);
            out.extend_from_slice(b"]\"");
        } else {
            out.extend_from_slice(self.client_ip);
        }
        // A valid host has no `"` or `\`.
        out.extend_from_slice(b";host=\"");
        out.extend_from_slice(self.host);
        out.extend_from_slice(b"\";proto=");
        out.extend_from_slice(self.proto.as_bytes());
    }

    /// All four headers as head lines (`name: value\r\n`).
    pub(crate) fn write_lines(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"x-forwarded-for: ");
        self.write_for(out);
        out.extend_from_slice(b"\r\nx-forwarded-proto: ");
        out.extend_from_slice(self.proto());
        out.extend_from_slice(b"\r\nx-forwarded-host: ");
        out.extend_from_slice(self.forwarded_host());
        out.extend_from_slice(b"\r\nforwarded: ");
        self.write_forwarded(out);
        out.extend_from_slice(b"\r\n");
    }
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    pub status: u16,
    /// Length of the head in bytes.
    pub len: usize,
    pub framing: Framing,
    /// Whether the connection can carry another request after the body.
    pub reusable: bool,
    /// HTTP/1.0 status line.
    pub http10: bool,
    /// Whether it carries hop-by-hop headers.
    pub hop: bool,
}

/// What [`parse_response`] found at the start of the buffer.
pub(crate) enum Head<'h, 'b> {
    Partial,
    /// A 1xx head other than 101, of this length: skipped.
    Informational(usize),
    /// The head, its reason phrase and its headers.
    Final(ResponseHead, &'b str, &'h [httparse::Header<'b>]),
}

/// Parses a response head (a 101 is refused: the fast paths never ask for an upgrade).
pub(crate) fn parse_response<'h, 'b>(
    data: &'b [u8],
    head_request: bool,
    headers: &'h mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Head<'h, 'b>, Refusal> {
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        data,
        headers,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Head::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err("too many headers"),
        Err(_) => return Err("malformed head"),
    };
    let status = parsed.code.unwrap_or(0);
    if status == 101 {
        return Err("unrequested protocol switch");
    }
    if (100..200).contains(&status) {
        return Ok(Head::Informational(len));
    }
    if !(200..=999).contains(&status) {
        return Err("status code");
    }
    let http10 = parsed.version == Some(0);
    let mut scan = FramingScan::default();
    let mut hop = false;
    for h in parsed.headers.iter() {
        scan.header(h.name.as_bytes(), h.value);
        hop |= is_hop_by_hop_response(h.name.as_bytes());
    }
    let (framing, reusable) = scan.response(head_request, status, http10)?;
    Ok(Head::Final(
        ResponseHead {
            status,
            len,
            framing,
            reusable,
            http10,
            hop,
        },
        parsed.reason.unwrap_or(""),
        parsed.headers,
    ))
}

/// A chunked body decoder over a byte stream: tells framing bytes from payload without
/// copying. Strict: CRLF line ends only, hex sizes of at most 16 digits, extensions after
/// `;` (or whitespace), trailers dropped by the decoding reader and kept by the verbatim one.
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
    pub(crate) fn new() -> Self {
        ChunkScan::Size {
            value: 0,
            digits: 0,
            ext: false,
        }
    }

    /// Reads the start of `data`: `(framing, payload)` says that the first `framing` bytes are
    /// chunk framing and the `payload` bytes after them chunk data. Stops after a piece of
    /// payload or at the body's end; consumes all of `data` otherwise.
    pub(crate) fn next(&mut self, data: &[u8]) -> Result<(usize, usize), Refusal> {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            *self = match *self {
                ChunkScan::Done => break,
                ChunkScan::Data(n) => {
                    let take = n.min((data.len() - i) as u64);
                    *self = if take == n {
                        ChunkScan::DataCr
                    } else {
                        ChunkScan::Data(n - take)
                    };
                    return Ok((i, usize::try_from(take).unwrap_or(0)));
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
                    _ => return Err("chunk size"),
                },
                ChunkScan::SizeLf { value } => match b {
                    b'\n' if value == 0 => ChunkScan::TrailerStart,
                    b'\n' => ChunkScan::Data(value),
                    _ => return Err("chunk size line"),
                },
                ChunkScan::DataCr => match b {
                    b'\r' => ChunkScan::DataLf,
                    _ => return Err("chunk end"),
                },
                ChunkScan::DataLf => match b {
                    b'\n' => ChunkScan::new(),
                    _ => return Err("chunk end"),
                },
                ChunkScan::TrailerStart => match b {
                    b'\r' => ChunkScan::EndLf,
                    b'\n' => return Err("trailer line"),
                    _ => ChunkScan::TrailerLine,
                },
                ChunkScan::TrailerLine => match b {
                    b'\r' => ChunkScan::TrailerLf,
                    b'\n' => return Err("trailer line"),
                    _ => ChunkScan::TrailerLine,
                },
                ChunkScan::TrailerLf => match b {
                    b'\n' => ChunkScan::TrailerStart,
                    _ => return Err("trailer line"),
                },
                ChunkScan::EndLf => match b {
                    b'\n' => ChunkScan::Done,
                    _ => return Err("body end"),
                },
            };
            i += 1;
        }
        Ok((i, 0))
    }

    /// Consumes body bytes of `data`; returns how many belong to the body (all of them unless
    /// the body ends inside `data`).
    pub(crate) fn scan(&mut self, data: &[u8]) -> Result<usize, Refusal> {
        let mut at = 0;
        while at < data.len() && !self.is_done() {
            let (framing, payload) = self.next(&data[at..])?;
            at += framing + payload;
        }
        Ok(at)
    }

    pub(crate) fn is_done(&self) -> bool {
        *self == ChunkScan::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hosts() {
        for ok in [
            "web.localhost",
            "web.localhost:8080",
            "WEB.example.",
            "[::1]",
            "[::1]:80",
            "127.0.0.1:1",
            "a_b.example",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            ":80",
            "web.localhost:@evil.example",
            "web.localhost:80:80",
            "web.localhost:8o",
            "a@b",
            "a/b",
            "a b",
            "a,b",
            "[::1",
            "[zz]",
            "[::1]x",
            "a\"b",
            "web:123456",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn content_lengths() {
        assert_eq!(parse_content_length(b"0"), Some(0));
        assert_eq!(parse_content_length(b" 42 "), Some(42));
        for bad in [
            "",
            "+5",
            "-1",
            "0x5",
            "5 5",
            "5,5",
            "1e3",
            "99999999999999999999",
        ] {
            assert_eq!(parse_content_length(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn request_framing() {
        let scan = |headers: &[(&str, &str)]| {
            let mut s = FramingScan::default();
            for (n, v) in headers {
                s.header(n.as_bytes(), v.as_bytes());
            }
            s.request(true)
        };
        assert_eq!(scan(&[]), Ok(Framing::Done));
        assert_eq!(scan(&[("content-length", "5")]), Ok(Framing::Length(5)));
        assert_eq!(
            scan(&[("Content-Length", "5"), ("content-length", "5")]),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            scan(&[("Transfer-Encoding", "gzip, chunked")]),
            Ok(Framing::Chunked)
        );
        for bad in [
            &[("content-length", "5"), ("content-length", "6")][..],
            &[("content-length", "+5")],
            &[("content-length", "5"), ("transfer-encoding", "chunked")],
            &[("transfer-encoding", "chunked, gzip")],
            &[("transfer-encoding", "chunked"), ("transfer-encoding", "x")],
        ] {
            assert!(scan(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hop_by_hop_and_aliases() {
        assert!(is_hop_by_hop(b"Connection"));
        assert!(is_hop_by_hop(b"transfer-encoding"));
        assert!(!is_hop_by_hop(b"content-length"));
        assert!(is_forwarding(b"X-Real-IP"));
        assert!(is_underscore_alias(b"Content_Length"));
        assert!(is_underscore_alias(b"transfer_encoding"));
        assert!(is_underscore_alias(b"X_Forwarded_For"));
        assert!(!is_underscore_alias(b"x_custom"));
        assert!(!is_underscore_alias(b"content-length"));
        let names: Vec<&[u8]> =
            connection_names(b"close, Host, x-a, Content-Length, upgrade, transfer-encoding")
                .collect();
        assert_eq!(names, [&b"x-a"[..]]);
    }

    #[test]
    fn forwarded_values() {
        let f = Forwarding {
            client_ip: b"::1",
            host: b"web:80",
            proto: "http",
            ..Forwarding::default()
        };
        let mut out = Vec::new();
        f.write_forwarded(&mut out);
        assert_eq!(out, b"for=\"[::1]\";host=\"web:80\";proto=http");
        let f = Forwarding {
            client_ip: b"10.0.0.2",
            prior_for: Some(b"203.0.113.7"),
            ..f
        };
        out.clear();
        f.write_for(&mut out);
        assert_eq!(out, b"203.0.113.7, 10.0.0.2");
    }

    fn parse(data: &[u8], head: bool) -> Result<Option<ResponseHead>, Refusal> {
        let mut headers = [const { MaybeUninit::uninit() }; 64];
        match parse_response(data, head, &mut headers)? {
            Head::Partial | Head::Informational(_) => Ok(None),
            Head::Final(head, _, _) => Ok(Some(head)),
        }
    }

    #[test]
    fn response_heads() {
        let h = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", false)
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.framing, h.reusable, h.len),
            (Framing::Length(3), true, 38)
        );
        let h = parse(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert!(!h.reusable && h.http10);
        let h = parse(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap().unwrap();
        assert_eq!((h.framing, h.reusable), (Framing::Eof, false));
        let h = parse(
            b"HTTP/1.1 304 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Done);
        assert!(h.hop.not());
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n",
            b"HTTP/1.1 101 Switching\r\n\r\n",
            b"HTTP/1.1 099 X\r\n\r\n",
        ] {
            assert!(
                parse(bad, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    use std::ops::Not;

    fn chunked(pieces: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in pieces {
            out.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
            out.extend_from_slice(p);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    /// Decodes `data` fed in pieces of `step` bytes: (payload, body length).
    fn decode(data: &[u8], step: usize) -> Result<(Vec<u8>, usize), Refusal> {
        let mut scan = ChunkScan::new();
        let mut payload = Vec::new();
        let mut used = 0;
        for piece in data.chunks(step.max(1)) {
            let mut at = 0;
            while at < piece.len() && !scan.is_done() {
                let (framing, n) = scan.next(&piece[at..])?;
                payload.extend_from_slice(&piece[at + framing..at + framing + n]);
                at += framing + n;
            }
            used += at;
            if scan.is_done() {
                break;
            }
        }
        Ok((payload, used))
    }

    #[test]
    fn chunk_junk_is_refused() {
        for bad in [
            &b"zz\r\nab\r\n0\r\n\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"3\r\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"0\r\n\n",
            b"\r\n",
        ] {
            assert!(
                decode(bad, 64).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let (payload, used) = decode(b"5;a=b\r\nhello\r\n0\r\nX-T: 1\r\n\r\nNEXT", 3).unwrap();
        assert_eq!((payload.as_slice(), used), (&b"hello"[..], 27));
    }

    proptest! {
        #[test]
        fn chunked_round_trips(pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..6), step in 1usize..50, extra in proptest::collection::vec(any::<u8>(), 0..8)) {
            let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
            let mut body = chunked(&refs);
            let len = body.len();
            body.extend_from_slice(&extra);
            let (payload, used) = decode(&body, step).unwrap();
            prop_assert_eq!(payload, pieces.concat());
            prop_assert_eq!(used, len);
            let mut scan = ChunkScan::new();
            prop_assert_eq!(scan.scan(&body).unwrap(), len);
        }

        #[test]
        fn chunk_scan_never_panics_nor_overruns(data in proptest::collection::vec(any::<u8>(), 0..200), step in 1usize..20) {
            if let Ok((_, used)) = decode(&data, step) {
                prop_assert!(used <= data.len());
            }
        }

        #[test]
        fn content_length_matches_std(s in "[+-]?[0-9 ]{0,22}") {
            let std = s.trim().parse::<u64>().ok().filter(|_| !s.trim().starts_with('+'));
            prop_assert_eq!(parse_content_length(s.as_bytes()), std);
        }

        #[test]
        fn response_parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300), head in any::<bool>()) {
            let _ = parse(&data, head);
        }

        #[test]
        fn valid_hosts_have_no_authority_delimiters(s in "[a-z0-9.:@/?#\\[\\]-]{0,20}") {
            if valid_host(s.as_bytes()) {
                prop_assert!(!s.contains(['@', '/', '?', '#']));
                prop_assert!(s.matches(':').count() <= 1 || s.starts_with('['));
            }
        }

        #[test]
        fn forwarded_lines_are_one_line_each(ip in "[0-9a-f:.]{1,39}", host in "[a-z0-9.-]{1,30}(:[0-9]{1,5})?") {
            let f = Forwarding { client_ip: ip.as_bytes(), host: host.as_bytes(), proto: "http", ..Forwarding::default() };
            let mut out = Vec::new();
            f.write_lines(&mut out);
            prop_assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 4);
            prop_assert!(out.ends_with(b"\r\n"));
        }
    }
}

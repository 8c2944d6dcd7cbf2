//! Minimal HTTP/1.x message parsing and serialisation (server and client side).
//!
//! Everything here is pure (no IO) so it can be unit-tested.

use std::fmt::Write as _;

/// Largest request/response head (request line + headers) we accept.
pub const MAX_HEAD: usize = 16 * 1024;

/// Why a request head could not be accepted; maps onto an error status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Malformed syntax: 400.
    Bad(&'static str),
    /// Not HTTP/1.0 or HTTP/1.1: 505.
    Version,
    /// Valid but unsupported (e.g. Transfer-Encoding on a request): 501.
    Unsupported(&'static str),
}

impl ParseError {
    pub fn status(&self) -> u16 {
        match self {
            ParseError::Bad(_) => 400,
            ParseError::Version => 505,
            ParseError::Unsupported(_) => 501,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            ParseError::Bad(m) | ParseError::Unsupported(m) => m,
            ParseError::Version => "only HTTP/1.0 and HTTP/1.1 are supported",
        }
    }
}

/// Number of leading empty lines (`\r\n` / `\n`) a server should skip before a request line
/// (RFC 9112 §2.2).
pub fn leading_empty_lines(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

/// If `buf` holds a complete message head, returns its length including the blank line that
/// terminates it. Accepts both `\r\n` and bare `\n` line endings.
pub fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' && i > 0 {
            match (buf.get(i + 1), buf.get(i + 2)) {
                (Some(b'\n'), _) => return Some(i + 2),
                (Some(b'\r'), Some(b'\n')) => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// Splits a head into lines without their `\r\n` / `\n` terminators, dropping the final blank one.
fn head_lines(head: &str) -> impl Iterator<Item = &str> {
    head.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty())
}

/// Parses `Name: value` header lines.
pub fn parse_headers<'a>(
    lines: impl Iterator<Item = &'a str>,
) -> Result<Vec<(String, String)>, ParseError> {
    let mut headers = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            return Err(ParseError::Bad("obsolete header line folding"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(ParseError::Bad("header line without ':'"))?;
        if !is_token(name) {
            return Err(ParseError::Bad("invalid header name"));
        }
        headers.push((
            name.to_string(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }
    Ok(headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn header_has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Content-Length, allowing repeated identical values (`5, 5`); `Ok(None)` when absent.
fn content_length(headers: &[(String, String)]) -> Result<Option<usize>, ParseError> {
    let mut found: Option<usize> = None;
    for (_, v) in headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        for part in v.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ParseError::Bad("invalid Content-Length"));
            }
            let n: usize = part
                .parse()
                .map_err(|_| ParseError::Bad("Content-Length too large"))?;
            if found.is_some_and(|f| f != n) {
                return Err(ParseError::Bad("conflicting Content-Length values"));
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Origin-form target (`/path?query`); absolute-form targets are reduced to this.
    pub target: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub headers: Vec<(String, String)>,
}

/// Parses a complete request head (as delimited by [`find_head_end`]).
pub fn parse_request_head(head: &[u8]) -> Result<Request, ParseError> {
    let head =
        std::str::from_utf8(head).map_err(|_| ParseError::Bad("request head is not UTF-8"))?;
    let mut lines = head_lines(head);
    let request_line = lines.next().ok_or(ParseError::Bad("empty request"))?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::Bad("malformed request line"));
    };
    if !is_token(method) {
        return Err(ParseError::Bad("invalid method"));
    }
    let minor = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        v if v.starts_with("HTTP/") => return Err(ParseError::Version),
        _ => return Err(ParseError::Bad("malformed HTTP version")),
    };
    let target = normalize_target(target)?;
    let headers = parse_headers(lines)?;
    Ok(Request {
        method: method.to_string(),
        target,
        minor,
        headers,
    })
}

/// Accepts origin-form (`/p?q`), absolute-form (`http://h/p?q`) and asterisk-form (`*`).
fn normalize_target(target: &str) -> Result<String, ParseError> {
    if target.is_empty() || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(ParseError::Bad("invalid request target"));
    }
    if target.starts_with('/') || target == "*" {
        return Ok(target.to_string());
    }
    let lower = target.to_ascii_lowercase();
    for scheme in ["http://", "https://"] {
        if lower.starts_with(scheme) {
            let rest = &target[scheme.len()..];
            return Ok(match rest.find(['/', '?']) {
                Some(i) if rest[i..].starts_with('?') => format!("/{}", &rest[i..]),
                Some(i) => rest[i..].to_string(),
                None => "/".to_string(),
            });
        }
    }
    Err(ParseError::Bad("invalid request target"))
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Whether the client wants the connection kept open after this request.
    pub fn keep_alive(&self) -> bool {
        if header_has_token(&self.headers, "connection", "close") {
            false
        } else if self.minor >= 1 {
            true
        } else {
            header_has_token(&self.headers, "connection", "keep-alive")
        }
    }

    /// Length of the request body that follows the head.
    pub fn body_length(&self) -> Result<usize, ParseError> {
        if self.header("transfer-encoding").is_some() {
            return Err(ParseError::Unsupported(
                "Transfer-Encoding request bodies are not supported",
            ));
        }
        Ok(content_length(&self.headers)?.unwrap_or(0))
    }

    /// The path part of the target (before `?`).
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target.as_str(), |(p, _)| p)
    }

    /// The raw query string (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The first value of query parameter `key`, percent-decoded.
    /// `Some(Err(()))` when present but not decodable.
    pub fn query_param(&self, key: &str) -> Option<Result<String, ()>> {
        query_param(self.query()?, key)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes (and `+` as space when `plus_as_space`). `None` on a malformed
/// escape or if the result is not UTF-8.
pub fn percent_decode(s: &str, plus_as_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = hex(*bytes.get(i + 1)?)?;
                let lo = hex(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_as_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Looks up `key` in an `a=1&b=2` query string; values are percent-decoded.
pub fn query_param(query: &str, key: &str) -> Option<Result<String, ()>> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(k, true).as_deref() == Some(key) {
            return Some(percent_decode(v, true).ok_or(()));
        }
    }
    None
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// A response to serialise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: body.into(),
        }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        if let Some(h) = self
            .headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            h.1 = value.into();
        } else {
            self.headers.push((name.to_string(), value.into()));
        }
        self
    }

    /// Serialises as HTTP/1.1 with an exact Content-Length. With `head_only` (HEAD requests)
    /// the body is omitted but Content-Length still describes it.
    pub fn serialize(&self, head_only: bool, keep_alive: bool) -> Vec<u8> {
        let mut head = String::with_capacity(256);
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\n",
            self.status,
            reason_phrase(self.status)
        );
        for (n, v) in &self.headers {
            // Header values must not smuggle line breaks into the response.
            let v: String = v
                .chars()
                .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
                .collect();
            let _ = write!(head, "{n}: {v}\r\n");
        }
        let _ = write!(head, "Content-Length: {}\r\n", self.body.len());
        head.push_str(if keep_alive {
            "Connection: keep-alive\r\n\r\n"
        } else {
            "Connection: close\r\n\r\n"
        });
        let mut out = head.into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// A parsed (client-side) response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ParsedResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// Tries to parse a complete response (to a GET) from `buf`.
/// `Ok(None)`: need more bytes. With `eof` set, the peer has closed and whatever is there is
/// final (a body without framing ends at EOF).
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Option<ParsedResponse>, String> {
    let Some(head_len) = find_head_end(buf) else {
        if buf.len() > MAX_HEAD {
            return Err("response head too large".into());
        }
        return if eof {
            Err("connection closed before a complete response head".into())
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..head_len])
        .map_err(|_| "response head is not UTF-8".to_string())?;
    let mut lines = head_lines(head);
    let status_line = lines.next().ok_or("empty response head")?;
    let mut parts = status_line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(format!("malformed status line: {status_line:?}"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(format!("unsupported response version: {version:?}"));
    }
    let status: u16 = match code.parse() {
        Ok(s) if (100..=999).contains(&s) && code.len() == 3 => s,
        _ => return Err(format!("malformed status code: {code:?}")),
    };
    let headers =
        parse_headers(lines).map_err(|e| format!("bad response header: {}", e.message()))?;
    let rest = &buf[head_len..];

    // Interim responses (100 Continue, 103 Early Hints): skip and parse what follows.
    if (100..200).contains(&status) && status != 101 {
        return parse_response(rest, eof);
    }
    let done = |body: Vec<u8>| {
        Ok(Some(ParsedResponse {
            status,
            headers: headers.clone(),
            body,
        }))
    };
    if status == 204 || status == 304 {
        return done(Vec::new());
    }
    if header_has_token(&headers, "transfer-encoding", "chunked") {
        return match decode_chunked(rest)? {
            Some(body) => done(body),
            None if eof => Err("connection closed in the middle of a chunked body".into()),
            None => Ok(None),
        };
    }
    match content_length(&headers).map_err(|e| e.message().to_string())? {
        Some(n) if rest.len() >= n => done(rest[..n].to_vec()),
        Some(n) if eof => Err(format!(
            "connection closed after {} of {n} body bytes",
            rest.len()
        )),
        Some(_) => Ok(None),
        None if eof => done(rest.to_vec()),
        None => Ok(None),
    }
}

/// Decodes a chunked body. `Ok(None)` when incomplete.
pub fn decode_chunked(mut data: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = data.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&data[..eol]).map_err(|_| "bad chunk size line")?;
        let line = line.strip_suffix('\r').unwrap_or(line);
        let size_str = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_str, 16)
            .map_err(|_| format!("bad chunk size {size_str:?}"))?;
        data = &data[eol + 1..];
        if size == 0 {
            // Trailer section: header lines up to an empty line.
            loop {
                let Some(eol) = data.iter().position(|&b| b == b'\n') else {
                    return Ok(None);
                };
                let empty = eol == 0 || (eol == 1 && data[0] == b'\r');
                data = &data[eol + 1..];
                if empty {
                    return Ok(Some(body));
                }
            }
        }
        if data.len() < size {
            return Ok(None);
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size..];
        match data {
            [b'\r', b'\n', ..] => data = &data[2..],
            [b'\n', ..] => data = &data[1..],
            [] | [b'\r'] => return Ok(None),
            _ => return Err("missing CRLF after chunk data".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &str) -> Result<Request, ParseError> {
        let end = find_head_end(raw.as_bytes()).expect("complete head");
        parse_request_head(&raw.as_bytes()[..end])
    }

    #[test]
    fn head_end_crlf_and_lf() {
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest"),
            Some(27)
        );
        assert_eq!(find_head_end(b"GET / HTTP/1.1\nHost: a\n\nrest"), Some(24));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r"), None);
        assert_eq!(find_head_end(b""), None);
    }

    #[test]
    fn leading_empty_lines_are_counted() {
        assert_eq!(leading_empty_lines(b"\r\n\r\nGET"), 4);
        assert_eq!(leading_empty_lines(b"GET"), 0);
    }

    #[test]
    fn parses_simple_get() {
        let r =
            req("GET /slow?ms=500 HTTP/1.1\r\nHost: example\r\nX-A:  spaced \t\r\n\r\n").unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.target, "/slow?ms=500");
        assert_eq!(r.path(), "/slow");
        assert_eq!(r.query(), Some("ms=500"));
        assert_eq!(r.minor, 1);
        assert_eq!(r.header("host"), Some("example"));
        assert_eq!(r.header("X-a"), Some("spaced"));
        assert_eq!(r.header("missing"), None);
        assert_eq!(r.body_length(), Ok(0));
        assert!(r.keep_alive());
    }

    #[test]
    fn absolute_form_target_is_reduced() {
        assert_eq!(
            req("GET http://h:8080/a/b?x=1 HTTP/1.1\r\n\r\n")
                .unwrap()
                .target,
            "/a/b?x=1"
        );
        assert_eq!(
            req("GET http://h:8080 HTTP/1.1\r\n\r\n").unwrap().target,
            "/"
        );
        assert_eq!(
            req("GET http://h?x HTTP/1.1\r\n\r\n").unwrap().target,
            "/?x"
        );
    }

    #[test]
    fn keep_alive_rules() {
        assert!(req("GET / HTTP/1.1\r\n\r\n").unwrap().keep_alive());
        assert!(
            !req("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .unwrap()
                .keep_alive()
        );
        assert!(
            !req("GET / HTTP/1.1\r\nConnection: TE, Close\r\n\r\n")
                .unwrap()
                .keep_alive()
        );
        assert!(!req("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive());
        assert!(
            req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .unwrap()
                .keep_alive()
        );
    }

    #[test]
    fn body_length_rules() {
        assert_eq!(
            req("POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n")
                .unwrap()
                .body_length(),
            Ok(12)
        );
        assert_eq!(
            req("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n")
                .unwrap()
                .body_length(),
            Ok(5)
        );
        assert_eq!(
            req("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")
                .unwrap()
                .body_length(),
            Err(ParseError::Bad("conflicting Content-Length values"))
        );
        assert_eq!(
            req("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n")
                .unwrap()
                .body_length()
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            req("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap()
                .body_length()
                .unwrap_err()
                .status(),
            501
        );
    }

    #[test]
    fn rejects_malformed_heads() {
        let bad = [
            "GET /\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1 extra\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
            "GET / HTTX/1.1\r\n\r\n",
            "GET nopath HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
        ];
        for raw in bad {
            assert_eq!(req(raw).unwrap_err().status(), 400, "{raw:?}");
        }
        assert_eq!(
            req("GET / HTTP/2.0\r\n\r\n").unwrap_err(),
            ParseError::Version
        );
        assert_eq!(
            parse_request_head(b"GET /\xff HTTP/1.1\r\n\r\n")
                .unwrap_err()
                .status(),
            400
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c", true).as_deref(), Some("a b c"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(
            percent_decode("http%3A%2F%2Fh%3A1%2Fp", true).as_deref(),
            Some("http://h:1/p")
        );
        assert_eq!(percent_decode("%e2%82%ac", true).as_deref(), Some("€"));
        assert_eq!(percent_decode("bad%2", true), None);
        assert_eq!(percent_decode("bad%zz", true), None);
        assert_eq!(percent_decode("%ff", true), None);
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param("ms=500", "ms"), Some(Ok("500".into())));
        assert_eq!(query_param("a=1&ms=2&ms=3", "ms"), Some(Ok("2".into())));
        assert_eq!(query_param("flag&x=1", "flag"), Some(Ok("".into())));
        assert_eq!(
            query_param("url=http://web:8080/health", "url"),
            Some(Ok("http://web:8080/health".into()))
        );
        assert_eq!(
            query_param("url=http%3A%2F%2Fweb%2Fenv%2FX%3Fa%3D1", "url"),
            Some(Ok("http://web/env/X?a=1".into()))
        );
        assert_eq!(query_param("x=1", "ms"), None);
        assert_eq!(query_param("ms=%zz", "ms"), Some(Err(())));
        let r = req("GET /slow?ms=7 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(r.query_param("ms"), Some(Ok("7".into())));
        assert_eq!(
            req("GET /slow HTTP/1.1\r\n\r\n").unwrap().query_param("ms"),
            None
        );
    }

    #[test]
    fn serializes_with_content_length() {
        let r = Response::text(200, "v1\n").with_header("X-Demo-Version", "v1");
        let out = String::from_utf8(r.serialize(false, true)).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("\r\nContent-Length: 3\r\n"), "{out}");
        assert!(out.contains("\r\nX-Demo-Version: v1\r\n"), "{out}");
        assert!(out.contains("\r\nConnection: keep-alive\r\n\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\nv1\n"), "{out}");
        let head = String::from_utf8(r.serialize(true, false)).unwrap();
        assert!(
            head.contains("Content-Length: 3\r\n") && head.ends_with("Connection: close\r\n\r\n"),
            "{head}"
        );
        let injected = Response::text(200, "").with_header("X", "a\r\nEvil: 1");
        assert!(
            !String::from_utf8(injected.serialize(false, true))
                .unwrap()
                .contains("\r\nEvil")
        );
    }

    #[test]
    fn serialized_response_round_trips() {
        let r = Response::text(503, "unhealthy\n");
        let parsed = parse_response(&r.serialize(false, true), false)
            .unwrap()
            .unwrap();
        assert_eq!(parsed.status, 503);
        assert_eq!(parsed.body, b"unhealthy\n");
        assert_eq!(
            parsed.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
    }

    #[test]
    fn parses_content_length_responses() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse_response(&raw[..raw.len() - 1], false), Ok(None));
        assert!(parse_response(&raw[..raw.len() - 1], true).is_err());
        let r = parse_response(raw, false).unwrap().unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    }

    #[test]
    fn parses_eof_delimited_and_interim_responses() {
        let raw = b"HTTP/1.0 404 Not Found\r\n\r\nnope";
        assert_eq!(parse_response(raw, false), Ok(None));
        assert_eq!(parse_response(raw, true).unwrap().unwrap().body, b"nope");
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_response(raw, false).unwrap().unwrap().status, 204);
        assert!(parse_response(b"HTTP/1.1 2000 OK\r\n\r\n", true).is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", true).is_err());
        assert!(parse_response(b"", true).is_err());
    }

    #[test]
    fn parses_chunked_responses() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n";
        let r = parse_response(raw, false).unwrap().unwrap();
        assert_eq!(r.body, b"hello world");
        for cut in [50, raw.len() - 1, raw.len() - 3] {
            assert_eq!(parse_response(&raw[..cut], false), Ok(None), "cut at {cut}");
        }
        assert_eq!(decode_chunked(b"0\r\n\r\n"), Ok(Some(Vec::new())));
        assert!(decode_chunked(b"zz\r\n").is_err());
        assert!(decode_chunked(b"2\r\nabX").is_err());
    }
}

//! A minimal blocking HTTP/1.1 GET client for `/call` (service-to-service tests).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::http::{self, ParsedResponse};

/// A parsed `http://host[:port][/path][?query]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Origin-form request target (`/path?query`).
    pub target: String,
    /// Value for the Host header (`host[:port]` as written).
    pub authority: String,
}

pub fn parse_http_url(url: &str) -> Result<HttpUrl, String> {
    let rest = match url.get(..7) {
        Some(s) if s.eq_ignore_ascii_case("http://") => &url[7..],
        _ => return Err(format!("only http:// URLs are supported, got {url:?}")),
    };
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let (authority, target) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    if authority.contains('@') {
        return Err("user info in URLs is not supported".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unterminated IPv6 literal")?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(p.strip_prefix(':').ok_or("garbage after IPv6 literal")?),
            ),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("missing host in {url:?}"));
    }
    let port = match port {
        None | Some("") => 80,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or(format!("invalid port {p:?}"))?,
    };
    if target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("URL path contains spaces or control characters".into());
    }
    Ok(HttpUrl {
        host: host.to_string(),
        port,
        target,
        authority: authority.to_string(),
    })
}

/// Why a call failed; decides between 502 and 504.
#[derive(Debug)]
pub enum CallError {
    Timeout(String),
    Failed(String),
}

impl CallError {
    pub fn status(&self) -> u16 {
        match self {
            CallError::Timeout(_) => 504,
            CallError::Failed(_) => 502,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            CallError::Timeout(m) | CallError::Failed(m) => m,
        }
    }
}

fn io_err(context: &str, e: io::Error) -> CallError {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            CallError::Timeout(format!("{context}: timed out"))
        }
        _ => CallError::Failed(format!("{context}: {e}")),
    }
}

/// Performs `GET url` with `Connection: close`, with an overall deadline of `timeout`.
pub fn get(url: &HttpUrl, timeout: Duration) -> Result<ParsedResponse, CallError> {
    let deadline = Instant::now() + timeout;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| CallError::Timeout(format!("timed out after {timeout:?}")))
    };

    // std resolves names with getaddrinfo (so /etc/hosts and Docker's embedded DNS work).
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| CallError::Failed(format!("cannot resolve {:?}: {e}", url.host)))?
        .collect();
    if addrs.is_empty() {
        return Err(CallError::Failed(format!(
            "{:?} resolved to no addresses",
            url.host
        )));
    }
    let mut last_err = None;
    let mut stream = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, remaining()?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = Some(io_err(&format!("connect to {addr}"), e)),
        }
    }
    let Some(mut stream) = stream else {
        return Err(
            last_err.unwrap_or_else(|| CallError::Failed("no address to connect to".into()))
        );
    };
    let _ = stream.set_nodelay(true);

    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: paz-demo-app\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.target, url.authority
    );
    stream
        .set_write_timeout(Some(remaining()?))
        .map_err(|e| io_err("set timeout", e))?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| io_err("send request", e))?;

    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        stream
            .set_read_timeout(Some(remaining()?))
            .map_err(|e| io_err("set timeout", e))?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("read response", e)),
        };
        let eof = n == 0;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(resp) = http::parse_response(&buf, eof).map_err(CallError::Failed)? {
            return Ok(resp);
        }
        if buf.len() > 64 * 1024 * 1024 {
            return Err(CallError::Failed(
                "upstream response larger than 64 MiB".into(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str, port: u16, target: &str, authority: &str) -> HttpUrl {
        HttpUrl {
            host: host.into(),
            port,
            target: target.into(),
            authority: authority.into(),
        }
    }

    #[test]
    fn parses_urls() {
        assert_eq!(
            parse_http_url("http://web:8080/health"),
            Ok(url("web", 8080, "/health", "web:8080"))
        );
        assert_eq!(parse_http_url("http://web"), Ok(url("web", 80, "/", "web")));
        assert_eq!(
            parse_http_url("HTTP://web:/x?y=1#frag"),
            Ok(url("web", 80, "/x?y=1", "web:"))
        );
        assert_eq!(
            parse_http_url("http://10.0.0.1:81?q"),
            Ok(url("10.0.0.1", 81, "/?q", "10.0.0.1:81"))
        );
        assert_eq!(
            parse_http_url("http://[::1]:9000/a"),
            Ok(url("::1", 9000, "/a", "[::1]:9000"))
        );
        assert_eq!(
            parse_http_url("http://[fe80::1]"),
            Ok(url("fe80::1", 80, "/", "[fe80::1]"))
        );
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "https://web/",
            "web:8080/",
            "http://",
            "http://:80/",
            "http://web:0/",
            "http://web:99999/",
            "http://web:x/",
            "http://u:p@web/",
            "http://[::1/",
            "http://[::1]x/",
            "http://web/a b",
        ] {
            assert!(parse_http_url(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}

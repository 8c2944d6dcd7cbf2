//! HAProxy's runtime API over its unix sockets: one command per connection (HAProxy answers
//! and closes), with a timeout. The text protocol is HAProxy's own; no crate speaks it.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::error::{Error, Result};

/// How long one command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of an answer read (`show stat` of thousands of servers fits).
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

/// Sends `command` to the socket at `path` and returns the answer.
pub async fn ask(path: &Path, command: &str) -> Result<String> {
    ask_within(path, command, COMMAND_TIMEOUT).await
}

/// [`ask`] with a timeout of its own (the master's socket takes connections it never
/// answers while it re-executes itself for a reload).
pub async fn ask_within(path: &Path, command: &str, timeout: Duration) -> Result<String> {
    let exchange = async {
        let mut stream = UnixStream::connect(path).await?;
        stream.write_all(command.as_bytes()).await?;
        stream.write_all(b"\n").await?;
        let mut answer = Vec::new();
        (&mut stream)
            .take(MAX_ANSWER)
            .read_to_end(&mut answer)
            .await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(source)) => Err(Error::HaproxySocket {
            command: command.to_owned(),
            message: format!("{} ({source})", path.display()),
        }),
        Err(_) => Err(Error::HaproxySocket {
            command: command.to_owned(),
            message: format!("{}: no answer within {timeout:?}", path.display()),
        }),
    }
}

/// Sends a command that changes state: an answer other than HAProxy's success messages is
/// an error carrying it.
pub async fn change(path: &Path, command: &str) -> Result<()> {
    let answer = ask(path, command).await?;
    let answer = answer.trim();
    let succeeded = answer.is_empty()
        || (command.contains(" addr ")
            && (answer.contains("changed") || answer.starts_with("no need to change")));
    if succeeded {
        Ok(())
    } else {
        Err(Error::HaproxySocket {
            command: command.to_owned(),
            message: answer.to_owned(),
        })
    }
}

/// The `Name: value` lines of `show info`.
pub fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim())
    })
}

/// The current sessions (`scur`) of `backend/server` in a `show stat` CSV answer.
pub fn current_sessions(stat: &str, backend: &str, server: &str) -> Option<u64> {
    let mut lines = stat.lines();
    let header = lines.next()?.trim_start_matches("# ");
    let columns: Vec<&str> = header.split(',').collect();
    let column = |name: &str| columns.iter().position(|c| *c == name);
    let (px, sv, scur) = (column("pxname")?, column("svname")?, column("scur")?);
    lines.find_map(|line| {
        let fields: Vec<&str> = line.split(',').collect();
        (fields.get(px) == Some(&backend) && fields.get(sv) == Some(&server))
            .then(|| fields.get(scur)?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_haproxy_writes_them() {
        let info = "Name: HAProxy\nVersion: 2.6.12-1+deb12u4\nPid: 18065\nUptime_sec: 3\n";
        assert_eq!(info_field(info, "Pid"), Some("18065"));
        assert_eq!(info_field(info, "Version"), Some("2.6.12-1+deb12u4"));
        assert_eq!(info_field(info, "Nope"), None);
        let stat = "# pxname,svname,qcur,qmax,scur,smax\npublic,FRONTEND,,,7,9\nbe_a,s1,0,0,3,4\nbe_a,s2,0,0,0,0\n";
        assert_eq!(current_sessions(stat, "be_a", "s1"), Some(3));
        assert_eq!(current_sessions(stat, "be_a", "s2"), Some(0));
        assert_eq!(current_sessions(stat, "be_a", "s3"), None);
        assert_eq!(current_sessions("", "be_a", "s1"), None);
        assert_eq!(current_sessions("garbage\n,,,\n", "be_a", "s1"), None);
    }
}

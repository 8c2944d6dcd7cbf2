//! What the router answers itself on the plain-HTTP listener, before routing: ACME HTTP-01
//! challenges (`/.well-known/acme-challenge/<token>`) and the redirect of hosts that have a
//! certificate to HTTPS (unless their service opted out). Empty (the common case without
//! TLS), it costs one atomic load.

use std::collections::{HashMap, HashSet};

/// The prefix of ACME HTTP-01 challenge paths (RFC 8555 §8.3).
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// The router's own answers.
#[derive(Debug, Default, Clone)]
pub(crate) struct Edge {
    /// ACME HTTP-01: token → key authorization.
    pub challenges: HashMap<String, String>,
    /// Hosts redirected from `http://` to `https://`: those with a certificate, less
    /// `opted_out`.
    pub redirect: HashSet<String>,
    /// Hosts whose service opted out of the redirect (`https_redirect: false`): served over
    /// plain HTTP, and without HSTS over HTTPS.
    pub opted_out: HashSet<String>,
    /// The port of the HTTPS listener, when it is not 443 (for the redirect's `Location`).
    pub https_port: Option<u16>,
    /// `Strict-Transport-Security` to send on HTTPS answers, if any.
    pub hsts: Option<String>,
}

/// What the router answers itself.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// 200 with the key authorization of a challenge.
    Challenge(String),
    /// 308 to this `https://` URL.
    Redirect(String),
}

impl Edge {
    /// Whether there is nothing to answer (the fast path need not look).
    pub fn is_empty(&self) -> bool {
        self.challenges.is_empty() && self.redirect.is_empty()
    }

    /// What to answer for `host` (routing form: lowercase, no port) and the request target
    /// `target` (path and query) on the plain listener, if anything.
    pub fn answer(&self, host: &str, target: &str) -> Option<Answer> {
        if let Some(token) = target.strip_prefix(CHALLENGE_PREFIX) {
            // An unknown token falls through: it may be a backend's own ACME client.
            if let Some(key_authorization) = self.challenges.get(token) {
                return Some(Answer::Challenge(key_authorization.clone()));
            }
        }
        if self.redirect.contains(host) {
            let port = self.https_port.map(|p| format!(":{p}")).unwrap_or_default();
            return Some(Answer::Redirect(format!("https://{host}{port}{target}")));
        }
        None
    }

    /// The `Strict-Transport-Security` value for an HTTPS answer to `host` (routing form):
    /// none without HSTS, or for a host whose service opted out of the redirect.
    pub fn hsts_for(&self, host: impl FnOnce() -> Option<String>) -> Option<&str> {
        let hsts = self.hsts.as_deref()?;
        if !self.opted_out.is_empty() && host().is_some_and(|h| self.opted_out.contains(&h)) {
            return None;
        }
        Some(hsts)
    }

    /// Whether the fast path must hand this request to the general path (which answers).
    pub fn wants(&self, host: &str, target: &str) -> bool {
        !self.is_empty() && self.answer(host, target).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_then_redirects_then_nothing() {
        let mut edge = Edge::default();
        assert!(edge.is_empty());
        assert_eq!(edge.answer("web.example.com", "/"), None);
        edge.challenges.insert("tok".into(), "tok.thumb".into());
        edge.redirect.insert("web.example.com".into());
        assert_eq!(
            edge.answer("web.example.com", "/.well-known/acme-challenge/tok"),
            Some(Answer::Challenge("tok.thumb".into()))
        );
        assert_eq!(
            edge.answer("web.example.com", "/a?b=1"),
            Some(Answer::Redirect("https://web.example.com/a?b=1".into()))
        );
        edge.https_port = Some(8443);
        assert_eq!(
            edge.answer("web.example.com", "/"),
            Some(Answer::Redirect("https://web.example.com:8443/".into()))
        );
        assert_eq!(edge.answer("api.example.com", "/"), None);
        assert!(edge.wants("api.example.com", "/.well-known/acme-challenge/tok"));
        assert!(!edge.wants("api.example.com", "/.well-known/acme-challenge/other"));
    }

    #[test]
    fn hsts_is_not_sent_for_hosts_that_opted_out_of_the_redirect() {
        let mut edge = Edge::default();
        assert_eq!(edge.hsts_for(|| Some("web.example.com".into())), None);
        edge.hsts = Some("max-age=60".into());
        assert_eq!(
            edge.hsts_for(|| Some("web.example.com".into())),
            Some("max-age=60")
        );
        edge.opted_out.insert("plain.example.com".into());
        assert_eq!(edge.hsts_for(|| Some("plain.example.com".into())), None);
        assert_eq!(edge.hsts_for(|| None), Some("max-age=60"));
        assert_eq!(
            edge.hsts_for(|| Some("web.example.com".into())),
            Some("max-age=60")
        );
    }
}

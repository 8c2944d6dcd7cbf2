//! Proxy backends: the built-in router and HAProxy. Arrives with the router issue.
//!
//! This crate holds no code yet: it reserves its place in the workspace layout.

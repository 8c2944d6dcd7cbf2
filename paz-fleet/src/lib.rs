//! The Scheduler on CoreOS fleet's v1 HTTP API. Arrives with the fleet issue.
//!
//! This crate holds no code yet: it reserves its place in the workspace layout.

//! The Store on etcd v3. Arrives with the etcd issue.
//!
//! This crate holds no code yet: it reserves its place in the workspace layout.

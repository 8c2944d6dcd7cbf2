//! Scheduler backends on the Docker Engine API: local Docker and Docker Swarm. Arrives with the Docker issue.
//!
//! This crate holds no code yet: it reserves its place in the workspace layout.

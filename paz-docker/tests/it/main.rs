//! paz-docker against the real Docker Engine and the locally built `paz-demo:v1` image.
//!
//! Every test runs on a network of its own (`paz-test-<name>-<random>`), uses service names
//! with a random suffix, and removes its containers, volumes and network when it ends, even
//! when it fails. Without Docker (or the image, which is built on demand) the tests print
//! `SKIPPED` and pass, except with `CI=true`, where they fail.

mod contract;
mod lifecycle;
mod observe;
mod support;
mod swarm;

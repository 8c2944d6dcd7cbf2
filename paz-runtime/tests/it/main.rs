//! The runtime against the in-memory fakes: deploy strategies, the health gate, crash
//! replacement, scaling, orphans and resuming after a restart.

mod reconciler;
mod supervision;

//! Contract test suites: one per port. Every backend runs the suite of the trait it
//! implements, so a new backend proves itself by passing the same checks as the others.
//! Each suite panics with a message naming the broken rule.

pub mod health;
pub mod proxy;
pub mod scheduler;
pub mod store;

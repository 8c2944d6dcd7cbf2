//! The deploy policy, as pure functions the runtime (`paz-runtime`) calls and carries out.
//!
//! [`plan`] goes from what a service should run and what is observed to the next actions.
//! The runtime calls it whenever the service or its instances change and carries the actions
//! out; because the plan depends only on the target and the observation, a server that
//! restarts mid-deploy simply plans again and continues (or cleans up).
//!
//! Strategies:
//! - **rolling** (start-first): start up to `max_surge` new instances; each new instance that
//!   passes its health check lets one old instance drain.
//! - **recreate**: drain and stop every old instance, then start the new ones.
//! - **blue-green**: start all new instances unrouted; once all are healthy, switch all
//!   traffic at once and drain the old ones.
//! - **canary**: start all new instances unrouted; once healthy, send them `canary_steps[i]`
//!   percent of the traffic; each promotion moves to the next step; at 100 the old drain.
//!
//! The health gate: while a deployment runs, a new instance that exits, or does not pass its
//! health check within `health_timeout`, fails the deployment (the caller then reverts the
//! service to its previous release, which this same planner converges back to).
//!
//! Around the planner, the rest of the policy is pure too, so property tests see it:
//! [`health`] (when an instance turns healthy or unhealthy), [`backoff`] (how long a crashing
//! slot waits), [`routes`] (the one route-table builder, from instances, weights and drains)
//! and [`lifecycle`] (pending → running → steps → succeeded | failed | cancelled).

pub mod backoff;
pub mod health;
pub mod lifecycle;
mod plan;
pub mod routes;

pub use plan::{Action, ObservedInstance, Plan, PlanInput, plan};

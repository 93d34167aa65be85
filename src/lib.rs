//! entra-here-sync: keeps HERE Enterprise Browser's SCIM users and groups in step with
//! the users and groups assigned to one Microsoft Entra enterprise application.
//!
//! One cycle is a pipeline, one module per stage:
//!
//! - [`config`] — the operator's TOML, validated;
//! - [`graph`] — Graph token, assignments and delta rounds, applied to the mirror;
//! - [`state`] — SQLite: mirror, pushed snapshot, delta links, escrow, history;
//! - [`mapping`] — Graph object → SCIM attributes, as data;
//! - [`plan`] — pure diff of desired state against the snapshot;
//! - [`scim`] — the SCIM client and PATCH building;
//! - [`push`] — executes a plan with bounded concurrency, recording acknowledgements;
//! - [`cycle`] — read → plan → brake → push → report;
//! - [`daemon`] — the schedule and signals of `run`; [`metrics`] — its Prometheus endpoint;
//! - [`ondemand`] — `sync --user`: one user now, every step printed;
//! - [`report`], [`status`], [`logging`], [`progress`] — what operators see;
//! - [`cli`] — the command line; [`demo`] and [`sim`] — the simulated tenant and HERE.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod cli;
pub mod config;
pub mod cycle;
pub mod daemon;
pub mod demo;
#[doc(hidden)]
pub mod fuzzing;
pub mod graph;
pub mod http;
pub mod logging;
pub mod mapping;
pub mod metrics;
pub mod ondemand;
pub mod plan;
pub mod progress;
pub mod push;
pub mod report;
pub mod scim;
pub mod sim;
pub mod state;
pub mod status;

//! mirrord-up: a declarative reconciler for mirrord sessions.
//!
//! The YAML (`config`) is the desired state, resolved into `ServiceSpec`s with a `ConfigHash`
//! each (`desired`, `generate`, `spec`); the state file (`state`) records what was started;
//! `plan` compares the two without side effects; the executor (`engine`) carries a plan out on
//! real process groups (`process`).

pub mod cli;
pub mod commands;
pub mod config;
pub mod desired;
pub mod engine;
pub mod events;
pub mod fsutil;
pub mod generate;
pub mod graph;
pub mod handover;
pub mod infer;
pub mod output;
pub mod plan;
pub mod policy;
pub mod process;
pub mod progress;
pub mod readiness;
pub mod report;
pub mod runner;
pub mod spec;
pub mod state;
pub mod supervisor;
pub mod tail;
pub mod watch;

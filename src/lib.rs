//! mirrord-up: a declarative reconciler for mirrord sessions.
//!
//! The YAML (`config`) is the desired state, resolved into `ServiceSpec`s with a `ConfigHash`
//! each (`desired`, `generate`, `spec`); the state file (`state`) records what was started;
//! `plan` compares the two without side effects and decides everything (restart policy,
//! gating); the executor (`engine`) carries a plan out through `seams` on real process groups
//! (`process`).

// First, with its printing macros: see `output`'s documentation.
#[macro_use]
pub mod output;
pub mod cli;
pub mod commands;
pub mod config;
pub mod desired;
pub mod engine;
pub mod error;
pub mod event_hub;
pub mod events;
pub mod fsutil;
pub mod generate;
pub mod graph;
pub mod handover;
pub mod infer;
pub mod logrotate;
pub mod os;
pub mod plan;
pub mod policy;
pub mod process;
pub mod progress;
pub mod project;
pub mod readiness;
pub mod report;
pub mod request;
pub mod runner;
pub mod seams;
pub mod secs;
pub mod session;
pub mod spec;
pub mod state;
pub mod stop_owner;
pub mod supervisor;
pub mod tail;
pub mod watch;

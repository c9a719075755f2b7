//! `cargo eterna-port`: ports an ARM64 (EL2) Rust hypervisor workspace to x86_64 (VT-x).
//!
//! Data flows one way: workspace scan ([`workspace`]) → plan ([`plan`]) → offline drafts
//! ([`engine`]) → the agent swarm ([`swarm`], [`llm`]) → safe writes ([`writer`]) → the
//! cargo check loop ([`fixloop`]) → boot ([`emulate`]), with everything recorded in the
//! store ([`store`]). [`ops`] holds each command as a library call (what the command
//! line and the REST API call); [`app`] turns the command line into those calls and
//! renders their results, and `main.rs` is a thin shell around [`app::run`].
//! ARCHITECTURE.md in the repository is the map.
#![warn(missing_docs)]

pub mod app;
pub mod cli;
pub mod config;
pub mod emulate;
pub mod engine;
pub mod fixloop;
pub mod knowledge;
pub mod llm;
pub mod ops;
pub mod plan;
pub mod report;
pub mod serve;
pub mod store;
pub mod swarm;
pub mod toolchain;
pub mod workspace;
pub mod writer;

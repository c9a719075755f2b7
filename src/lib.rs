//! `cargo eterna-port`: ports an ARM64 (EL2) Rust hypervisor workspace to x86_64 (VT-x).
//!
//! Data flows one way: workspace scan → plan → (swarm → write → check → boot, in later
//! stages). The binary in `main.rs` is a thin shell around [`app::run`].

pub mod app;
pub mod check_report;
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
pub mod store;
pub mod swarm;
pub mod toolchain;
pub mod workspace;
pub mod writer;

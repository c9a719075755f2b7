//! The integration tests, one binary (as cargo and cargo-nextest keep theirs): a module
//! per area, sharing `common` (temp workspaces, the binary, scripted model servers).

mod ask;
mod boot;
mod check;
mod common;
mod config;
mod contract;
mod dashboard;
mod fixture_boot;
mod fixture_plan;
mod fixture_port;
mod groups;
mod layout_ports;
mod layouts;
mod lexical;
mod llm;
mod plan;
mod port;
mod prompts;
mod real_model;
mod retrieval;
mod retrieval_arch;
mod serve;
mod setup;
mod store;
mod swarm;
mod templates_generic;
mod x86_logic;

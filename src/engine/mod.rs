//! The offline porting engine: turns a planned ARM64 module into its x86_64 module
//! from templates, keeps arch-neutral items, stubs what it cannot port, and wires the
//! x86_64 layer into the crate with cfg gates.

pub mod port;
pub mod source;
pub mod templates;

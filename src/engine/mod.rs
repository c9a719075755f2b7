//! The offline porting engine: derives each planned ARM64 module's x86_64 module from
//! its source (names and signatures kept, mechanical translations from the porting
//! knowledge, `unimplemented!` stubs for the rest), wires the x86_64 layer into the
//! crate with cfg gates, writes the generic VT-x support library, and counts coverage
//! from the text it writes.

pub mod coverage;
pub mod deps;
pub mod derive;
pub mod fix;
pub mod port;
pub mod source;
pub mod stub;
pub mod support;
pub mod wiring;

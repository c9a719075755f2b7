//! x86_64 (Intel VT-x) support library written by cargo-eterna-port.
//!
//! A small, generic layer the ported modules may call: VMX instructions, VMCS field
//! encodings, EPT and IA-32e paging entries, exit reasons, MSR/CR/CPUID/port I/O,
//! and a polled 16550 console. It depends on `core` only and knows nothing of the
//! hypervisor it is written into. The tool writes it again on every port (do not
//! edit it by hand; a hand edit is kept and the new version skipped).
#![allow(dead_code)]

pub mod ept_entry;
pub mod exit_reason;
pub mod instr;
pub mod mmio_insn;
pub mod uart;
pub mod vmx_fields;

//! The x86_64 register mapping of the eterna hypercall ABI.
//!
//! eterna-core defines hypercalls as four 64-bit registers in and four out
//! (`x0..x3` on AArch64, SMCCC style). On x86_64 the guest executes
//! `VMCALL` (`0F 01 C1`) with:
//!
//! | ABI slot | AArch64 | x86_64 | in                 | out      |
//! |----------|---------|--------|--------------------|----------|
//! | 0        | x0      | RAX    | function id        | status   |
//! | 1        | x1      | RDI    | argument 1         | result 1 |
//! | 2        | x2      | RSI    | argument 2         | result 2 |
//! | 3        | x3      | RDX    | argument 3         | result 3 |
//!
//! RAX carries the function identifier as in KVM's convention; the argument
//! registers are the first three System V argument registers (RBX, KVM's
//! first argument, cannot be named in Rust inline assembly). Every other
//! register is preserved. VMCALL traps with exit reason 18 and the guest
//! RIP still pointing at it; the hypervisor advances RIP by the 3-byte
//! instruction length before resuming.
//!
//! Pure logic: compiles for the bare-metal target and on the build host.

/// General-purpose registers in the x86 encoding order (the `reg`/`rm`
/// numbers of ModRM with REX extension bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Gpr {
    Rax = 0,
    Rcx = 1,
    Rdx = 2,
    Rbx = 3,
    Rsp = 4,
    Rbp = 5,
    Rsi = 6,
    Rdi = 7,
    R8 = 8,
    R9 = 9,
    R10 = 10,
    R11 = 11,
    R12 = 12,
    R13 = 13,
    R14 = 14,
    R15 = 15,
}

impl Gpr {
    /// Index into a 16-entry register file.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The register with encoding `n` (0..=15).
    pub const fn from_index(n: usize) -> Option<Self> {
        const ALL: [Gpr; 16] = [
            Gpr::Rax,
            Gpr::Rcx,
            Gpr::Rdx,
            Gpr::Rbx,
            Gpr::Rsp,
            Gpr::Rbp,
            Gpr::Rsi,
            Gpr::Rdi,
            Gpr::R8,
            Gpr::R9,
            Gpr::R10,
            Gpr::R11,
            Gpr::R12,
            Gpr::R13,
            Gpr::R14,
            Gpr::R15,
        ];
        if n < 16 {
            Some(ALL[n])
        } else {
            None
        }
    }
}

/// The registers carrying ABI slots 0..=3.
pub const HYPERCALL_REGS: [Gpr; 4] = [Gpr::Rax, Gpr::Rdi, Gpr::Rsi, Gpr::Rdx];

/// Encoding of VMCALL.
pub const VMCALL_BYTES: [u8; 3] = [0x0F, 0x01, 0xC1];
/// Encoding of AMD's VMMCALL, which an x86 guest may use by mistake; it
/// raises #UD under VT-x and is not part of the ABI.
pub const VMMCALL_BYTES: [u8; 3] = [0x0F, 0x01, 0xD9];
/// Length of VMCALL in bytes.
pub const VMCALL_LEN: u64 = 3;

/// Collects the four ABI slots from a register file indexed by [`Gpr`].
pub fn read_args(gprs: &[u64; 16]) -> [u64; 4] {
    HYPERCALL_REGS.map(|reg| gprs[reg.index()])
}

/// Stores the four ABI result slots into a register file.
pub fn write_results(gprs: &mut [u64; 16], results: [u64; 4]) {
    for (reg, value) in HYPERCALL_REGS.iter().zip(results) {
        gprs[reg.index()] = value;
    }
}

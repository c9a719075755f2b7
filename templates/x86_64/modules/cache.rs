//! Cache, TLB and ordering maintenance on x86_64.
//!
//! x86 keeps instruction and data caches coherent with each other and with
//! the page-table walker, so most AArch64 maintenance operations become
//! fences or nothing. What remains: CLFLUSH/WBINVD for memory that non-
//! snooping agents read, CR3 reloads for the hypervisor's own TLB entries,
//! and INVEPT/INVVPID for guest-physical and guest-linear translations
//! cached under VMX.
//!
//! The functions keep the AArch64 names the architecture-neutral code and
//! the other modules of the port use (`dsb_sy`, `isb`, `tlbi_*`), each
//! documented with what it is on x86.

use core::arch::asm;
use core::sync::atomic::{compiler_fence, Ordering};

use super::msr;

/// INVEPT type: invalidate mappings of one EPTP.
pub const INVEPT_SINGLE_CONTEXT: u64 = 1;
/// INVEPT type: invalidate mappings of every EPTP.
pub const INVEPT_ALL_CONTEXT: u64 = 2;
/// INVVPID type: one linear address of one VPID.
pub const INVVPID_INDIVIDUAL_ADDRESS: u64 = 0;
/// INVVPID type: every mapping of one VPID.
pub const INVVPID_SINGLE_CONTEXT: u64 = 1;
/// INVVPID type: every mapping of every VPID except VPID 0.
pub const INVVPID_ALL_CONTEXT: u64 = 2;

/// Full memory fence (MFENCE); the counterpart of `dsb sy`.
#[inline(always)]
pub fn dsb_sy() {
    // SAFETY: a fence has no effect besides ordering.
    unsafe { asm!("mfence", options(nostack, preserves_flags)) };
}

/// Store fence (SFENCE); the counterpart of `dsb ishst`. Ordinary x86
/// stores are already ordered; this also orders non-temporal stores and
/// CLFLUSHOPT.
#[inline(always)]
pub fn dsb_ishst() {
    // SAFETY: a fence has no effect besides ordering.
    unsafe { asm!("sfence", options(nostack, preserves_flags)) };
}

/// Serialises the instruction stream; the counterpart of `isb`. Writes to
/// control registers and MSRs are serialising on their own; this is for
/// code that must not run ahead of earlier stores (e.g. after writing
/// instructions). CPUID is architecturally serialising.
#[inline(always)]
pub fn isb() {
    compiler_fence(Ordering::SeqCst);
    let _ = msr::cpuid(0, 0);
    compiler_fence(Ordering::SeqCst);
}

/// CLFLUSH line size in bytes (CPUID.1:EBX[15:8] * 8).
pub fn dcache_line_size() -> usize {
    let size = ((msr::cpuid(1, 0).ebx >> 8) & 0xff) as usize * 8;
    if size == 0 {
        64
    } else {
        size
    }
}

/// Writes back and invalidates `[start, start + len)` from every cache
/// level (CLFLUSH per line, then MFENCE), for agents that do not snoop.
pub fn clean_invalidate_range(start: usize, len: usize) {
    let line = dcache_line_size();
    let mut addr = start & !(line - 1);
    let end = start.saturating_add(len);
    while addr < end {
        // SAFETY: CLFLUSH only moves data between cache and memory; the
        // address lies in a range the caller owns and is mapped.
        unsafe { asm!("clflush [{}]", in(reg) addr, options(nostack, preserves_flags)) };
        addr += line;
    }
    dsb_sy();
}

/// Writes back and invalidates all caches of this CPU (WBINVD). Slow; only
/// for changing memory types of large ranges.
pub fn wbinvd() {
    // SAFETY: WBINVD only writes back and drops cache lines.
    unsafe { asm!("wbinvd", options(nostack, preserves_flags)) };
}

/// The counterpart of `ic iallu`: x86 instruction caches snoop stores, so
/// only the prefetched instruction stream has to be serialised.
pub fn invalidate_icache_all() {
    isb();
}

/// Invalidates this CPU's own (host) TLB entries, global ones included;
/// the counterpart of `tlbi alle2`.
pub fn tlbi_alle2() {
    let cr4 = msr::read_cr4();
    const PGE: u64 = 1 << 7;
    // SAFETY: toggling CR4.PGE flushes every TLB entry including global
    // ones; reloading CR3 with its current value flushes the rest. Neither
    // changes any translation.
    unsafe {
        if cr4 & PGE != 0 {
            msr::write_cr4(cr4 & !PGE);
            msr::write_cr4(cr4);
        } else {
            msr::write_cr3(msr::read_cr3());
        }
    }
}

/// INVEPT descriptor: EPTP and a reserved quadword.
#[repr(C, align(16))]
struct InveptDescriptor {
    eptp: u64,
    reserved: u64,
}

/// INVVPID descriptor: VPID in bits 15:0, linear address in the second
/// quadword.
#[repr(C, align(16))]
struct InvvpidDescriptor {
    vpid: u64,
    address: u64,
}

/// Executes INVEPT of `kind` for `eptp`. Returns false on VMfail (the type
/// is not supported or VMX is off).
pub fn invept(kind: u64, eptp: u64) -> bool {
    let descriptor = InveptDescriptor { eptp, reserved: 0 };
    let failed: u8;
    // SAFETY: INVEPT only drops cached guest-physical translations; in VMX
    // root operation with a supported type it cannot fault.
    unsafe {
        asm!(
            "invept {kind}, [{desc}]",
            "setbe {failed}",
            kind = in(reg) kind,
            desc = in(reg) &descriptor,
            failed = out(reg_byte) failed,
            options(nostack)
        );
    }
    failed == 0
}

/// Executes INVVPID of `kind` for `vpid` (and `address` for individual-
/// address invalidation). Returns false on VMfail.
pub fn invvpid(kind: u64, vpid: u16, address: u64) -> bool {
    let descriptor = InvvpidDescriptor { vpid: u64::from(vpid), address };
    let failed: u8;
    // SAFETY: INVVPID only drops cached guest-linear translations.
    unsafe {
        asm!(
            "invvpid {kind}, [{desc}]",
            "setbe {failed}",
            kind = in(reg) kind,
            desc = in(reg) &descriptor,
            failed = out(reg_byte) failed,
            options(nostack)
        );
    }
    failed == 0
}

/// Invalidates every guest translation (guest-physical through INVEPT,
/// guest-linear through INVVPID) that the CPU supports invalidating; the
/// counterpart of `tlbi vmalls12e1is`. Call in VMX root operation only.
pub fn tlbi_vmalls12e1is() {
    let caps = super::vmcs::capabilities();
    if caps.ept.invept && caps.ept.invept_all_context {
        invept(INVEPT_ALL_CONTEXT, 0);
    }
    if caps.ept.invvpid && caps.ept.invvpid_all_context {
        invvpid(INVVPID_ALL_CONTEXT, 0, 0);
    }
}

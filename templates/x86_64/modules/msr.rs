//! Model-specific registers, control registers, CPUID and XCR0.
//!
//! The x86_64 counterpart of the AArch64 `sysreg` module: where AArch64
//! names each system register and reads it with `mrs`, x86 has a few
//! architectural control registers (CR0/CR3/CR4), numbered MSRs accessed
//! with `rdmsr`/`wrmsr`, and the CPUID instruction for identification.
//!
//! Reads are safe (CPUID and the MSRs read here have no side effects).
//! Writes are `unsafe`: they change paging, interrupt delivery or VMX
//! state, and every caller states why its write is sound.

use core::arch::asm;

/// Architectural MSR indices used by eterna (SDM Vol. 4).
pub mod index {
    pub const IA32_TSC: u32 = 0x10;
    pub const IA32_APIC_BASE: u32 = 0x1B;
    pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
    pub const IA32_SYSENTER_CS: u32 = 0x174;
    pub const IA32_SYSENTER_ESP: u32 = 0x175;
    pub const IA32_SYSENTER_EIP: u32 = 0x176;
    pub const IA32_DEBUGCTL: u32 = 0x1D9;
    pub const IA32_PAT: u32 = 0x277;
    pub const IA32_TSC_DEADLINE: u32 = 0x6E0;
    /// First x2APIC register MSR (register offset / 16 is added).
    pub const X2APIC_BASE: u32 = 0x800;
    pub const IA32_EFER: u32 = 0xC000_0080;
    pub const IA32_FS_BASE: u32 = 0xC000_0100;
    pub const IA32_GS_BASE: u32 = 0xC000_0101;
    pub const IA32_KERNEL_GS_BASE: u32 = 0xC000_0102;
}

/// Reads MSR `msr`.
#[inline(always)]
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: callers only name architectural MSRs that exist on every CPU
    // eterna runs on (or that CPUID/VMX capability bits announced); reads
    // have no side effects.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes MSR `msr`.
///
/// # Safety
/// The MSR must exist and the value must keep the hypervisor's paging,
/// interrupt and VMX state consistent.
#[inline(always)]
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: upheld by the caller. No `nomem`: an MSR write (e.g. the APIC
    // EOI) must not be reordered with surrounding memory accesses.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags))
    };
}

/// Result of CPUID: EAX, EBX, ECX, EDX.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidResult {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Executes CPUID with `leaf` in EAX and `subleaf` in ECX.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    let (eax, ebx, ecx, edx): (u32, u64, u32, u32);
    // SAFETY: CPUID is always available in 64-bit mode and only writes the
    // four result registers. LLVM reserves RBX, so it is saved in a scratch
    // register around the instruction.
    unsafe {
        asm!(
            "mov {saved}, rbx",
            "cpuid",
            "xchg {saved}, rbx",
            saved = out(reg) ebx,
            inout("eax") leaf => eax,
            inout("ecx") subleaf => ecx,
            out("edx") edx,
            options(nomem, nostack, preserves_flags)
        );
    }
    CpuidResult { eax, ebx: ebx as u32, ecx, edx }
}

/// CPUID feature bits eterna checks.
pub mod feature {
    /// CPUID.1:ECX.VMX[bit 5]: VT-x.
    pub const ECX_VMX: u32 = 1 << 5;
    /// CPUID.1:ECX.x2APIC[bit 21].
    pub const ECX_X2APIC: u32 = 1 << 21;
    /// CPUID.1:ECX.TSC-Deadline[bit 24].
    pub const ECX_TSC_DEADLINE: u32 = 1 << 24;
    /// CPUID.1:ECX.XSAVE[bit 26].
    pub const ECX_XSAVE: u32 = 1 << 26;
    /// CPUID.1:ECX.hypervisor[bit 31]: running under a hypervisor.
    pub const ECX_HYPERVISOR: u32 = 1 << 31;
    /// CPUID.1:EDX.APIC[bit 9].
    pub const EDX_APIC: u32 = 1 << 9;
    /// CPUID.80000007H:EDX.InvariantTSC[bit 8].
    pub const EDX_INVARIANT_TSC: u32 = 1 << 8;
}

/// Whether CPUID leaf `leaf` exists (basic or extended range).
pub fn has_leaf(leaf: u32) -> bool {
    let max = cpuid(leaf & 0x8000_0000, 0).eax;
    leaf <= max
}

/// Reads CR0.
#[inline(always)]
pub fn read_cr0() -> u64 {
    let value;
    // SAFETY: reading a control register has no side effects.
    unsafe { asm!("mov {}, cr0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes CR0.
///
/// # Safety
/// The value must keep protection and paging enabled consistently with the
/// current page tables.
#[inline(always)]
pub unsafe fn write_cr0(value: u64) {
    // SAFETY: upheld by the caller.
    unsafe { asm!("mov cr0, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// Reads CR2 (the last page-fault linear address).
#[inline(always)]
pub fn read_cr2() -> u64 {
    let value;
    // SAFETY: reading a control register has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads CR3 (the page-table root).
#[inline(always)]
pub fn read_cr3() -> u64 {
    let value;
    // SAFETY: reading a control register has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes CR3, switching page tables and flushing non-global TLB entries.
///
/// # Safety
/// `value` must point at page tables that map the running code, stack and
/// data at their current addresses.
#[inline(always)]
pub unsafe fn write_cr3(value: u64) {
    // SAFETY: upheld by the caller.
    unsafe { asm!("mov cr3, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// Reads CR4.
#[inline(always)]
pub fn read_cr4() -> u64 {
    let value;
    // SAFETY: reading a control register has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes CR4.
///
/// # Safety
/// The value must be valid for the current mode (PAE stays set in long
/// mode; VMXE may only be cleared outside VMX operation).
#[inline(always)]
pub unsafe fn write_cr4(value: u64) {
    // SAFETY: upheld by the caller.
    unsafe { asm!("mov cr4, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// Reads XCR0 (the XSAVE feature mask); only valid when CR4.OSXSAVE is set.
pub fn xgetbv0() -> Option<u64> {
    if read_cr4() & (1 << 18) == 0 {
        return None;
    }
    let (lo, hi): (u32, u32);
    // SAFETY: CR4.OSXSAVE is set, so XGETBV with ECX = 0 is defined.
    unsafe { asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    Some((u64::from(hi) << 32) | u64::from(lo))
}

/// Reads RFLAGS.
#[inline(always)]
pub fn read_rflags() -> u64 {
    let value;
    // SAFETY: pushes and pops one word on the current stack.
    unsafe { asm!("pushfq", "pop {}", out(reg) value, options(nomem, preserves_flags)) };
    value
}

/// Current privilege level (CS.RPL): 0 for the hypervisor.
pub fn current_privilege_level() -> u64 {
    let cs: u16;
    // SAFETY: reading a segment selector has no side effects.
    unsafe { asm!("mov {:x}, cs", out(reg) cs, options(nomem, nostack, preserves_flags)) };
    u64::from(cs & 3)
}

/// Reads the time-stamp counter, ordered after preceding instructions.
#[inline(always)]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: LFENCE and RDTSC have no side effects besides ordering.
    unsafe { asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Reads one byte from I/O port `port`.
#[inline(always)]
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: callers only read ports of devices eterna owns (UART, PIT,
    // PS/2 controller status), where reads have no harmful side effects.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes one byte to I/O port `port`.
///
/// # Safety
/// The port must belong to a device eterna drives, and the value must be
/// meaningful for it.
#[inline(always)]
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: upheld by the caller.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) };
}

/// Writes a 16-bit word to I/O port `port`.
///
/// # Safety
/// As for [`outb`].
#[inline(always)]
pub unsafe fn outw(port: u16, value: u16) {
    // SAFETY: upheld by the caller.
    unsafe { asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags)) };
}

/// Writes a 32-bit word to I/O port `port`.
///
/// # Safety
/// As for [`outb`].
#[inline(always)]
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: upheld by the caller.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags)) };
}

/// Signals end of interrupt to the local APIC.
///
/// The x86 counterpart of the AArch64 `write_icc_eoir1_el1`: the LAPIC
/// EOI register takes no interrupt number (it ends the highest-priority
/// in-service interrupt), so `intid` is only checked for plausibility.
///
/// # Safety
/// The CPU must have an interrupt in service (acknowledged by delivery or
/// by "acknowledge interrupt on exit").
#[inline(always)]
pub unsafe fn write_icc_eoir1_el1(intid: u64) {
    debug_assert!(intid < 256, "x86 vectors are 8 bits");
    // SAFETY: upheld by the caller.
    unsafe { super::apic::write_eoi() };
}

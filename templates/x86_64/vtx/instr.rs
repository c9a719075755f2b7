//! Single x86_64 instructions as functions: MSRs, control registers, CPUID, the time
//! stamp counter, port I/O, barriers, cache and TLB maintenance, and the VMX
//! instructions with their VMfail results decoded (Intel SDM Vol. 2, Vol. 3C ch. 31).

use core::arch::asm;

/// Reads model-specific register `msr` (RDMSR).
///
/// # Safety
/// `msr` must exist on this CPU, or the CPU raises #GP.
#[inline]
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes model-specific register `msr` (WRMSR).
///
/// # Safety
/// `msr` must exist and accept `value`; writing MSRs changes CPU behaviour.
#[inline]
pub unsafe fn wrmsr(msr: u32, value: u64) {
    asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags));
}

macro_rules! control_register {
    ($read:ident, $write:ident, $reg:literal) => {
        #[doc = concat!("Reads ", $reg, ".")]
        #[inline]
        pub fn $read() -> u64 {
            let v: u64;
            // SAFETY: reading a control register has no side effect (CPL 0).
            unsafe { asm!(concat!("mov {}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags)) };
            v
        }
        #[doc = concat!("Writes ", $reg, ".")]
        ///
        /// # Safety
        /// The new value must keep the CPU's paging and protection state valid.
        #[inline]
        pub unsafe fn $write(v: u64) {
            asm!(concat!("mov ", $reg, ", {}"), in(reg) v, options(nostack, preserves_flags));
        }
    };
}

control_register!(read_cr0, write_cr0, "cr0");
control_register!(read_cr3, write_cr3, "cr3");
control_register!(read_cr4, write_cr4, "cr4");

/// CR2: the linear address of the last page fault.
#[inline]
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effect.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// CPUID leaf `leaf`, sub-leaf `sub`: `[eax, ebx, ecx, edx]`.
#[inline]
#[allow(unused_unsafe)] // safe to call since Rust 1.87; unsafe before
pub fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    // SAFETY: CPUID is available on every x86_64 CPU.
    let r = unsafe { core::arch::x86_64::__cpuid_count(leaf, sub) };
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// The time stamp counter (RDTSC).
#[inline]
#[allow(unused_unsafe)]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effect.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The current privilege level (CS.RPL).
#[inline]
pub fn cpl() -> u8 {
    let cs: u16;
    // SAFETY: reading CS has no side effect.
    unsafe { asm!("mov {0:x}, cs", out(reg) cs, options(nomem, nostack, preserves_flags)) };
    (cs & 3) as u8
}

/// Reads a byte from I/O port `port`.
///
/// # Safety
/// The port must belong to a device the caller drives.
#[inline]
pub unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags));
    v
}

/// Writes a byte to I/O port `port`.
///
/// # Safety
/// The port must belong to a device the caller drives.
#[inline]
pub unsafe fn outb(port: u16, v: u8) {
    asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags));
}

/// Reads a 32-bit value from I/O port `port`.
///
/// # Safety
/// The port must belong to a device the caller drives.
#[inline]
pub unsafe fn inl(port: u16) -> u32 {
    let v: u32;
    asm!("in eax, dx", out("eax") v, in("dx") port, options(nomem, nostack, preserves_flags));
    v
}

/// Writes a 32-bit value to I/O port `port`.
///
/// # Safety
/// The port must belong to a device the caller drives.
#[inline]
pub unsafe fn outl(port: u16, v: u32) {
    asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags));
}

/// Full memory barrier (MFENCE): the counterpart of `dsb sy`/`dmb sy`.
#[inline]
pub fn mfence() {
    // SAFETY: a barrier has no other effect.
    unsafe { asm!("mfence", options(nostack, preserves_flags)) };
}

/// Store barrier (SFENCE).
#[inline]
pub fn sfence() {
    // SAFETY: a barrier has no other effect.
    unsafe { asm!("sfence", options(nostack, preserves_flags)) };
}

/// Load barrier (LFENCE); also orders instruction execution, like `isb`.
#[inline]
pub fn lfence() {
    // SAFETY: a barrier has no other effect.
    unsafe { asm!("lfence", options(nostack, preserves_flags)) };
}

/// Spin-loop hint (PAUSE): the counterpart of `yield`/`wfe` in a spin loop.
#[inline]
pub fn pause() {
    core::hint::spin_loop();
}

/// Halts until the next interrupt (HLT): the counterpart of `wfi`.
#[inline]
pub fn hlt() {
    // SAFETY: HLT waits for an interrupt; CPL 0 only.
    unsafe { asm!("hlt", options(nomem, nostack, preserves_flags)) };
}

/// Writes back and invalidates the cache line holding `addr` (CLFLUSH).
#[inline]
pub fn clflush(addr: usize) {
    // SAFETY: CLFLUSH does not change memory contents.
    unsafe { asm!("clflush [{}]", in(reg) addr, options(nostack, preserves_flags)) };
}

/// Writes back and invalidates every cache (WBINVD).
#[inline]
pub fn wbinvd() {
    // SAFETY: WBINVD does not change memory contents (CPL 0).
    unsafe { asm!("wbinvd", options(nostack, preserves_flags)) };
}

/// Invalidates the TLB entry of the page holding `addr` (INVLPG).
#[inline]
pub fn invlpg(addr: usize) {
    // SAFETY: invalidating a TLB entry does not change memory.
    unsafe { asm!("invlpg [{}]", in(reg) addr, options(nostack, preserves_flags)) };
}

/// Why a VMX instruction failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmFail {
    /// VMfailInvalid: no current VMCS (CF = 1).
    Invalid,
    /// VMfailValid: the VM-instruction error field holds this number (ZF = 1).
    Valid(u32),
}

/// Decodes RFLAGS after a VMX instruction.
fn vm_result(rflags: u64) -> Result<(), VmFail> {
    if rflags & 1 != 0 {
        Err(VmFail::Invalid)
    } else if rflags & (1 << 6) != 0 {
        Err(VmFail::Valid(
            vmread(crate_field::VM_INSTRUCTION_ERROR).unwrap_or(0) as u32,
        ))
    } else {
        Ok(())
    }
}

mod crate_field {
    /// VM-instruction error field (read-only data field, 32 bits).
    pub const VM_INSTRUCTION_ERROR: u32 = 0x4400;
}

macro_rules! vmx_with_address {
    ($name:ident, $insn:literal, $doc:literal) => {
        #[doc = $doc]
        ///
        /// # Safety
        /// `phys` must be the 4 KiB-aligned physical address of a region set up as the
        /// SDM requires for this instruction.
        #[inline]
        pub unsafe fn $name(phys: u64) -> Result<(), VmFail> {
            let rflags: u64;
            asm!(concat!($insn, " [{}]"), "pushfq", "pop {}", in(reg) &phys, lateout(reg) rflags);
            vm_result(rflags)
        }
    };
}

vmx_with_address!(vmxon, "vmxon", "Enters VMX operation (VMXON).");
vmx_with_address!(vmclear, "vmclear", "Clears a VMCS (VMCLEAR).");
vmx_with_address!(vmptrld, "vmptrld", "Makes a VMCS current (VMPTRLD).");

/// Leaves VMX operation (VMXOFF).
///
/// # Safety
/// The CPU must be in VMX root operation.
#[inline]
pub unsafe fn vmxoff() -> Result<(), VmFail> {
    let rflags: u64;
    asm!("vmxoff", "pushfq", "pop {}", out(reg) rflags);
    vm_result(rflags)
}

/// Reads field `field` of the current VMCS (VMREAD).
#[inline]
pub fn vmread(field: u32) -> Result<u64, VmFail> {
    let (value, rflags): (u64, u64);
    // SAFETY: VMREAD only reads the current VMCS; failures are reported in RFLAGS.
    unsafe {
        asm!("vmread {}, {}", "pushfq", "pop {}", out(reg) value, in(reg) u64::from(field), lateout(reg) rflags);
    }
    if rflags & 1 != 0 {
        Err(VmFail::Invalid)
    } else if rflags & (1 << 6) != 0 {
        Err(VmFail::Valid(0))
    } else {
        Ok(value)
    }
}

/// Writes field `field` of the current VMCS (VMWRITE).
///
/// # Safety
/// The value must be valid for the field: the next VM entry checks the VMCS.
#[inline]
pub unsafe fn vmwrite(field: u32, value: u64) -> Result<(), VmFail> {
    let rflags: u64;
    asm!("vmwrite {}, {}", "pushfq", "pop {}", in(reg) u64::from(field), in(reg) value, lateout(reg) rflags);
    vm_result(rflags)
}

/// The descriptor of INVEPT and INVVPID: two quadwords.
#[repr(C, align(16))]
struct InvDescriptor([u64; 2]);

/// Invalidates EPT-derived translations (INVEPT); `kind` 1 = one context (`eptp`),
/// 2 = all contexts.
///
/// # Safety
/// The CPU must be in VMX root operation and support the invalidation type.
#[inline]
pub unsafe fn invept(kind: u64, eptp: u64) -> Result<(), VmFail> {
    let d = InvDescriptor([eptp, 0]);
    let rflags: u64;
    asm!("invept {}, [{}]", "pushfq", "pop {}", in(reg) kind, in(reg) &d, lateout(reg) rflags);
    vm_result(rflags)
}

/// Invalidates VPID-tagged translations (INVVPID); `kind` 1 = one address, 2 = one
/// VPID, 0 = all VPIDs.
///
/// # Safety
/// The CPU must be in VMX root operation and support the invalidation type.
#[inline]
pub unsafe fn invvpid(kind: u64, vpid: u16, addr: u64) -> Result<(), VmFail> {
    let d = InvDescriptor([u64::from(vpid), addr]);
    let rflags: u64;
    asm!("invvpid {}, [{}]", "pushfq", "pop {}", in(reg) kind, in(reg) &d, lateout(reg) rflags);
    vm_result(rflags)
}

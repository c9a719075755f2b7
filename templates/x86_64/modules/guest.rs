//! The guest's x86_64 code: the parts of `guest.rs` that are written in
//! AArch64 assembly there, redone for a 64-bit VT-x guest.
//!
//! `guest.rs` keeps everything architecture-neutral (the vCPU programs
//! `boot_vcpu`/`secondary_vcpu`, `print`, `yield_cpu`, the test-device
//! checks, the exit codes, the window layout); it reaches this module
//! through `pub use self::x86_64::*`. Provided here, under the same names
//! and signatures as the AArch64 items they replace:
//!
//! | item                    | AArch64                       | x86_64                                        |
//! |-------------------------|-------------------------------|-----------------------------------------------|
//! | `hvc`                   | `hvc #0`, x0..x3              | `vmcall`, RAX/RDI/RSI/RDX                      |
//! | `exit`                  | EXIT hypercall, then `wfi`    | EXIT hypercall, then `hlt`                     |
//! | `virtual_count`         | `mrs cntvct_el0`              | `rdtsc` (TSC offsetting makes it virtual)      |
//! | `mmio_read32/_write32`  | `ldr`/`str` (valid ISS)       | `mov` (decoded by the hypervisor)              |
//! | `take_timer_interrupt`  | VBAR_EL1, ICC_*, CNTV_*       | GDT/IDT, x2APIC LVT timer + TSC deadline MSRs  |
//! | `eterna_guest_irq`      | ICC_IAR1/EOIR1                | vector from the IDT stub, x2APIC EOI MSR       |
//! | vector table            | `.guest.vectors` (VBAR_EL1)   | IDT stubs in `.guest.vectors`                  |
//!
//! The guest keeps the same rules: code in `.guest.text`, helpers
//! `#[inline(always)]`, no calls out of the window (no formatting, no
//! panicking operations, wrapping arithmetic, stores through inline asm),
//! constants in `.guest.rodata`, mutable data in `.guest.data`.
//!
//! x86 specifics: a 64-bit guest needs paging, so the hypervisor builds
//! identity page tables for the guest inside the window
//! ([`page_table_root`]) and points the guest's GDTR at a three-entry GDT
//! in `.guest.rodata` ([`descriptor_table`]). The guest timer is the
//! x2APIC timer in TSC-deadline mode; the frequency comes from the
//! hypervisor's CPUID leaf 4000_0010H (TSC kHz), which is not a hypercall
//! and therefore adds no trace line. Interrupt ID 27 arrives as vector
//! 0x3B (0x20 + ID).

use core::arch::{asm, global_asm};

// The shared part of guest.rs: constants, `print`, the IRQ bookkeeping
// statics and its imports (`Ordering`, the hypercall numbers).
use super::*;

/// Places a byte-string literal in `.guest.rodata` and evaluates to its
/// `(address, length)` (the x86 module's copy of `guest_str!`).
macro_rules! guest_str_x86 {
    ($text:literal) => {
        // (Two nested blocks, written apart: templates never contain a
        // doubled opening brace.)
        {
            #[link_section = ".guest.rodata"]
            static TEXT: [u8; $text.len()] = *$text;
            (&raw const TEXT as u64, $text.len() as u64)
        }
    };
}

/// Vector of virtual interrupt ID 0; ID `n` arrives as `0x20 + n`.
const VECTOR_BASE: u64 = 0x20;
/// x2APIC LVT timer MSR.
const MSR_LVT_TIMER: u32 = 0x832;
/// x2APIC EOI MSR.
const MSR_EOI: u32 = 0x80B;
/// IA32_TSC_DEADLINE.
const MSR_TSC_DEADLINE: u32 = 0x6E0;
/// LVT timer mode TSC-deadline (bits 18:17 = 0b10).
const LVT_TSC_DEADLINE: u64 = 0b10 << 17;
/// Hypervisor CPUID leaf with the TSC frequency in kHz in EAX.
const CPUID_TIMING_LEAF: u32 = 0x4000_0010;
/// Number of IDT entries the guest installs (exceptions + up to the timer).
const IDT_ENTRIES: usize = 256;

/// The guest's GDT: null, 64-bit code (0x08), data (0x10); accessed bits
/// preset so the CPU never writes to this read-only page.
#[link_section = ".guest.rodata"]
static GUEST_GDT: [u64; 3] = [0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF];

/// The guest's IDT (filled by the guest itself).
#[repr(C, align(4096))]
struct Idt([u64; 2 * IDT_ENTRIES]);
#[link_section = ".guest.data"]
static mut GUEST_IDT: Idt = Idt([0; 2 * IDT_ENTRIES]);

/// The guest's page tables: PML4, PDPT, one PD of 2 MiB pages (0..1 GiB).
#[repr(C, align(4096))]
struct PageTables([[u64; 512]; 3]);
#[link_section = ".guest.data"]
static mut GUEST_PAGE_TABLES: PageTables = PageTables([[0; 512]; 3]);

// ---------------------------------------------------------------------------
// Hypervisor side: what the VMCS guest state needs.
// ---------------------------------------------------------------------------

/// Builds the guest's identity page tables (1 GiB of 2 MiB pages: the
/// window and the test device's address) and returns the PML4 address for
/// GUEST_CR3. Runs on the hypervisor before the guest starts; idempotent.
pub fn page_table_root() -> u64 {
    const PRESENT_WRITABLE: u64 = 0b11;
    const LARGE_ACCESSED_DIRTY: u64 = (1 << 7) | (1 << 5) | (1 << 6);
    let tables = &raw mut GUEST_PAGE_TABLES;
    // SAFETY: the guest does not run yet; the tables are only written here,
    // by the hypervisor, through the identity map.
    unsafe {
        let pml4 = &raw mut (*tables).0[0];
        let pdpt = &raw mut (*tables).0[1];
        let pd = &raw mut (*tables).0[2];
        (*pml4)[0] = pdpt as u64 | PRESENT_WRITABLE | (1 << 5);
        (*pdpt)[0] = pd as u64 | PRESENT_WRITABLE | (1 << 5);
        for (index, entry) in (*pd).iter_mut().enumerate() {
            *entry = ((index as u64) << 21) | PRESENT_WRITABLE | LARGE_ACCESSED_DIRTY;
        }
        pml4 as u64
    }
}

/// Base and limit of the guest's GDT, for GUEST_GDTR.
pub fn descriptor_table() -> (u64, u16) {
    (&raw const GUEST_GDT as u64, (core::mem::size_of::<[u64; 3]>() - 1) as u16)
}

// ---------------------------------------------------------------------------
// Guest side.
// ---------------------------------------------------------------------------

/// Issues a hypercall (VMCALL) and returns RAX, RDI, RSI, RDX.
#[inline(always)]
pub fn hvc(function: u64, arg1: u64, arg2: u64, arg3: u64) -> [u64; 4] {
    let (r0, r1, r2, r3);
    // SAFETY: VMCALL exits to eterna, which only reads guest memory named by
    // the arguments and writes RAX, RDI, RSI and RDX.
    unsafe {
        asm!(
            "vmcall",
            inout("rax") function => r0,
            inout("rdi") arg1 => r1,
            inout("rsi") arg2 => r2,
            inout("rdx") arg3 => r3,
            options(nostack)
        );
    }
    [r0, r1, r2, r3]
}

/// Ends this vCPU; eterna never resumes it.
#[inline(always)]
pub fn exit(code: u64) -> ! {
    hvc(HVC_EXIT, code, 0, 0);
    loop {
        // SAFETY: halting is harmless; this point is never reached.
        unsafe { asm!("hlt", options(nomem, nostack)) };
    }
}

/// Reads the virtual counter directly (RDTSC plus the VMCS TSC offset).
#[inline(always)]
pub fn virtual_count() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC is allowed at CPL 0 and does not exit.
    unsafe { asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// A single 32-bit load from the emulated device (a plain `mov`, which the
/// hypervisor's decoder handles).
#[inline(always)]
pub fn mmio_read32(address: u64) -> u32 {
    let value: u32;
    // SAFETY: a single load from the emulated device's page.
    unsafe { asm!("mov {0:e}, dword ptr [{1}]", out(reg) value, in(reg) address, options(nostack, readonly)) };
    value
}

/// A single 32-bit store to the emulated device.
#[inline(always)]
pub fn mmio_write32(address: u64, value: u32) {
    // SAFETY: as for `mmio_read32`, with a plain `mov` store.
    unsafe { asm!("mov dword ptr [{1}], {0:e}", in(reg) value, in(reg) address, options(nostack)) };
}

#[inline(always)]
fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the MSRs the guest writes (x2APIC LVT timer, EOI, TSC
    // deadline) are emulated by eterna.
    unsafe { asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack)) };
}

/// CPUID EAX of `leaf` (RBX is preserved by hand: LLVM reserves it).
#[inline(always)]
fn cpuid_eax(leaf: u32) -> u32 {
    let eax: u32;
    // SAFETY: CPUID exits to eterna, which emulates it.
    unsafe {
        asm!(
            "mov {saved}, rbx",
            "cpuid",
            "mov rbx, {saved}",
            saved = out(reg) _,
            inout("eax") leaf => eax,
            inout("ecx") 0u32 => _,
            out("edx") _,
            options(nomem, nostack)
        );
    }
    eax
}

/// Stores one quadword (inline asm, so no call to a `memcpy` outside the window).
#[inline(always)]
fn store64(address: u64, value: u64) {
    // SAFETY: callers pass addresses inside the guest's own IDT.
    unsafe { asm!("mov qword ptr [{0}], {1}", in(reg) address, in(reg) value, options(nostack)) };
}

/// Writes IDT gate `vector` for `handler` (64-bit interrupt gate, CS 0x08).
#[inline(always)]
fn set_gate(idt: u64, vector: u64, handler: u64) {
    let low = (handler & 0xffff) | (0x08 << 16) | (0x8E << 40) | (((handler >> 16) & 0xffff) << 48);
    let entry = idt.wrapping_add(vector.wrapping_mul(16));
    store64(entry, low);
    store64(entry.wrapping_add(8), handler >> 32);
}

/// Installs the GDT and IDT, programs the x2APIC timer in TSC-deadline mode
/// 1 ms ahead and waits for its interrupt.
#[link_section = ".guest.text"]
#[inline(never)]
pub fn take_timer_interrupt() -> bool {
    let idt = &raw mut GUEST_IDT as u64;
    let stubs: u64;
    let timer_entry: u64;
    // SAFETY: only takes addresses of the guest's own vector code.
    unsafe {
        asm!(
            "lea {0}, [rip + eterna_guest_x86_vectors]",
            "lea {1}, [rip + eterna_guest_x86_timer_entry]",
            out(reg) stubs,
            out(reg) timer_entry,
            options(nomem, nostack)
        );
    }
    let mut vector = 0;
    while vector < 32 {
        set_gate(idt, vector, stubs.wrapping_add(vector.wrapping_mul(16)));
        vector = vector.wrapping_add(1);
    }
    set_gate(idt, VECTOR_BASE.wrapping_add(VIRTUAL_TIMER_INTID as u64), timer_entry);
    let gdt = &raw const GUEST_GDT as u64;
    // SAFETY: loads the guest's own descriptor tables; the selectors in use
    // (CS 0x08, data 0x10) match the GDT the hypervisor described.
    unsafe {
        asm!(
            "sub rsp, 16",
            "mov word ptr [rsp + 6], 23",
            "mov qword ptr [rsp + 8], {gdt}",
            "lgdt [rsp + 6]",
            "mov word ptr [rsp + 6], 4095",
            "mov qword ptr [rsp + 8], {idt}",
            "lidt [rsp + 6]",
            "add rsp, 16",
            gdt = in(reg) gdt,
            idt = in(reg) idt,
        );
    }
    // Announce before arming so the trace order does not depend on timing.
    print(guest_str_x86!(b"arming the virtual timer"));
    let khz = cpuid_eax(CPUID_TIMING_LEAF);
    if khz == 0 {
        return false;
    }
    wrmsr(MSR_LVT_TIMER, LVT_TSC_DEADLINE | VECTOR_BASE.wrapping_add(VIRTUAL_TIMER_INTID as u64));
    wrmsr(MSR_TSC_DEADLINE, virtual_count().wrapping_add(u64::from(khz)));
    // Wait with interrupts masked and open the window only around HLT
    // (STI's shadow covers HLT), so the interrupt cannot slip in between
    // the check and the halt.
    let mut rounds: u32 = 0;
    while IRQ_COUNT.load(Ordering::Acquire) == 0 && rounds < 1_000 {
        // SAFETY: the IDT is installed; the handler only stores to two atomics.
        unsafe { asm!("sti", "hlt", "cli", options(nostack)) };
        rounds = rounds.wrapping_add(1);
    }
    IRQ_COUNT.load(Ordering::Acquire) == 1 && LAST_IRQ.load(Ordering::Acquire) == VIRTUAL_TIMER_INTID
}

/// Rust half of the guest's interrupt entry: `vector` is the IDT vector.
#[link_section = ".guest.text"]
#[unsafe(export_name = "eterna_guest_x86_irq")]
pub extern "C" fn eterna_guest_irq(vector: u64) {
    let intid = vector.wrapping_sub(VECTOR_BASE) as u32;
    if intid == VIRTUAL_TIMER_INTID {
        // One-shot: a zero deadline disarms the timer.
        wrmsr(MSR_TSC_DEADLINE, 0);
    }
    wrmsr(MSR_EOI, 0);
    LAST_IRQ.store(intid, Ordering::Release);
    IRQ_COUNT.store(IRQ_COUNT.load(Ordering::Relaxed).wrapping_add(1), Ordering::Release);
}

// The guest's exception stubs (vectors 0..31, 16 bytes apart): any
// exception ends the vCPU with exit code 0x100 + vector, as on AArch64.
// The timer entry saves the caller-saved registers around the Rust handler.
global_asm!(
    r#"
.section .guest.vectors, "ax"
.balign 16
.global eterna_guest_x86_vectors
eterna_guest_x86_vectors:
.irp vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .balign 16
    mov     edi, \vector
    jmp     eterna_guest_x86_fatal
.endr

eterna_guest_x86_fatal:
    add     edi, 0x100
    mov     eax, {EXIT}
    vmcall
1:  hlt
    jmp     1b

.balign 16
.global eterna_guest_x86_timer_entry
eterna_guest_x86_timer_entry:
    push    rax
    push    rcx
    push    rdx
    push    rsi
    push    rdi
    push    r8
    push    r9
    push    r10
    push    r11
    cld
    mov     edi, {TIMER_VECTOR}
    call    eterna_guest_x86_irq
    pop     r11
    pop     r10
    pop     r9
    pop     r8
    pop     rdi
    pop     rsi
    pop     rdx
    pop     rcx
    pop     rax
    iretq
.text
"#,
    EXIT = const HVC_EXIT,
    TIMER_VECTOR = const VECTOR_BASE + VIRTUAL_TIMER_INTID as u64,
);

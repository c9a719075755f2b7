//! Secondary-CPU bring-up (INIT-SIPI-SIPI) and power control.
//!
//! The x86_64 counterpart of the AArch64 PSCI client.
//!
//! **CPU_ON.** An x86 application processor starts in real mode at the
//! 4 KiB page named by the startup IPI's vector. [`cpu_on`] copies a small
//! trampoline to [`TRAMPOLINE_ADDR`] (0x8000, vector 0x08), fills in its
//! data block (CR3, stack, CPU index, 64-bit entry) and sends INIT, waits
//! 10 ms, then sends two SIPIs 200 µs apart (Intel MultiProcessor
//! Specification 1.4, appendix B.4). The trampoline loads its own GDT,
//! enables PAE and EFER.LME, turns on protection and paging in one step
//! and far-jumps straight from real mode into 64-bit code, which jumps to
//! `boot::eterna_secondary_start` on the CPU's stack. APIC IDs are assumed
//! to equal logical CPU numbers (true on QEMU and Bochs).
//!
//! **SYSTEM_OFF.** There is no firmware call. [`system_off`] drains the
//! UART and tries, in order: ACPI S5 through the PM1a control register
//! that SeaBIOS/Bochs BIOS program (QEMU i440fx/q35: port 0x604, Bochs/old
//! QEMU: 0xB004) — QEMU then exits with status 0 like PSCI SYSTEM_OFF;
//! Bochs' "Shutdown" port 0x8900; QEMU's `isa-debug-exit` device (port
//! 0xF4); and finally halts with interrupts off. [`exit_with_status`] goes
//! to `isa-debug-exit` first so QEMU's exit status carries a distinct code:
//! `(code << 1) | 1`.

use core::arch::{asm, global_asm};
use core::fmt;

use super::boot;
use super::msr::{outb, outw};
use super::paging;
use super::timer::Deadline;
use super::{apic, uart16550};

/// Physical address the trampoline is copied to (page-aligned, below 1 MiB).
pub const TRAMPOLINE_ADDR: u64 = 0x8000;
/// SIPI vector: the trampoline page number.
const SIPI_VECTOR: u32 = (TRAMPOLINE_ADDR >> 12) as u32;

/// ICR delivery mode INIT, level assert.
const ICR_INIT: u32 = (0b101 << 8) | (1 << 14);
/// ICR delivery mode Start-up.
const ICR_STARTUP: u32 = 0b110 << 8;

/// QEMU `isa-debug-exit` I/O port (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
pub const DEBUG_EXIT_PORT: u16 = 0xF4;
/// Bochs shutdown port: writing the string "Shutdown" powers it off.
pub const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;
/// ACPI PM1a control ports as firmware programs them on QEMU and Bochs.
pub const ACPI_PM1A_CNT_PORTS: [u16; 2] = [0x604, 0xB004];
/// PM1a_CNT value: SLP_EN with SLP_TYP = 0 (S5 on these chipsets).
const ACPI_SLEEP_S5: u16 = 1 << 13;

/// Debug-exit code reported when VT-x is unavailable: QEMU exits with
/// status `(0x10 << 1) | 1` = 33.
pub const VMX_UNAVAILABLE_EXIT: u8 = 0x10;
/// Debug-exit code after a panic: QEMU exits with status 35.
pub const PANIC_EXIT: u8 = 0x11;

// Layout of the trampoline page (offsets from its start): a short jump over
// the data, then the data block the BSP fills in, then the GDT, the GDT
// pointer and the code. Memory operands use these literal offsets (the
// assembler does not take label differences there).
//
//   0  jmp over the data        8  CR3         16  stack top
//  24  CPU index               32  64-bit entry
//  40  GDT (null, code 0x08, data 0x10)      64  GDT pointer (limit, base)
global_asm!(
    r#"
.section .text.eterna_trampoline, "ax"
.balign 16
.code16
.global eterna_ap_trampoline
eterna_ap_trampoline:
    jmp     tramp16
.balign 8
.global eterna_ap_trampoline_data
eterna_ap_trampoline_data:
    .quad   0                           // 8: CR3
    .quad   0                           // 16: stack top
    .quad   0                           // 24: CPU index
    .quad   0                           // 32: entry
    .quad   0                           // 40: GDT
    .quad   0x00AF9A000000FFFF
    .quad   0x00CF92000000FFFF
    .word   23                          // 64: GDT pointer
    .long   {BASE} + 40
tramp16:
    cli
    cld
    mov     ax, cs
    mov     ds, ax
    lgdt    [64]
    mov     eax, cr4
    or      eax, 1 << 5
    mov     cr4, eax
    mov     eax, dword ptr [8]
    mov     cr3, eax
    mov     ecx, 0xC0000080
    rdmsr
    or      eax, 1 << 8
    wrmsr
    mov     eax, cr0
    or      eax, 0x80010001
    mov     cr0, eax
    // jmp far 0x08:(TRAMPOLINE_ADDR + offset of tramp64), 32-bit offset form.
    .byte   0x66, 0xEA
    .long   {BASE} + (tramp64 - eterna_ap_trampoline)
    .word   {KERNEL_CS}
.code64
tramp64:
    mov     ax, {KERNEL_DS}
    mov     ds, ax
    mov     es, ax
    mov     ss, ax
    mov     eax, {BASE}
    mov     rsp, qword ptr [rax + 16]
    mov     rdi, qword ptr [rax + 24]
    mov     rcx, qword ptr [rax + 32]
    jmp     rcx
.global eterna_ap_trampoline_end
eterna_ap_trampoline_end:
.text
"#,
    BASE = const TRAMPOLINE_ADDR,
    KERNEL_CS = const boot::KERNEL_CS,
    KERNEL_DS = const boot::KERNEL_DS,
);

unsafe extern "C" {
    static eterna_ap_trampoline: u8;
    static eterna_ap_trampoline_data: u8;
    static eterna_ap_trampoline_end: u8;
    static __stacks_top: u8;
}

/// A failed bring-up request, numbered like PSCI errors so the boot log
/// reads the same on both architectures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmpError(pub i64);

/// The error type under the AArch64 layer's name.
pub type PsciError = SmpError;

impl fmt::Display for SmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            -1 => "NOT_SUPPORTED",
            -2 => "INVALID_PARAMETERS",
            -3 => "DENIED",
            -4 => "ALREADY_ON",
            _ => "error",
        };
        write!(f, "{name} ({})", self.0)
    }
}

/// Version of the start-up protocol used: the MultiProcessor Specification
/// 1.4 INIT-SIPI-SIPI sequence (there is no firmware interface to query).
pub fn version() -> Result<(u16, u16), SmpError> {
    Ok((1, 4))
}

/// Starts the CPU whose APIC ID is `mpidr` at `entry` (64-bit code, stack
/// of CPU `context` already set, `context` in RDI).
pub fn cpu_on(mpidr: u64, entry: u64, context: u64) -> Result<(), SmpError> {
    let cpu = context as usize;
    if cpu == 0 || cpu >= boot::MAX_CPUS || mpidr == u64::from(apic::id()) {
        return Err(SmpError(-2));
    }
    let start = &raw const eterna_ap_trampoline as usize;
    let data = &raw const eterna_ap_trampoline_data as usize - start;
    let len = &raw const eterna_ap_trampoline_end as usize - start;
    let stack_top = &raw const __stacks_top as u64 - (cpu * boot::STACK_SIZE) as u64;
    let target = TRAMPOLINE_ADDR as usize as *mut u8;
    // SAFETY: the page at TRAMPOLINE_ADDR is conventional low memory that
    // nothing else in eterna uses, identity mapped; the source is the
    // trampoline in the image. The data block is four naturally aligned
    // quadwords at offset 8 of the copy.
    unsafe {
        core::ptr::copy_nonoverlapping(start as *const u8, target, len);
        let block = target.add(data) as *mut u64;
        block.write_volatile(paging::root_address());
        block.add(1).write_volatile(stack_top);
        block.add(2).write_volatile(context);
        block.add(3).write_volatile(entry);
    }
    super::cache::dsb_sy();
    let destination = mpidr as u32;
    apic::send_ipi(destination, ICR_INIT);
    Deadline::after_ms(10).wait();
    for _ in 0..2 {
        apic::send_ipi(destination, ICR_STARTUP | SIPI_VECTOR);
        Deadline::after_us(200).wait();
    }
    Ok(())
}

/// Halts this CPU forever with interrupts disabled.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: halting with interrupts off only stops this CPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

fn bochs_shutdown() {
    for byte in b"Shutdown" {
        // SAFETY: Bochs' shutdown port; on other machines the port is unused.
        unsafe { outb(BOCHS_SHUTDOWN_PORT, *byte) };
    }
}

fn acpi_shutdown() {
    for port in ACPI_PM1A_CNT_PORTS {
        // SAFETY: the PM1a control register where firmware put it; if no
        // ACPI PM block is there, the write goes to an unused port.
        unsafe { outw(port, ACPI_SLEEP_S5) };
    }
}

fn debug_exit(code: u8) {
    // SAFETY: QEMU's isa-debug-exit device; unused port elsewhere.
    unsafe { super::msr::outl(DEBUG_EXIT_PORT, u32::from(code)) };
}

/// Turns the machine off (QEMU exits with status 0 through ACPI S5).
pub fn system_off() -> ! {
    uart16550::drain();
    acpi_shutdown();
    bochs_shutdown();
    debug_exit(0);
    halt_forever()
}

/// Turns the machine off reporting `code`: QEMU with `isa-debug-exit`
/// exits with status `(code << 1) | 1`; elsewhere as [`system_off`].
pub fn exit_with_status(code: u8) -> ! {
    uart16550::drain();
    debug_exit(code);
    bochs_shutdown();
    acpi_shutdown();
    halt_forever()
}

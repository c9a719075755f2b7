//! VM-exit decoding and dispatch, MMIO emulation, and the host IDT.
//!
//! The VT-x counterpart of the AArch64 `exception` module. Every guest exit
//! returns from the world switch in `vcpu.rs` with a kind (synchronous,
//! external interrupt, NMI, fatal, entry failure); [`handle_guest_exit`]
//! reads the basic exit reason and qualification from the VMCS and
//! dispatches:
//!
//! | exit reason                 | handling                                          |
//! |-----------------------------|---------------------------------------------------|
//! | 18 VMCALL                   | eterna hypercall (`hypercall.rs`)                  |
//! | 48 EPT violation            | decode the instruction, emulate the MMIO access   |
//! | 12 HLT                      | fire the guest's virtual timer if armed            |
//! | 52 VMX-preemption timer     | watchdog backstop, fire the guest's virtual timer  |
//! | 7 interrupt window          | stop window exiting; the core re-injects           |
//! | 10 CPUID                    | host CPUID with VMX hidden, hypervisor leaves      |
//! | 31/32 RDMSR/WRMSR           | emulated timer/APIC MSRs, #GP for the rest         |
//! | 30 I/O                      | no devices: reads all ones, writes ignored         |
//! | 1 external interrupt        | watchdog → panic; others acknowledged and logged   |
//! | 2 triple fault, 33/34/41    | fatal: panic with the guest state                  |
//!
//! The host IDT routes exceptions of the hypervisor itself to a panic with
//! the vector, error code and RIP (the counterpart of the EL2 current-EL
//! vectors).

use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::fmt;

use eterna_core::mmio::{AccessSize, MmioAccess};
use eterna_core::vm::WATCHDOG_SECONDS;
use eterna_core::{trace, Action, Arch, Vm};

#[path = "exit_reason.rs"]
pub mod exit_reason;
#[path = "mmio_insn.rs"]
pub mod mmio_insn;

use self::exit_reason::{
    CrAccess, EptViolation, ExitReason, ExitReasonField, InterruptionInfo, IoAccess, FIRST_INTERRUPT_VECTOR,
};
use self::mmio_insn::{Access, MmioInsn};
use super::apic::{self, SPECIAL_INTID_BASE};
use super::boot::KERNEL_CS;
use super::hypercall;
use super::msr;
use super::timer::{self, HYP_TIMER_INTID, VIRTUAL_TIMER_INTID};
use super::vcpu::{exit, VcpuContext};
use super::vmcall_abi::Gpr;
use super::vmcs::{self, field};
use super::X86_64;

/// The exit reasons eterna distinguishes, under the AArch64 name.
pub type ExceptionClass = ExitReason;

impl ExceptionClass {
    /// Decodes a basic exit reason given as a byte (the AArch64 layer's
    /// "exception class" constructor; x86 reasons below 256 fit).
    pub const fn from_ec(ec: u8) -> Self {
        ExitReason::from_basic(ec as u16)
    }
}

/// The exit syndrome: exit reason, qualification and instruction length of
/// the last VM exit (the counterpart of ESR_EL2).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Esr {
    /// The exit-reason field.
    pub reason: ExitReasonField,
    /// The exit qualification.
    pub qualification: u64,
    /// VM-exit instruction length (valid for instruction exits).
    pub instruction_len: u64,
}

impl Esr {
    /// Reads the exit information of the current VMCS.
    pub fn current() -> Self {
        Esr {
            reason: ExitReasonField(vmcs::vmread(field::VM_EXIT_REASON) as u32),
            qualification: vmcs::vmread(field::EXIT_QUALIFICATION),
            instruction_len: vmcs::vmread(field::VM_EXIT_INSTRUCTION_LEN),
        }
    }

    /// The decoded basic exit reason.
    pub const fn class(self) -> ExceptionClass {
        self.reason.reason()
    }

    /// Whether the exiting instruction was 4 bytes long (the AArch64 IL
    /// bit; on x86 use `instruction_len`).
    pub const fn il32(self) -> bool {
        self.instruction_len == 4
    }

    /// The low 32 bits of the exit qualification (the AArch64 ISS slot).
    pub const fn iss(self) -> u32 {
        self.qualification as u32
    }
}

impl fmt::Debug for Esr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit reason {} ({:?}{}), qualification {:#x}",
            self.reason.basic(),
            self.class(),
            if self.reason.entry_failure() { ", entry failure" } else { "" },
            self.qualification
        )
    }
}

/// What is known about a trapped guest data access: the EPT-violation
/// qualification plus the decoded instruction (the counterpart of the
/// AArch64 data-abort ISS, which carries the instruction syndrome itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAbortIss {
    /// The instruction was decoded (register and size are valid).
    pub valid: bool,
    /// Access size in bytes.
    pub access_bytes: u32,
    /// The load sign-extends (never, for the MOV/MOVZX forms supported).
    pub sign_extend: bool,
    /// The transfer register (x86 encoding).
    pub register: usize,
    /// The destination is written as a whole 64-bit register.
    pub sixty_four: bool,
    /// The access was the guest's own page walk.
    pub stage1_walk: bool,
    /// The access was a write.
    pub write: bool,
    /// EPT permissions granted at the address (bits 5:3 of the
    /// qualification): 0 = not mapped.
    pub status: u8,
}

impl DataAbortIss {
    /// Decodes the EPT-violation qualification alone (instruction unknown).
    pub const fn decode(iss: u32) -> Self {
        let q = EptViolation::decode(iss as u64);
        DataAbortIss {
            valid: false,
            access_bytes: 0,
            sign_extend: false,
            register: 0,
            sixty_four: false,
            stage1_walk: q.during_guest_walk(),
            write: q.write,
            status: q.granted,
        }
    }

    /// Adds what the instruction decoder found.
    pub fn with_instruction(mut self, insn: &MmioInsn) -> Self {
        self.valid = true;
        self.access_bytes = u32::from(insn.size);
        match insn.access {
            Access::Load { reg, zero_extend, .. } => {
                self.register = usize::from(reg);
                self.sixty_four = zero_extend;
            }
            Access::Store(mmio_insn::Source::Register { reg, .. }) => self.register = usize::from(reg),
            Access::Store(mmio_insn::Source::Immediate(_)) => {}
        }
        self
    }

    /// Nothing is mapped at the address: an emulated device.
    pub const fn is_translation_fault(&self) -> bool {
        self.status == 0
    }

    /// Mapped, but without the permission the access needed.
    pub const fn is_permission_fault(&self) -> bool {
        self.status != 0
    }
}

/// The guest-physical address of the last EPT violation.
pub fn faulting_ipa() -> u64 {
    vmcs::vmread(field::GUEST_PHYSICAL_ADDRESS)
}

/// Dispatches a guest exit to its handler.
pub fn handle_guest_exit(kind: u64, vm: &mut Vm, arch: &mut X86_64, vcpu: &mut VcpuContext) -> Action {
    match kind {
        exit::SYNC => handle_sync(vm, arch, vcpu),
        exit::IRQ => handle_irq(vm, arch),
        exit::FIQ => panic!("{}: unexpected NMI at guest RIP {:#x}", vm.current(), vcpu.regs.rip),
        exit::SERROR => {
            panic!("{}: guest triple fault at RIP {:#x}, {:?}", vm.current(), vcpu.regs.rip, Esr::current())
        }
        _ => {
            let error = vmcs::vmread(field::VM_INSTRUCTION_ERROR) as u32;
            panic!(
                "{}: VM entry failed: {:?}; VM-instruction error {error} ({})",
                vm.current(),
                Esr::current(),
                vmcs::vmx_fields::vm_instruction_error_name(error)
            )
        }
    }
}

fn handle_sync(vm: &mut Vm, arch: &mut X86_64, vcpu: &mut VcpuContext) -> Action {
    let esr = Esr::current();
    match esr.class() {
        ExitReason::Vmcall => hypercall::handle(vm, arch, vcpu, esr),
        ExitReason::EptViolation => handle_ept_violation(vm, arch, vcpu, esr),
        ExitReason::Hlt => {
            vcpu.regs.skip_instruction();
            // The guest waits for its timer: let it fire now (bounded).
            if timer::expire_guest_timer(timer::frequency()) {
                let _ = vm.raise_irq(vm.current(), VIRTUAL_TIMER_INTID);
            }
            Action::Resume
        }
        ExitReason::PreemptionTimer => {
            if timer::watchdog_expired() {
                timer::disarm_hyp_timer();
                panic!("watchdog expired: the guest made no progress within {WATCHDOG_SECONDS} s");
            }
            if timer::expire_guest_timer(timer::frequency() / 100) {
                let _ = vm.raise_irq(vm.current(), VIRTUAL_TIMER_INTID);
            }
            Action::Resume
        }
        ExitReason::InterruptWindow => {
            vmcs::set_interrupt_window_exiting(false);
            Action::Resume
        }
        ExitReason::Cpuid => {
            emulate_cpuid(vcpu);
            vcpu.regs.skip_instruction();
            Action::Resume
        }
        ExitReason::Rdmsr => emulate_rdmsr(vcpu),
        ExitReason::Wrmsr => emulate_wrmsr(vcpu),
        ExitReason::IoInstruction => {
            let io = IoAccess::decode(esr.qualification);
            trace::emit_hyp(arch, format_args!("{}: guest port I/O to {:#x} ignored", vm.current(), io.port));
            if io.input && !io.string {
                let mask = (1u64 << (u32::from(io.size) * 8)) - 1;
                let rax = vcpu.regs.gpr(Gpr::Rax.index());
                vcpu.regs.set_gpr(Gpr::Rax.index(), rax | mask);
            }
            vcpu.regs.skip_instruction();
            Action::Resume
        }
        ExitReason::Xsetbv | ExitReason::VmxInstruction(_) => {
            inject_exception(6); // #UD: not available to the guest
            Action::Resume
        }
        ExitReason::CrAccess => {
            let cr = CrAccess::decode(esr.qualification);
            panic!("{}: guest control-register access {cr:?} at RIP {:#x} not supported", vm.current(), vcpu.regs.rip)
        }
        ExitReason::EptMisconfig => panic!("EPT misconfiguration at {:#x}", faulting_ipa()),
        _ => panic!("{}: unhandled VM exit, {:?}, RIP {:#x}", vm.current(), esr, vcpu.regs.rip),
    }
}

/// Queues a hardware exception (error code 0 where one is delivered) for
/// the next entry.
fn inject_exception(vector: u8) {
    vmcs::vmwrite(field::VM_ENTRY_EXCEPTION_ERROR_CODE, 0);
    vmcs::vmwrite(field::VM_ENTRY_INTR_INFO_FIELD, u64::from(InterruptionInfo::hardware_exception(vector).encode()));
}

/// Hypervisor CPUID leaves: 4000_0000H (vendor "EternaEterna"), 4000_0010H
/// (EAX = TSC kHz, EBX = APIC timer kHz; the VMware/KVM timing leaf).
fn emulate_cpuid(vcpu: &mut VcpuContext) {
    let leaf = vcpu.regs.gpr(Gpr::Rax.index()) as u32;
    let subleaf = vcpu.regs.gpr(Gpr::Rcx.index()) as u32;
    let mut r = match leaf {
        0x4000_0000 => msr::CpuidResult {
            eax: 0x4000_0010,
            ebx: u32::from_le_bytes(*b"Eter"),
            ecx: u32::from_le_bytes(*b"naEt"),
            edx: u32::from_le_bytes(*b"erna"),
        },
        0x4000_0010 => msr::CpuidResult { eax: (timer::frequency() / 1000) as u32, ..Default::default() },
        0x4000_0001..=0x4000_00ff => msr::CpuidResult::default(),
        _ => msr::cpuid(leaf, subleaf),
    };
    if leaf == 1 {
        r.ecx &= !msr::feature::ECX_VMX;
        r.ecx |= msr::feature::ECX_HYPERVISOR | msr::feature::ECX_X2APIC | msr::feature::ECX_TSC_DEADLINE;
        r.ebx = (r.ebx & 0x00ff_ffff) | ((vmcs::current_vmpidr() as u32) << 24);
    }
    vcpu.regs.set_gpr(Gpr::Rax.index(), u64::from(r.eax));
    vcpu.regs.set_gpr(Gpr::Rbx.index(), u64::from(r.ebx));
    vcpu.regs.set_gpr(Gpr::Rcx.index(), u64::from(r.ecx));
    vcpu.regs.set_gpr(Gpr::Rdx.index(), u64::from(r.edx));
}

/// MSRs of the emulated x2APIC and timer.
const MSR_X2APIC_ID: u32 = 0x802;
const MSR_X2APIC_VERSION: u32 = 0x803;
const MSR_X2APIC_TPR: u32 = 0x808;

fn emulate_rdmsr(vcpu: &mut VcpuContext) -> Action {
    let index = vcpu.regs.gpr(Gpr::Rcx.index()) as u32;
    let value = match index {
        msr::index::IA32_TSC => timer::virtual_count(),
        msr::index::IA32_TSC_DEADLINE => timer::read_guest_deadline(),
        msr::index::IA32_APIC_BASE => {
            let bsp = if vcpu.index == 0 { 1 << 8 } else { 0 };
            apic::GICR_BASE as u64 | (1 << 11) | (1 << 10) | bsp
        }
        timer::MSR_LVT_TIMER => timer::read_guest_lvt(),
        MSR_X2APIC_ID => vmcs::current_vmpidr(),
        MSR_X2APIC_VERSION => 0x0005_0014,
        MSR_X2APIC_TPR => apic::read_guest_tpr(),
        _ => {
            inject_exception(13); // #GP(0)
            return Action::Resume;
        }
    };
    vcpu.regs.set_gpr(Gpr::Rax.index(), value & 0xffff_ffff);
    vcpu.regs.set_gpr(Gpr::Rdx.index(), value >> 32);
    vcpu.regs.skip_instruction();
    Action::Resume
}

fn emulate_wrmsr(vcpu: &mut VcpuContext) -> Action {
    let index = vcpu.regs.gpr(Gpr::Rcx.index()) as u32;
    let value = (vcpu.regs.gpr(Gpr::Rdx.index()) << 32) | (vcpu.regs.gpr(Gpr::Rax.index()) & 0xffff_ffff);
    match index {
        msr::index::IA32_TSC_DEADLINE => timer::write_guest_deadline(value),
        timer::MSR_LVT_TIMER => timer::write_guest_lvt(value),
        apic::MSR_X2APIC_EOI => apic::guest_eoi(),
        MSR_X2APIC_TPR => apic::write_guest_tpr(value),
        _ => {
            inject_exception(13); // #GP(0)
            return Action::Resume;
        }
    }
    vcpu.regs.skip_instruction();
    Action::Resume
}

/// Translates a guest-linear address through the guest's own 4-level page
/// tables (4 KiB, 2 MiB and 1 GiB pages), reading them through the EPT.
fn guest_linear_to_physical(arch: &X86_64, linear: u64) -> Option<u64> {
    const PRESENT: u64 = 1;
    const LARGE: u64 = 1 << 7;
    const ADDR: u64 = 0x000f_ffff_ffff_f000;
    let mut table = vmcs::vmread(field::GUEST_CR3) & ADDR;
    for level in (1..=4u32).rev() {
        let index = (linear >> (12 + 9 * (level - 1))) & 0x1ff;
        let mut raw = [0u8; 8];
        arch.read_guest(table + index * 8, &mut raw).ok()?;
        let entry = u64::from_le_bytes(raw);
        if entry & PRESENT == 0 {
            return None;
        }
        if level == 1 || (level <= 3 && entry & LARGE != 0) {
            let page_bits = 12 + 9 * (level - 1);
            let base = entry & ADDR & !((1u64 << page_bits) - 1);
            return Some(base | (linear & ((1u64 << page_bits) - 1)));
        }
        table = entry & ADDR;
    }
    None
}

/// Fetches up to 15 instruction bytes at the guest RIP.
fn fetch_instruction(arch: &X86_64, rip: u64) -> ([u8; mmio_insn::MAX_INSN_LEN], usize) {
    let mut bytes = [0u8; mmio_insn::MAX_INSN_LEN];
    let mut len = 0;
    while len < bytes.len() {
        let Some(pa) = guest_linear_to_physical(arch, rip + len as u64) else {
            break;
        };
        if arch.read_guest(pa, &mut bytes[len..len + 1]).is_err() {
            break;
        }
        len += 1;
    }
    (bytes, len)
}

/// Emulates a load or store to a guest-physical address the EPT does not map.
fn handle_ept_violation(vm: &mut Vm, arch: &mut X86_64, vcpu: &mut VcpuContext, esr: Esr) -> Action {
    let qualification = EptViolation::decode(esr.qualification);
    let iss = DataAbortIss::decode(esr.iss());
    let ipa = faulting_ipa();
    if qualification.fetch || iss.stage1_walk {
        panic!(
            "{}: EPT violation at {ipa:#x} cannot be emulated ({qualification:?}), RIP {:#x}",
            vm.current(),
            vcpu.regs.rip
        );
    }
    let (bytes, fetched) = fetch_instruction(arch, vcpu.regs.rip);
    let insn = match mmio_insn::decode(&bytes[..fetched]) {
        Ok(insn) => insn,
        Err(err) => panic!(
            "{}: MMIO at {ipa:#x} by an instruction eterna cannot emulate ({err:?}), RIP {:#x}, bytes {:02x?}",
            vm.current(),
            vcpu.regs.rip,
            &bytes[..fetched]
        ),
    };
    let iss = iss.with_instruction(&insn);
    let size = AccessSize::from_bytes(iss.access_bytes).unwrap_or(AccessSize::Double);
    let write = mmio_insn::store_value(&insn, &vcpu.regs.x);
    match (vm.handle_mmio(arch, MmioAccess { ipa, size, write }), insn.access) {
        (Ok(Some(value)), Access::Load { reg, .. }) => {
            let old = vcpu.regs.gpr(usize::from(reg));
            vcpu.regs.set_gpr(usize::from(reg), mmio_insn::merge_load(&insn, old, value));
        }
        // Unclaimed loads read as zero; the core has already traced the fault.
        (Err(_), Access::Load { reg, .. }) => {
            let old = vcpu.regs.gpr(usize::from(reg));
            vcpu.regs.set_gpr(usize::from(reg), mmio_insn::merge_load(&insn, old, 0));
        }
        _ => {}
    }
    vcpu.regs.advance(u64::from(insn.len));
    Action::Resume
}

/// Handles a physical interrupt that arrived while the guest ran. With
/// "acknowledge interrupt on exit" the vector is in the exit interruption
/// information and the interrupt is already in service.
fn handle_irq(vm: &mut Vm, arch: &mut X86_64) -> Action {
    let info = InterruptionInfo::decode(vmcs::vmread(field::VM_EXIT_INTR_INFO) as u32);
    let vector = u32::from(info.vector);
    match vector {
        HYP_TIMER_INTID => {
            timer::disarm_hyp_timer();
            apic::end_of_interrupt(vector);
            panic!("watchdog expired: the guest made no progress within {WATCHDOG_SECONDS} s");
        }
        SPECIAL_INTID_BASE => {
            // Spurious: no EOI.
        }
        other => {
            apic::end_of_interrupt(other);
            trace::emit_hyp(arch, format_args!("{}: ignoring unexpected physical interrupt {other:#x}", vm.current()));
        }
    }
    Action::Resume
}

// ---------------------------------------------------------------------------
// Host IDT: exceptions of the hypervisor itself.
// ---------------------------------------------------------------------------

/// One IDT gate (16 bytes in long mode).
#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct Gate([u64; 2]);

#[repr(C, align(4096))]
struct Idt(UnsafeCell<[Gate; 256]>);
// SAFETY: filled once by the boot CPU before any CPU loads it; read-only after.
unsafe impl Sync for Idt {}

static HOST_IDT: Idt = Idt(UnsafeCell::new([Gate([0; 2]); 256]));

unsafe extern "C" {
    /// 32 exception stubs, 16 bytes apart (defined below).
    static eterna_host_vectors: u8;
}

/// Address of the host IDT (for IDTR and the VMCS host state).
pub fn host_idt_base() -> u64 {
    HOST_IDT.0.get() as u64
}

/// Fills the host IDT (boot CPU, once) and loads it on this CPU.
///
/// # Safety
/// The first call must happen on the boot CPU before other CPUs run.
pub unsafe fn install_host_idt(first: bool) {
    if first {
        let stubs = &raw const eterna_host_vectors as u64;
        // SAFETY: see `Idt`.
        let idt = unsafe { &mut *HOST_IDT.0.get() };
        for (vector, gate) in idt.iter_mut().enumerate().take(usize::from(FIRST_INTERRUPT_VECTOR)) {
            let handler = stubs + 16 * vector as u64;
            // Present, DPL 0, 64-bit interrupt gate, IST 0.
            gate.0[0] =
                (handler & 0xffff) | (u64::from(KERNEL_CS) << 16) | (0x8E << 40) | (((handler >> 16) & 0xffff) << 48);
            gate.0[1] = handler >> 32;
        }
    }
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let pointer = Pointer { limit: (256 * 16 - 1) as u16, base: host_idt_base() };
    // SAFETY: the IDT is complete and stays in place.
    unsafe { core::arch::asm!("lidt [{0}]", in(reg) &pointer, options(nostack, preserves_flags)) };
}

/// Host interrupts taken by the boot-time timer self-test (see
/// [`super::timer::boot_tick_selftest`]): counted by `eterna_host_boot_tick`.
pub static BOOT_TICKS: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

unsafe extern "C" {
    /// Host interrupt handler of the boot-time timer self-test (defined below).
    static eterna_host_boot_tick: u8;
}

/// Points host IDT gate `vector` at the boot-time tick handler.
///
/// # Safety
/// Boot CPU, interrupts off, after [`install_host_idt`].
pub unsafe fn install_boot_tick_gate(vector: u8) {
    let handler = &raw const eterna_host_boot_tick as u64;
    // SAFETY: see `Idt`; nothing else touches the table now.
    let idt = unsafe { &mut *HOST_IDT.0.get() };
    idt[usize::from(vector)].0[0] =
        (handler & 0xffff) | (u64::from(KERNEL_CS) << 16) | (0x8E << 40) | (((handler >> 16) & 0xffff) << 48);
    idt[usize::from(vector)].0[1] = handler >> 32;
}

/// Rust side of the host exception stubs: the hypervisor faulted.
#[unsafe(no_mangle)]
extern "C" fn eterna_host_exception(vector: u64, error_code: u64, rip: u64, rsp: u64) -> ! {
    panic!(
        "host exception {vector} (error code {error_code:#x}) at RIP {rip:#x}, RSP {rsp:#x}, CR2 {:#x}",
        msr::read_cr2()
    );
}

global_asm!(
    r#"
.section .text.eterna_host_vectors, "ax"
.balign 16
.global eterna_host_vectors
eterna_host_vectors:
.irp vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .balign 16
    .if (\vector == 8) || ((\vector >= 10) && (\vector <= 14)) || (\vector == 17) || (\vector == 21) || (\vector == 29) || (\vector == 30)
    .else
    push    0
    .endif
    push    \vector
    jmp     eterna_host_exception_common
.endr

// Boot-time timer self-test: count the interrupt and return; the EOI is
// written by the waiting code.
.balign 16
.global eterna_host_boot_tick
eterna_host_boot_tick:
    lock inc dword ptr [rip + {boot_ticks}]
    iretq

// Stack: vector, error code, RIP, CS, RFLAGS, RSP, SS.
eterna_host_exception_common:
    mov     rdi, qword ptr [rsp]
    mov     rsi, qword ptr [rsp + 8]
    mov     rdx, qword ptr [rsp + 16]
    mov     rcx, qword ptr [rsp + 40]
    and     rsp, -16
    call    eterna_host_exception
1:  cli
    hlt
    jmp     1b
.text
"#,
    boot_ticks = sym BOOT_TICKS,
);

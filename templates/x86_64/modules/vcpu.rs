//! vCPU register context, the VMX world switch and the run loop.
//!
//! A guest entry goes through [`enter`]: it writes the guest's RIP, RSP and
//! RFLAGS into the current VMCS, then the assembly below saves the
//! hypervisor's callee-saved registers and FP control words, stores its
//! stack pointer in the VMCS host-RSP field, restores the guest's FXSAVE
//! image and general-purpose registers and executes VMLAUNCH (first entry
//! of a VMCS) or VMRESUME. On a VM exit the CPU loads the host state from
//! the VMCS and continues at `eterna_vmx_exit` (the host-RIP field): it
//! stores the guest registers back into the same [`GuestRegs`] (whose
//! address it finds on the host stack), saves the guest FP state, restores
//! the hypervisor's registers and returns from the entry call.
//!
//! Everything else that AArch64 switches by hand (EL1 system registers)
//! lives in each vCPU's own VMCS on x86: switching vCPUs is a VMPTRLD.

use core::arch::global_asm;
use core::mem::offset_of;

use eterna_core::{Action, Vm};

use super::apic::VirtualGicState;
use super::exit_reason::{basic, ExitReasonField, InterruptionInfo};
use super::timer::{self, VirtualTimerState};
use super::vmcall_abi::Gpr;
use super::vmcs::{self, field, GuestSetup};
use super::vmexit;
use super::X86_64;

/// RFLAGS of a fresh vCPU: only the reserved bit 1 set (interrupts off).
const RFLAGS_RESET: u64 = 0x2;
/// FXSAVE image defaults: x87 control word (all exceptions masked).
const FCW_RESET: u16 = 0x037F;
/// FXSAVE image defaults: MXCSR (all SSE exceptions masked).
const MXCSR_RESET: u32 = 0x1F80;

/// Registers the hypervisor must get back when the entry call returns.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HostRegs {
    /// RBX, RBP, R12..R15 (callee-saved in the System V ABI), informational:
    /// the assembly keeps them on the host stack.
    pub callee_saved: [u64; 6],
    /// Stack pointer at the time of entry (also written to HOST_RSP).
    pub sp: u64,
    /// MXCSR (bits 31:0) and x87 control word (bits 47:32): the callee-saved
    /// floating-point control state of the System V ABI.
    pub fp_control: u64,
}

/// The 512-byte FXSAVE image of the guest's x87/SSE state.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug)]
pub struct FxArea(pub [u8; 512]);

impl FxArea {
    fn reset() -> Self {
        let mut area = [0u8; 512];
        area[0..2].copy_from_slice(&FCW_RESET.to_le_bytes());
        area[24..28].copy_from_slice(&MXCSR_RESET.to_le_bytes());
        FxArea(area)
    }
}

/// Guest state saved and loaded on every exit and entry. The layout is
/// shared with the assembly (offsets are passed as `const` operands).
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug)]
pub struct GuestRegs {
    /// General-purpose registers in x86 encoding order (RAX, RCX, RDX,
    /// RBX, RSP, RBP, RSI, RDI, R8..R15). `x[4]` mirrors GUEST_RSP.
    pub x: [u64; 16],
    /// Guest RIP (GUEST_RIP), synchronised around each entry.
    pub rip: u64,
    /// Guest RFLAGS (GUEST_RFLAGS).
    pub rflags: u64,
    /// VM-exit instruction length of the last exit.
    pub instruction_len: u64,
    /// Non-zero: the next entry clears STI/MOV-SS blocking (an emulated
    /// instruction was skipped).
    pub clear_blocking: u64,
    /// Non-zero once this VMCS was launched (VMRESUME from then on).
    pub launched: u64,
    _pad: u64,
    /// Guest x87/SSE state.
    pub fx: FxArea,
    /// The hypervisor's registers while this vCPU runs.
    pub host: HostRegs,
}

impl GuestRegs {
    /// Reads general-purpose register `n` (x86 encoding); other numbers
    /// read as zero.
    pub fn gpr(&self, n: usize) -> u64 {
        self.x.get(n).copied().unwrap_or(0)
    }

    /// Writes general-purpose register `n` (x86 encoding).
    pub fn set_gpr(&mut self, n: usize, value: u64) {
        if let Some(slot) = self.x.get_mut(n) {
            *slot = value;
        }
    }

    /// Steps the guest RIP over the instruction that exited (VM-exit
    /// instruction length) and ends any STI/MOV-SS interrupt shadow.
    pub fn skip_instruction(&mut self) {
        self.advance(self.instruction_len);
    }

    /// Steps the guest RIP by `len` bytes (for emulated instructions whose
    /// length the decoder determined).
    pub fn advance(&mut self, len: u64) {
        self.rip = self.rip.wrapping_add(len);
        self.clear_blocking = 1;
    }
}

/// Everything the hypervisor keeps for one vCPU.
#[derive(Clone, Copy, Debug)]
pub struct VcpuContext {
    /// Registers exchanged on every entry/exit.
    pub regs: GuestRegs,
    /// vCPU index (selects the VMCS).
    pub index: usize,
    /// Initial guest state for the VMCS.
    pub setup: GuestSetup,
    /// Guest virtual timer.
    pub timer: VirtualTimerState,
    /// Guest virtual interrupt state.
    pub gic: VirtualGicState,
    /// APIC ID the guest sees.
    pub vmpidr: u64,
}

impl VcpuContext {
    /// A vCPU that starts at `entry` in 64-bit mode at CPL 0 with
    /// `rsp = stack_top - 8` (as after a call), interrupts off and
    /// `rdi = arg` (the System V first argument).
    pub fn new(index: usize, entry: u64, stack_top: u64, arg: u64) -> Self {
        let mut regs = GuestRegs {
            x: [0; 16],
            rip: entry,
            rflags: RFLAGS_RESET,
            instruction_len: 0,
            clear_blocking: 0,
            launched: 0,
            _pad: 0,
            fx: FxArea::reset(),
            host: HostRegs::default(),
        };
        regs.x[Gpr::Rdi.index()] = arg;
        regs.x[Gpr::Rsp.index()] = stack_top - 8;
        let (gdt_base, gdt_limit) = crate::guest::descriptor_table();
        let setup =
            GuestSetup { rip: entry, rsp: stack_top - 8, cr3: crate::guest::page_table_root(), gdt_base, gdt_limit };
        VcpuContext {
            regs,
            index,
            setup,
            timer: VirtualTimerState::default(),
            gic: VirtualGicState::default(),
            vmpidr: vmcs::vmpidr_for(index),
        }
    }

    /// Makes this vCPU's VMCS current (building it on first use) and its
    /// emulated timer and interrupt state live.
    pub fn load(&self) {
        let result = if self.regs.launched == 0 && !vmcs_ready(self.index) {
            vmcs::init_vmcs(self.index, &self.setup).map(|()| mark_ready(self.index))
        } else {
            vmcs::vmptrld(vmcs::vmcs_address(self.index))
        };
        if let Err(err) = result {
            panic!("vcpu{}: cannot load VMCS: {err}", self.index);
        }
        self.timer.restore();
        self.gic.restore();
        vmcs::load_vmpidr(self.vmpidr);
    }

    /// Captures the live emulated state into this context (the VMCS keeps
    /// the architectural state).
    pub fn save(&mut self) {
        self.timer.save();
        self.gic.save();
    }
}

static VMCS_READY: [core::sync::atomic::AtomicBool; eterna_core::vcpu::MAX_VCPUS] =
    [const { core::sync::atomic::AtomicBool::new(false) }; eterna_core::vcpu::MAX_VCPUS];

fn vmcs_ready(index: usize) -> bool {
    VMCS_READY[index].load(core::sync::atomic::Ordering::Relaxed)
}

fn mark_ready(index: usize) {
    VMCS_READY[index].store(true, core::sync::atomic::Ordering::Relaxed);
}

/// Kinds of guest exit, as [`enter`] reports them. The names follow the
/// AArch64 exception kinds so the dispatcher reads the same.
pub mod exit {
    /// A synchronous VM exit (instruction, EPT violation, ...): the basic
    /// exit reason says which.
    pub const SYNC: u64 = 0;
    /// An external (physical) interrupt arrived while the guest ran.
    pub const IRQ: u64 = 1;
    /// An NMI arrived while the guest ran.
    pub const FIQ: u64 = 2;
    /// The guest hit a fatal asynchronous condition (triple fault).
    pub const SERROR: u64 = 3;
    /// VM entry failed (VMfail, or an entry-failure exit reason).
    pub const ENTRY_FAILED: u64 = 4;
    /// The AArch64 name of the fifth kind.
    pub const AARCH32: u64 = ENTRY_FAILED;
}

/// Byte offsets into [`GuestRegs`] used by the assembly.
pub mod offsets {
    use super::{offset_of, GuestRegs, HostRegs};
    /// RAX (start of the GPR file).
    pub const X: usize = offset_of!(GuestRegs, x);
    /// Guest RIP (the AArch64 ELR slot).
    pub const ELR: usize = offset_of!(GuestRegs, rip);
    /// The FXSAVE image (the AArch64 V-register slot).
    pub const V: usize = offset_of!(GuestRegs, fx);
    /// Guest MXCSR inside the FXSAVE image (the AArch64 FPSR slot).
    pub const FPSR: usize = V + 24;
    /// Launched flag.
    pub const LAUNCHED: usize = offset_of!(GuestRegs, launched);
    /// Host registers.
    pub const HOST: usize = offset_of!(GuestRegs, host);
    /// Host SP (relative to `HOST`).
    pub const HOST_SP: usize = offset_of!(HostRegs, sp);
    /// Host FP control state (relative to `HOST`; the AArch64 d8 slot).
    pub const HOST_D8: usize = offset_of!(HostRegs, fp_control);
}

// The layout the assembly relies on.
const _: () = {
    assert!(offsets::X == 0);
    assert!(offsets::ELR == 128);
    assert!(offsets::V.is_multiple_of(16));
};

global_asm!(
    r#"
.section .text.eterna_vmx_enter, "ax"
.global eterna_vmx_enter
.type eterna_vmx_enter, @function
// u64 eterna_vmx_enter(GuestRegs *regs): 0 after a VM exit, 1 on
// VMfailValid, 2 on VMfailInvalid.
eterna_vmx_enter:
    push    rbp
    push    rbx
    push    r12
    push    r13
    push    r14
    push    r15
    stmxcsr dword ptr [rdi + {HOST} + {HOST_D8}]
    fnstcw  word ptr [rdi + {HOST} + {HOST_D8} + 4]
    push    rdi
    mov     qword ptr [rdi + {HOST} + {HOST_SP}], rsp
    mov     rax, {HOST_RSP_FIELD}
    vmwrite rax, rsp
    fxrstor64 [rdi + {V}]
    cmp     qword ptr [rdi + {LAUNCHED}], 0
    // MOV leaves the flags alone: load the guest GPRs, RDI last.
    mov     rax, qword ptr [rdi + 0]
    mov     rcx, qword ptr [rdi + 8]
    mov     rdx, qword ptr [rdi + 16]
    mov     rbx, qword ptr [rdi + 24]
    mov     rbp, qword ptr [rdi + 40]
    mov     rsi, qword ptr [rdi + 48]
    mov     r8, qword ptr [rdi + 64]
    mov     r9, qword ptr [rdi + 72]
    mov     r10, qword ptr [rdi + 80]
    mov     r11, qword ptr [rdi + 88]
    mov     r12, qword ptr [rdi + 96]
    mov     r13, qword ptr [rdi + 104]
    mov     r14, qword ptr [rdi + 112]
    mov     r15, qword ptr [rdi + 120]
    mov     rdi, qword ptr [rdi + 56]
    jne     1f
    vmlaunch
    jmp     2f
1:  vmresume
2:  // Entry failed; the flags tell how. Guest values are in the GPRs.
    pushfq
    pop     rax
    pop     rdi
    ldmxcsr dword ptr [rdi + {HOST} + {HOST_D8}]
    fldcw   word ptr [rdi + {HOST} + {HOST_D8} + 4]
    mov     ecx, 2
    test    eax, 1
    mov     eax, 1
    cmovnz  eax, ecx
    pop     r15
    pop     r14
    pop     r13
    pop     r12
    pop     rbx
    pop     rbp
    ret
.size eterna_vmx_enter, . - eterna_vmx_enter

// VM exit: host CS/SS/RSP/RIP etc. come from the VMCS; GPRs are the guest's.
.global eterna_vmx_exit
.type eterna_vmx_exit, @function
eterna_vmx_exit:
    push    rdi
    mov     rdi, qword ptr [rsp + 8]
    mov     qword ptr [rdi + 0], rax
    mov     qword ptr [rdi + 8], rcx
    mov     qword ptr [rdi + 16], rdx
    mov     qword ptr [rdi + 24], rbx
    mov     qword ptr [rdi + 40], rbp
    mov     qword ptr [rdi + 48], rsi
    pop     rax
    mov     qword ptr [rdi + 56], rax
    mov     qword ptr [rdi + 64], r8
    mov     qword ptr [rdi + 72], r9
    mov     qword ptr [rdi + 80], r10
    mov     qword ptr [rdi + 88], r11
    mov     qword ptr [rdi + 96], r12
    mov     qword ptr [rdi + 104], r13
    mov     qword ptr [rdi + 112], r14
    mov     qword ptr [rdi + 120], r15
    fxsave64 [rdi + {V}]
    ldmxcsr dword ptr [rdi + {HOST} + {HOST_D8}]
    fldcw   word ptr [rdi + {HOST} + {HOST_D8} + 4]
    add     rsp, 8
    pop     r15
    pop     r14
    pop     r13
    pop     r12
    pop     rbx
    pop     rbp
    xor     eax, eax
    ret
.size eterna_vmx_exit, . - eterna_vmx_exit
.text
"#,
    HOST = const offsets::HOST,
    HOST_SP = const offsets::HOST_SP,
    HOST_D8 = const offsets::HOST_D8,
    V = const offsets::V,
    LAUNCHED = const offsets::LAUNCHED,
    HOST_RSP_FIELD = const field::HOST_RSP,
);

unsafe extern "C" {
    fn eterna_vmx_enter(regs: *mut GuestRegs) -> u64;
    fn eterna_vmx_exit();
}

/// Runs the guest described by `regs` (on the current VMCS) until it
/// exits; returns the exit kind (see [`exit`]).
///
/// # Safety
/// The VMCS of this vCPU must be current and complete, EPT configured, and
/// `regs` must describe a guest that cannot harm the hypervisor.
pub unsafe fn enter(regs: &mut GuestRegs) -> u64 {
    vmcs::vmwrite(field::GUEST_RIP, regs.rip);
    vmcs::vmwrite(field::GUEST_RSP, regs.x[Gpr::Rsp.index()]);
    vmcs::vmwrite(field::GUEST_RFLAGS, regs.rflags);
    if regs.clear_blocking != 0 {
        let state = vmcs::vmread(field::GUEST_INTERRUPTIBILITY_INFO) & !0b11;
        vmcs::vmwrite(field::GUEST_INTERRUPTIBILITY_INFO, state);
        regs.clear_blocking = 0;
    }
    vmcs::set_preemption_timer(timer::preemption_budget());
    // SAFETY: upheld by the caller; the assembly preserves every register
    // the System V ABI requires and returns through the exit path.
    let status = unsafe { eterna_vmx_enter(regs) };
    if status != 0 {
        return exit::ENTRY_FAILED;
    }
    regs.launched = 1;
    regs.rip = vmcs::vmread(field::GUEST_RIP);
    regs.x[Gpr::Rsp.index()] = vmcs::vmread(field::GUEST_RSP);
    regs.rflags = vmcs::vmread(field::GUEST_RFLAGS);
    regs.instruction_len = vmcs::vmread(field::VM_EXIT_INSTRUCTION_LEN);
    let reason = ExitReasonField(vmcs::vmread(field::VM_EXIT_REASON) as u32);
    if reason.entry_failure() {
        return exit::ENTRY_FAILED;
    }
    match reason.basic() {
        basic::EXTERNAL_INTERRUPT => exit::IRQ,
        basic::EXCEPTION_OR_NMI => {
            let info = InterruptionInfo::decode(vmcs::vmread(field::VM_EXIT_INTR_INFO) as u32);
            if info.kind == super::exit_reason::event_type::NMI {
                exit::FIQ
            } else {
                exit::SYNC
            }
        }
        basic::TRIPLE_FAULT => exit::SERROR,
        _ => exit::SYNC,
    }
}

/// Runs the VM until every vCPU has exited and returns its exit code.
///
/// `vcpus[i]` is the context of vCPU `i`. The loop is the only place that
/// enters the guest; exit handling lives in `vmexit.rs`, scheduling and
/// hypercall semantics in eterna-core.
///
/// # Safety
/// As for [`enter`], for every context in `vcpus`.
pub unsafe fn run(vm: &mut Vm, vcpus: &mut [VcpuContext]) -> i64 {
    let mut arch = X86_64;
    vmcs::set_host_rip(eterna_vmx_exit as *const () as usize as u64);
    let mut running = vm.current().0;
    vcpus[running].load();
    vm.start(&mut arch);
    loop {
        vm.deliver_pending_irqs(&mut arch);
        // SAFETY: upheld by the caller.
        let kind = unsafe { enter(&mut vcpus[running].regs) };
        match vmexit::handle_guest_exit(kind, vm, &mut arch, &mut vcpus[running]) {
            Action::Resume => {}
            Action::Switch(next) => {
                vcpus[running].save();
                running = next.0;
                vcpus[running].load();
            }
            Action::Shutdown(_) => {
                vcpus[running].save();
                return vm.finish(&mut arch);
            }
        }
    }
}

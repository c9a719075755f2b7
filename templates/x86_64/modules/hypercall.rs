//! VMCALL hypercall handling.
//!
//! The guest executes `VMCALL` with the eterna function identifier in RAX
//! and arguments in RDI, RSI, RDX (see [`vmcall_abi`] for the mapping of
//! the AArch64 `x0..x3` slots). Unlike an AArch64 HVC, whose preferred
//! return address is already the next instruction, a VMCALL exit leaves
//! RIP on the VMCALL, so the handler steps over it. Decoding and semantics
//! live in `eterna_core::hypercall` and `eterna_core::vm`; this module only
//! moves registers in and out.

use eterna_core::{trace, Action, Status, Vm};

#[path = "vmcall_abi.rs"]
pub mod vmcall_abi;

use super::vcpu::VcpuContext;
use super::vmexit::Esr;
use super::X86_64;

/// Handles a VMCALL exit of the running vCPU.
pub fn handle(vm: &mut Vm, arch: &mut X86_64, vcpu: &mut VcpuContext, esr: Esr) -> Action {
    // VMCALL is 0F 01 C1; any other length means a different instruction
    // was reported, which would be a hypervisor bug worth seeing.
    if esr.instruction_len != vmcall_abi::VMCALL_LEN {
        trace::emit_hyp(
            arch,
            format_args!("{}: VMCALL exit with instruction length {}", vm.current(), esr.instruction_len),
        );
        vcpu.regs.x[vmcall_abi::Gpr::Rax.index()] = Status::NotSupported.to_reg();
        vcpu.regs.skip_instruction();
        return Action::Resume;
    }
    let args = vmcall_abi::read_args(&vcpu.regs.x);
    let (ret, action) = vm.handle_hypercall(arch, args);
    vmcall_abi::write_results(&mut vcpu.regs.x, ret);
    vcpu.regs.skip_instruction();
    action
}

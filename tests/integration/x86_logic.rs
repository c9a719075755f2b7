//! Host unit tests of the generic VT-x support library (`templates/x86_64/vtx/`,
//! pure `core`): VMCS encodings and control adjustment, EPT/paging entry
//! formats, exit decoding and the MMIO instruction decoder. The values come
//! from the Intel SDM (Vol. 3C/3D, appendices A-C).

#[allow(dead_code)]
#[path = "../../templates/x86_64/vtx/vmx_fields.rs"]
mod vmx_fields;

#[allow(dead_code)]
#[path = "../../templates/x86_64/vtx/ept_entry.rs"]
mod ept_entry;

#[allow(dead_code)]
#[path = "../../templates/x86_64/vtx/exit_reason.rs"]
mod exit_reason;

#[allow(dead_code)]
#[path = "../../templates/x86_64/vtx/mmio_insn.rs"]
mod mmio_insn;

use ept_entry::{ept, pte, MemoryType};
use exit_reason::{ExitReason, ExitReasonField, InterruptionInfo};
use mmio_insn::{Access, DecodeError, Source};
use vmx_fields::{field, FieldKind, FieldWidth};

#[test]
fn vmcs_field_encodings_match_the_sdm() {
    assert_eq!(field::GUEST_RIP, 0x681E);
    assert_eq!(field::GUEST_RSP, 0x681C);
    assert_eq!(field::GUEST_RFLAGS, 0x6820);
    assert_eq!(field::VM_EXIT_REASON, 0x4402);
    assert_eq!(field::EXIT_QUALIFICATION, 0x6400);
    assert_eq!(field::GUEST_PHYSICAL_ADDRESS, 0x2400);
    assert_eq!(field::EPT_POINTER, 0x201A);
    assert_eq!(field::VMCS_LINK_POINTER, 0x2800);
    assert_eq!(field::PIN_BASED_VM_EXEC_CONTROL, 0x4000);
    assert_eq!(field::CPU_BASED_VM_EXEC_CONTROL, 0x4002);
    assert_eq!(field::SECONDARY_VM_EXEC_CONTROL, 0x401E);
    assert_eq!(field::VM_ENTRY_INTR_INFO_FIELD, 0x4016);
    assert_eq!(field::HOST_RIP, 0x6C16);
    assert_eq!(field::HOST_TR_SELECTOR, 0x0C0C);
    assert_eq!(field::GUEST_CS_AR_BYTES, 0x4816);
}

#[test]
fn field_width_and_kind_follow_the_encoding_layout() {
    assert_eq!(
        vmx_fields::field_width(field::GUEST_CS_SELECTOR),
        FieldWidth::Bits16
    );
    assert_eq!(
        vmx_fields::field_width(field::EPT_POINTER),
        FieldWidth::Bits64
    );
    assert_eq!(
        vmx_fields::field_width(field::VM_EXIT_REASON),
        FieldWidth::Bits32
    );
    assert_eq!(
        vmx_fields::field_width(field::GUEST_RIP),
        FieldWidth::Natural
    );
    assert_eq!(
        vmx_fields::field_kind(field::TSC_OFFSET),
        FieldKind::Control
    );
    assert_eq!(
        vmx_fields::field_kind(field::VM_EXIT_REASON),
        FieldKind::ReadOnlyData
    );
    assert_eq!(
        vmx_fields::field_kind(field::GUEST_CR3),
        FieldKind::GuestState
    );
    assert_eq!(
        vmx_fields::field_kind(field::HOST_CR3),
        FieldKind::HostState
    );
    assert!(!vmx_fields::field_is_writable(field::EXIT_QUALIFICATION));
    assert!(vmx_fields::field_is_writable(field::GUEST_RIP));
}

#[test]
fn control_bits_match_the_sdm() {
    use vmx_fields::{entry_ctl, exit_ctl, pin, proc1, proc2};
    assert_eq!(pin::EXTERNAL_INTERRUPT_EXITING, 1);
    assert_eq!(pin::VMX_PREEMPTION_TIMER, 0x40);
    assert_eq!(proc1::HLT_EXITING, 0x80);
    assert_eq!(proc1::INTERRUPT_WINDOW_EXITING, 0x4);
    assert_eq!(proc1::ACTIVATE_SECONDARY_CONTROLS, 0x8000_0000);
    assert_eq!(proc2::ENABLE_EPT, 0x2);
    assert_eq!(proc2::ENABLE_VPID, 0x20);
    assert_eq!(exit_ctl::HOST_ADDRESS_SPACE_SIZE, 0x200);
    assert_eq!(exit_ctl::ACK_INTERRUPT_ON_EXIT, 0x8000);
    assert_eq!(entry_ctl::IA32E_MODE_GUEST, 0x200);
    assert_eq!(entry_ctl::LOAD_IA32_EFER, 0x8000);
    assert_eq!(vmx_fields::msr_index::IA32_VMX_BASIC, 0x480);
    assert_eq!(vmx_fields::msr_index::IA32_VMX_TRUE_PROCBASED_CTLS, 0x48E);
    assert_eq!(vmx_fields::msr_index::IA32_VMX_EPT_VPID_CAP, 0x48C);
}

#[test]
fn adjust_controls_forces_and_drops_bits() {
    // Allowed-0 (must be 1): bits 1, 2, 4 (the pin-based default1 class).
    // Allowed-1 (may be 1): bits 0..=7.
    let capability = (0xffu64 << 32) | 0b1_0110;
    let adjusted = vmx_fields::adjust_controls(1 << 0 | 1 << 6, capability);
    assert_eq!(adjusted.value, 0b101_0111);
    assert_eq!(adjusted.unsupported, 0);
    // A desired bit outside the allowed-1 mask is dropped and reported.
    let adjusted = vmx_fields::adjust_controls(1 << 9 | 1, capability);
    assert_eq!(adjusted.value, 0b1_0111);
    assert_eq!(adjusted.unsupported, 1 << 9);
    assert!(vmx_fields::control_allowed(1 << 7, capability));
    assert!(!vmx_fields::control_allowed(1 << 8, capability));
}

#[test]
fn fixed_cr_bits_are_applied() {
    // Typical IA32_VMX_CR0_FIXED0/1: PE, NE, PG must be 1; bits above 31 must be 0.
    let fixed0 = 0x8000_0021;
    let fixed1 = 0xffff_ffff;
    assert_eq!(
        vmx_fields::apply_fixed_bits(0x1_0000_0010, fixed0, fixed1),
        0x8000_0031
    );
    assert_eq!(
        vmx_fields::apply_fixed_bits(0, vmx_fields::cr4::VMXE, u64::MAX),
        vmx_fields::cr4::VMXE
    );
}

#[test]
fn vmx_basic_decodes() {
    // Revision 0x12, 4 KiB regions, write-back, true controls.
    let value = (1u64 << 55) | (6u64 << 50) | (0x1000u64 << 32) | 0x12;
    let basic = vmx_fields::VmxBasic::decode(value);
    assert_eq!(basic.revision_id, 0x12);
    assert_eq!(basic.region_size, 0x1000);
    assert_eq!(basic.memory_type, 6);
    assert!(basic.true_controls);
    assert!(!basic.addresses_32bit);
    assert_eq!(
        vmx_fields::vm_instruction_error_name(7),
        "VM entry with invalid control field(s)"
    );
}

#[test]
fn ept_entries_have_sdm_bits() {
    assert_eq!(ept::READ | ept::WRITE | ept::EXECUTE, 0b111);
    assert_eq!(ept::LARGE_PAGE, 1 << 7);
    let leaf = ept_entry::ept_leaf(0x20_3000, true, false, true, MemoryType::WriteBack);
    assert_eq!(leaf, 0x20_3000 | 0b101 | (6 << 3) | (1 << 6));
    assert!(ept_entry::ept_present(leaf));
    assert!(!ept_entry::ept_misconfigured(leaf));
    assert!(ept_entry::ept_misconfigured(ept::WRITE));
    assert_eq!(ept_entry::ept_table(0x5000), 0x5007);
    assert!(!ept_entry::ept_present(0));
}

#[test]
fn eptp_layout() {
    // WB (6), 4-level walk (3 in bits 5:3), no A/D flags.
    assert_eq!(
        ept_entry::eptp(0x7000, MemoryType::WriteBack, 4, false),
        0x7000 | 0x1E
    );
    assert_eq!(
        ept_entry::eptp(0x7000, MemoryType::WriteBack, 4, true),
        0x7000 | 0x5E
    );
    let cap =
        ept_entry::EptVpidCap::decode((1 << 6) | (1 << 14) | (1 << 20) | (1 << 26) | (1 << 32));
    assert!(cap.walk_length_4 && cap.memory_type_wb && cap.invept && cap.invept_all_context);
    assert!(cap.invvpid && !cap.invvpid_all_context && !cap.accessed_dirty);
}

#[test]
fn level_indices_split_addresses() {
    let addr = (3u64 << 39) | (5 << 30) | (7 << 21) | (9 << 12) | 0x123;
    assert_eq!(ept_entry::level_index(addr, 4), 3);
    assert_eq!(ept_entry::level_index(addr, 3), 5);
    assert_eq!(ept_entry::level_index(addr, 2), 7);
    assert_eq!(ept_entry::level_index(addr, 1), 9);
}

#[test]
fn paging_entries() {
    assert_eq!(pte::PRESENT | pte::WRITABLE, 0b11);
    assert_eq!(pte::NO_EXECUTE, 1 << 63);
    assert_eq!(
        ept_entry::pde_large(0x20_0000, true, false),
        0x20_0000 | 0xE3
    );
    assert_eq!(ept_entry::pde_large(0xFEE0_0000, true, true) & 0x18, 0x18);
    assert_eq!(ept_entry::pte_table(0x3000), 0x3003);
}

#[test]
fn exit_reasons_decode() {
    assert_eq!(ExitReason::from_basic(18), ExitReason::Vmcall);
    assert_eq!(ExitReason::from_basic(48), ExitReason::EptViolation);
    assert_eq!(ExitReason::from_basic(49), ExitReason::EptMisconfig);
    assert_eq!(ExitReason::from_basic(12), ExitReason::Hlt);
    assert_eq!(ExitReason::from_basic(10), ExitReason::Cpuid);
    assert_eq!(ExitReason::from_basic(1), ExitReason::ExternalInterrupt);
    assert_eq!(ExitReason::from_basic(2), ExitReason::TripleFault);
    assert_eq!(ExitReason::from_basic(52), ExitReason::PreemptionTimer);
    assert_eq!(ExitReason::from_basic(24), ExitReason::VmxInstruction(24));
    assert_eq!(ExitReason::from_basic(200), ExitReason::Other(200));
    let failed = ExitReasonField(0x8000_0021);
    assert!(failed.entry_failure());
    assert_eq!(failed.reason(), ExitReason::InvalidGuestState);
    assert!(!ExitReasonField(18).entry_failure());
}

#[test]
fn ept_violation_qualification() {
    // Write to an unmapped address, guest-linear address valid, translated access.
    let q = exit_reason::EptViolation::decode(0b1_1000_0010);
    assert!(q.write && !q.read && !q.fetch);
    assert!(q.is_not_present() && !q.is_permission());
    assert!(!q.during_guest_walk());
    // Read that hit a read-only, executable page during the guest's own walk.
    let q = exit_reason::EptViolation::decode(0b0_1010_1001);
    assert!(q.read && q.is_permission() && q.during_guest_walk());
    assert_eq!(q.granted, 0b101);
}

#[test]
fn other_qualifications() {
    let cr = exit_reason::CrAccess::decode(0x0000_0304);
    assert_eq!((cr.cr, cr.access_type, cr.gpr), (4, 0, 3));
    let io = exit_reason::IoAccess::decode(0x03F8_0008);
    assert_eq!((io.size, io.input, io.port), (1, true, 0x3F8));
    let io = exit_reason::IoAccess::decode(0x00F4_0003);
    assert_eq!((io.size, io.input, io.port), (4, false, 0xF4));
}

#[test]
fn interruption_info_round_trips() {
    let timer = InterruptionInfo::external_interrupt(0x3B);
    assert_eq!(timer.encode(), 0x8000_003B);
    assert_eq!(InterruptionInfo::decode(timer.encode()), timer);
    let gp = InterruptionInfo::hardware_exception(13);
    assert_eq!(gp.encode(), 0x8000_0B0D);
    assert_eq!(InterruptionInfo::decode(0x8000_0B0D), gp);
    assert!(!InterruptionInfo::hardware_exception(6).error_code);
    assert!(!InterruptionInfo::decode(0x3B).valid);
}

#[test]
fn injection_needs_if_and_no_sti_blocking() {
    use exit_reason::{can_inject_external, interruptibility, RFLAGS_IF};
    assert!(can_inject_external(RFLAGS_IF | 2, 0));
    assert!(!can_inject_external(2, 0));
    assert!(!can_inject_external(
        RFLAGS_IF,
        interruptibility::BLOCKING_BY_STI
    ));
    assert!(!can_inject_external(
        RFLAGS_IF,
        interruptibility::BLOCKING_BY_MOV_SS
    ));
    assert!(can_inject_external(
        RFLAGS_IF,
        interruptibility::BLOCKING_BY_NMI
    ));
}

#[test]
fn mmio_loads_decode() {
    // mov eax, dword ptr [rdx]
    let insn = mmio_insn::decode(&[0x8B, 0x02]).unwrap();
    assert_eq!((insn.len, insn.size), (2, 4));
    assert_eq!(
        insn.access,
        Access::Load {
            reg: 0,
            zero_extend: true,
            high_byte: false
        }
    );
    // mov r9d, dword ptr [rsi + 0x10]  (REX.R)
    let insn = mmio_insn::decode(&[0x44, 0x8B, 0x4E, 0x10]).unwrap();
    assert_eq!((insn.len, insn.size), (4, 4));
    assert_eq!(
        insn.access,
        Access::Load {
            reg: 9,
            zero_extend: true,
            high_byte: false
        }
    );
    // mov rax, qword ptr [rip + disp32]
    let insn = mmio_insn::decode(&[0x48, 0x8B, 0x05, 1, 2, 3, 4]).unwrap();
    assert_eq!((insn.len, insn.size), (7, 8));
    // movzx ecx, word ptr [rax + rbx*4 + 0x100]  (SIB + disp32)
    let insn = mmio_insn::decode(&[0x0F, 0xB7, 0x8C, 0x98, 0, 1, 0, 0]).unwrap();
    assert_eq!((insn.len, insn.size), (8, 2));
    assert_eq!(
        insn.access,
        Access::Load {
            reg: 1,
            zero_extend: true,
            high_byte: false
        }
    );
    // mov ah, byte ptr [rdi]  (legacy high-byte register)
    let insn = mmio_insn::decode(&[0x8A, 0x27]).unwrap();
    assert_eq!(
        insn.access,
        Access::Load {
            reg: 0,
            zero_extend: false,
            high_byte: true
        }
    );
    assert_eq!(mmio_insn::merge_load(&insn, 0x1122_3344, 0xAB), 0x1122_AB44);
    // mov ax, word ptr [rdi] keeps the upper bits
    let insn = mmio_insn::decode(&[0x66, 0x8B, 0x07]).unwrap();
    assert_eq!(insn.size, 2);
    assert_eq!(
        mmio_insn::merge_load(&insn, u64::MAX, 0x1234),
        0xFFFF_FFFF_FFFF_1234
    );
}

#[test]
fn mmio_stores_decode() {
    // GPR numbering of the instruction encoding: RAX 0, RCX 1, RDX 2, RBX 3, ...
    const RCX: usize = 1;
    let mut gprs = [0u64; 16];
    gprs[RCX] = 0xdead_beef_0000_002a;
    // mov dword ptr [rdx], ecx
    let insn = mmio_insn::decode(&[0x89, 0x0A]).unwrap();
    assert_eq!(insn.len, 2);
    assert_eq!(
        insn.access,
        Access::Store(Source::Register {
            reg: 1,
            high_byte: false
        })
    );
    assert_eq!(mmio_insn::store_value(&insn, &gprs), Some(0x2a));
    // mov dword ptr [rax + 8], 1
    let insn = mmio_insn::decode(&[0xC7, 0x40, 0x08, 1, 0, 0, 0]).unwrap();
    assert_eq!((insn.len, insn.size), (7, 4));
    assert_eq!(mmio_insn::store_value(&insn, &gprs), Some(1));
    // mov qword ptr [rax], -1 (imm32 sign-extended)
    let insn = mmio_insn::decode(&[0x48, 0xC7, 0x00, 0xff, 0xff, 0xff, 0xff]).unwrap();
    assert_eq!(mmio_insn::store_value(&insn, &gprs), Some(u64::MAX));
    // mov byte ptr [rbx], ch
    let insn = mmio_insn::decode(&[0x88, 0x2B]).unwrap();
    gprs[RCX] = 0x7700;
    assert_eq!(mmio_insn::store_value(&insn, &gprs), Some(0x77));
}

#[test]
fn mmio_decoder_rejects_what_it_cannot_emulate() {
    assert_eq!(mmio_insn::decode(&[0x8B]), Err(DecodeError::Truncated));
    assert_eq!(
        mmio_insn::decode(&[0x8B, 0xC1]),
        Err(DecodeError::RegisterOperand)
    );
    assert_eq!(
        mmio_insn::decode(&[0x01, 0x02]),
        Err(DecodeError::Unsupported(0x01))
    );
    assert_eq!(
        mmio_insn::decode(&[0x8B, 0x80, 1, 2]),
        Err(DecodeError::Truncated)
    );
}

//! VMX architectural constants and pure helpers (Intel SDM Vol. 3C,
//! chapter 25 "Virtual Machine Control Structures" and appendices A/B).
//!
//! Nothing here touches the CPU: the file compiles for the bare-metal
//! target and on the build host, where `tests/x86_logic.rs` checks the
//! encodings and the control-adjustment logic.

/// VMCS field encodings (SDM Vol. 3D, appendix B).
///
/// An encoding is `width[14:13] | type[11:10] | index[9:1] | access[0]`;
/// see [`FieldWidth`] and [`FieldKind`].
pub mod field {
    // --- 16-bit control fields -------------------------------------------
    /// Virtual-processor identifier (tags TLB entries of the guest).
    pub const VIRTUAL_PROCESSOR_ID: u32 = 0x0000;

    // --- 16-bit guest-state fields ---------------------------------------
    pub const GUEST_ES_SELECTOR: u32 = 0x0800;
    pub const GUEST_CS_SELECTOR: u32 = 0x0802;
    pub const GUEST_SS_SELECTOR: u32 = 0x0804;
    pub const GUEST_DS_SELECTOR: u32 = 0x0806;
    pub const GUEST_FS_SELECTOR: u32 = 0x0808;
    pub const GUEST_GS_SELECTOR: u32 = 0x080A;
    pub const GUEST_LDTR_SELECTOR: u32 = 0x080C;
    pub const GUEST_TR_SELECTOR: u32 = 0x080E;

    // --- 16-bit host-state fields ----------------------------------------
    pub const HOST_ES_SELECTOR: u32 = 0x0C00;
    pub const HOST_CS_SELECTOR: u32 = 0x0C02;
    pub const HOST_SS_SELECTOR: u32 = 0x0C04;
    pub const HOST_DS_SELECTOR: u32 = 0x0C06;
    pub const HOST_FS_SELECTOR: u32 = 0x0C08;
    pub const HOST_GS_SELECTOR: u32 = 0x0C0A;
    pub const HOST_TR_SELECTOR: u32 = 0x0C0C;

    // --- 64-bit control fields -------------------------------------------
    pub const IO_BITMAP_A: u32 = 0x2000;
    pub const IO_BITMAP_B: u32 = 0x2002;
    pub const MSR_BITMAP: u32 = 0x2004;
    pub const VM_EXIT_MSR_STORE_ADDR: u32 = 0x2006;
    pub const VM_EXIT_MSR_LOAD_ADDR: u32 = 0x2008;
    pub const VM_ENTRY_MSR_LOAD_ADDR: u32 = 0x200A;
    pub const TSC_OFFSET: u32 = 0x2010;
    pub const VIRTUAL_APIC_PAGE_ADDR: u32 = 0x2012;
    pub const APIC_ACCESS_ADDR: u32 = 0x2014;
    /// Extended-page-table pointer.
    pub const EPT_POINTER: u32 = 0x201A;

    // --- 64-bit read-only data fields ------------------------------------
    /// Guest-physical address of an EPT violation or misconfiguration.
    pub const GUEST_PHYSICAL_ADDRESS: u32 = 0x2400;

    // --- 64-bit guest-state fields ---------------------------------------
    /// Must be all ones unless VMCS shadowing is used.
    pub const VMCS_LINK_POINTER: u32 = 0x2800;
    pub const GUEST_IA32_DEBUGCTL: u32 = 0x2802;
    pub const GUEST_IA32_PAT: u32 = 0x2804;
    pub const GUEST_IA32_EFER: u32 = 0x2806;

    // --- 64-bit host-state fields ----------------------------------------
    pub const HOST_IA32_PAT: u32 = 0x2C00;
    pub const HOST_IA32_EFER: u32 = 0x2C02;

    // --- 32-bit control fields -------------------------------------------
    pub const PIN_BASED_VM_EXEC_CONTROL: u32 = 0x4000;
    pub const CPU_BASED_VM_EXEC_CONTROL: u32 = 0x4002;
    pub const EXCEPTION_BITMAP: u32 = 0x4004;
    pub const PAGE_FAULT_ERROR_CODE_MASK: u32 = 0x4006;
    pub const PAGE_FAULT_ERROR_CODE_MATCH: u32 = 0x4008;
    pub const CR3_TARGET_COUNT: u32 = 0x400A;
    pub const VM_EXIT_CONTROLS: u32 = 0x400C;
    pub const VM_EXIT_MSR_STORE_COUNT: u32 = 0x400E;
    pub const VM_EXIT_MSR_LOAD_COUNT: u32 = 0x4010;
    pub const VM_ENTRY_CONTROLS: u32 = 0x4012;
    pub const VM_ENTRY_MSR_LOAD_COUNT: u32 = 0x4014;
    /// Event injected on the next VM entry (see `exit_reason::InterruptionInfo`).
    pub const VM_ENTRY_INTR_INFO_FIELD: u32 = 0x4016;
    pub const VM_ENTRY_EXCEPTION_ERROR_CODE: u32 = 0x4018;
    pub const VM_ENTRY_INSTRUCTION_LEN: u32 = 0x401A;
    pub const TPR_THRESHOLD: u32 = 0x401C;
    pub const SECONDARY_VM_EXEC_CONTROL: u32 = 0x401E;

    // --- 32-bit read-only data fields ------------------------------------
    pub const VM_INSTRUCTION_ERROR: u32 = 0x4400;
    pub const VM_EXIT_REASON: u32 = 0x4402;
    pub const VM_EXIT_INTR_INFO: u32 = 0x4404;
    pub const VM_EXIT_INTR_ERROR_CODE: u32 = 0x4406;
    pub const IDT_VECTORING_INFO_FIELD: u32 = 0x4408;
    pub const IDT_VECTORING_ERROR_CODE: u32 = 0x440A;
    pub const VM_EXIT_INSTRUCTION_LEN: u32 = 0x440C;
    pub const VMX_INSTRUCTION_INFO: u32 = 0x440E;

    // --- 32-bit guest-state fields ---------------------------------------
    pub const GUEST_ES_LIMIT: u32 = 0x4800;
    pub const GUEST_CS_LIMIT: u32 = 0x4802;
    pub const GUEST_SS_LIMIT: u32 = 0x4804;
    pub const GUEST_DS_LIMIT: u32 = 0x4806;
    pub const GUEST_FS_LIMIT: u32 = 0x4808;
    pub const GUEST_GS_LIMIT: u32 = 0x480A;
    pub const GUEST_LDTR_LIMIT: u32 = 0x480C;
    pub const GUEST_TR_LIMIT: u32 = 0x480E;
    pub const GUEST_GDTR_LIMIT: u32 = 0x4810;
    pub const GUEST_IDTR_LIMIT: u32 = 0x4812;
    pub const GUEST_ES_AR_BYTES: u32 = 0x4814;
    pub const GUEST_CS_AR_BYTES: u32 = 0x4816;
    pub const GUEST_SS_AR_BYTES: u32 = 0x4818;
    pub const GUEST_DS_AR_BYTES: u32 = 0x481A;
    pub const GUEST_FS_AR_BYTES: u32 = 0x481C;
    pub const GUEST_GS_AR_BYTES: u32 = 0x481E;
    pub const GUEST_LDTR_AR_BYTES: u32 = 0x4820;
    pub const GUEST_TR_AR_BYTES: u32 = 0x4822;
    pub const GUEST_INTERRUPTIBILITY_INFO: u32 = 0x4824;
    pub const GUEST_ACTIVITY_STATE: u32 = 0x4826;
    pub const GUEST_SYSENTER_CS: u32 = 0x482A;
    pub const VMX_PREEMPTION_TIMER_VALUE: u32 = 0x482E;

    // --- 32-bit host-state field -----------------------------------------
    pub const HOST_IA32_SYSENTER_CS: u32 = 0x4C00;

    // --- natural-width control fields ------------------------------------
    pub const CR0_GUEST_HOST_MASK: u32 = 0x6000;
    pub const CR4_GUEST_HOST_MASK: u32 = 0x6002;
    pub const CR0_READ_SHADOW: u32 = 0x6004;
    pub const CR4_READ_SHADOW: u32 = 0x6006;

    // --- natural-width read-only data fields -----------------------------
    pub const EXIT_QUALIFICATION: u32 = 0x6400;
    pub const GUEST_LINEAR_ADDRESS: u32 = 0x640A;

    // --- natural-width guest-state fields --------------------------------
    pub const GUEST_CR0: u32 = 0x6800;
    pub const GUEST_CR3: u32 = 0x6802;
    pub const GUEST_CR4: u32 = 0x6804;
    pub const GUEST_ES_BASE: u32 = 0x6806;
    pub const GUEST_CS_BASE: u32 = 0x6808;
    pub const GUEST_SS_BASE: u32 = 0x680A;
    pub const GUEST_DS_BASE: u32 = 0x680C;
    pub const GUEST_FS_BASE: u32 = 0x680E;
    pub const GUEST_GS_BASE: u32 = 0x6810;
    pub const GUEST_LDTR_BASE: u32 = 0x6812;
    pub const GUEST_TR_BASE: u32 = 0x6814;
    pub const GUEST_GDTR_BASE: u32 = 0x6816;
    pub const GUEST_IDTR_BASE: u32 = 0x6818;
    pub const GUEST_DR7: u32 = 0x681A;
    pub const GUEST_RSP: u32 = 0x681C;
    pub const GUEST_RIP: u32 = 0x681E;
    pub const GUEST_RFLAGS: u32 = 0x6820;
    pub const GUEST_PENDING_DBG_EXCEPTIONS: u32 = 0x6822;
    pub const GUEST_SYSENTER_ESP: u32 = 0x6824;
    pub const GUEST_SYSENTER_EIP: u32 = 0x6826;

    // --- natural-width host-state fields ---------------------------------
    pub const HOST_CR0: u32 = 0x6C00;
    pub const HOST_CR3: u32 = 0x6C02;
    pub const HOST_CR4: u32 = 0x6C04;
    pub const HOST_FS_BASE: u32 = 0x6C06;
    pub const HOST_GS_BASE: u32 = 0x6C08;
    pub const HOST_TR_BASE: u32 = 0x6C0A;
    pub const HOST_GDTR_BASE: u32 = 0x6C0C;
    pub const HOST_IDTR_BASE: u32 = 0x6C0E;
    pub const HOST_IA32_SYSENTER_ESP: u32 = 0x6C10;
    pub const HOST_IA32_SYSENTER_EIP: u32 = 0x6C12;
    pub const HOST_RSP: u32 = 0x6C14;
    pub const HOST_RIP: u32 = 0x6C16;
}

/// Width of a VMCS field, encoding bits 14:13.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldWidth {
    Bits16,
    Bits64,
    Bits32,
    Natural,
}

/// Kind of a VMCS field, encoding bits 11:10.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    Control,
    ReadOnlyData,
    GuestState,
    HostState,
}

/// Width of the field with encoding `encoding`.
pub const fn field_width(encoding: u32) -> FieldWidth {
    match (encoding >> 13) & 0b11 {
        0 => FieldWidth::Bits16,
        1 => FieldWidth::Bits64,
        2 => FieldWidth::Bits32,
        _ => FieldWidth::Natural,
    }
}

/// Kind of the field with encoding `encoding`.
pub const fn field_kind(encoding: u32) -> FieldKind {
    match (encoding >> 10) & 0b11 {
        0 => FieldKind::Control,
        1 => FieldKind::ReadOnlyData,
        2 => FieldKind::GuestState,
        _ => FieldKind::HostState,
    }
}

/// Whether software may VMWRITE the field (read-only data fields are not
/// writable unless IA32_VMX_MISC bit 29 says so; eterna never relies on it).
pub const fn field_is_writable(encoding: u32) -> bool {
    !matches!(field_kind(encoding), FieldKind::ReadOnlyData)
}

/// Pin-based VM-execution controls (SDM Vol. 3C, 25.6.1).
pub mod pin {
    /// External interrupts cause VM exits (reason 1).
    pub const EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    /// NMIs cause VM exits.
    pub const NMI_EXITING: u32 = 1 << 3;
    pub const VIRTUAL_NMIS: u32 = 1 << 5;
    /// The VMX-preemption timer counts down in non-root operation.
    pub const VMX_PREEMPTION_TIMER: u32 = 1 << 6;
    pub const POSTED_INTERRUPTS: u32 = 1 << 7;
}

/// Primary processor-based VM-execution controls (SDM Vol. 3C, 25.6.2).
pub mod proc1 {
    /// VM exit as soon as the guest can take an external interrupt.
    pub const INTERRUPT_WINDOW_EXITING: u32 = 1 << 2;
    pub const USE_TSC_OFFSETTING: u32 = 1 << 3;
    pub const HLT_EXITING: u32 = 1 << 7;
    pub const INVLPG_EXITING: u32 = 1 << 9;
    pub const MWAIT_EXITING: u32 = 1 << 10;
    pub const RDPMC_EXITING: u32 = 1 << 11;
    pub const RDTSC_EXITING: u32 = 1 << 12;
    pub const CR3_LOAD_EXITING: u32 = 1 << 15;
    pub const CR3_STORE_EXITING: u32 = 1 << 16;
    pub const CR8_LOAD_EXITING: u32 = 1 << 19;
    pub const CR8_STORE_EXITING: u32 = 1 << 20;
    pub const USE_TPR_SHADOW: u32 = 1 << 21;
    pub const NMI_WINDOW_EXITING: u32 = 1 << 22;
    pub const MOV_DR_EXITING: u32 = 1 << 23;
    /// Every IN/OUT/INS/OUTS exits (no I/O bitmaps).
    pub const UNCONDITIONAL_IO_EXITING: u32 = 1 << 24;
    pub const USE_IO_BITMAPS: u32 = 1 << 25;
    pub const MONITOR_TRAP_FLAG: u32 = 1 << 27;
    /// Without MSR bitmaps every RDMSR/WRMSR exits.
    pub const USE_MSR_BITMAPS: u32 = 1 << 28;
    pub const MONITOR_EXITING: u32 = 1 << 29;
    pub const PAUSE_EXITING: u32 = 1 << 30;
    pub const ACTIVATE_SECONDARY_CONTROLS: u32 = 1 << 31;
}

/// Secondary processor-based VM-execution controls (SDM Vol. 3C, 25.6.2).
pub mod proc2 {
    pub const VIRTUALIZE_APIC_ACCESSES: u32 = 1 << 0;
    pub const ENABLE_EPT: u32 = 1 << 1;
    pub const DESCRIPTOR_TABLE_EXITING: u32 = 1 << 2;
    pub const ENABLE_RDTSCP: u32 = 1 << 3;
    pub const VIRTUALIZE_X2APIC_MODE: u32 = 1 << 4;
    pub const ENABLE_VPID: u32 = 1 << 5;
    pub const WBINVD_EXITING: u32 = 1 << 6;
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
    pub const APIC_REGISTER_VIRTUALIZATION: u32 = 1 << 8;
    pub const VIRTUAL_INTERRUPT_DELIVERY: u32 = 1 << 9;
    pub const PAUSE_LOOP_EXITING: u32 = 1 << 10;
    pub const RDRAND_EXITING: u32 = 1 << 11;
    pub const ENABLE_INVPCID: u32 = 1 << 12;
    pub const ENABLE_XSAVES: u32 = 1 << 20;
}

/// VM-exit controls (SDM Vol. 3C, 25.7.1).
pub mod exit_ctl {
    pub const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    /// The host runs in 64-bit mode after the exit.
    pub const HOST_ADDRESS_SPACE_SIZE: u32 = 1 << 9;
    pub const LOAD_IA32_PERF_GLOBAL_CTRL: u32 = 1 << 12;
    /// The interrupt that caused an external-interrupt exit is acknowledged
    /// and its vector stored in the exit interruption information.
    pub const ACK_INTERRUPT_ON_EXIT: u32 = 1 << 15;
    pub const SAVE_IA32_PAT: u32 = 1 << 18;
    pub const LOAD_IA32_PAT: u32 = 1 << 19;
    pub const SAVE_IA32_EFER: u32 = 1 << 20;
    pub const LOAD_IA32_EFER: u32 = 1 << 21;
    pub const SAVE_VMX_PREEMPTION_TIMER: u32 = 1 << 22;
}

/// VM-entry controls (SDM Vol. 3C, 25.8.1).
pub mod entry_ctl {
    pub const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    /// The guest runs in IA-32e mode (long mode) after the entry.
    pub const IA32E_MODE_GUEST: u32 = 1 << 9;
    pub const ENTRY_TO_SMM: u32 = 1 << 10;
    pub const LOAD_IA32_PERF_GLOBAL_CTRL: u32 = 1 << 13;
    pub const LOAD_IA32_PAT: u32 = 1 << 14;
    pub const LOAD_IA32_EFER: u32 = 1 << 15;
}

/// Model-specific registers that describe or enable VMX (SDM Vol. 4).
pub mod msr_index {
    pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
    pub const IA32_VMX_BASIC: u32 = 0x480;
    pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
    pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
    pub const IA32_VMX_EXIT_CTLS: u32 = 0x483;
    pub const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
    pub const IA32_VMX_MISC: u32 = 0x485;
    pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
    pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
    pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
    pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;
    pub const IA32_VMX_VMCS_ENUM: u32 = 0x48A;
    pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48B;
    pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48C;
    pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48D;
    pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48E;
    pub const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48F;
    pub const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
}

/// IA32_FEATURE_CONTROL: the MSR is locked (writes fault until reset).
pub const FEATURE_CONTROL_LOCKED: u64 = 1 << 0;
/// IA32_FEATURE_CONTROL: VMXON allowed outside SMX operation.
pub const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;

/// Decoded IA32_VMX_BASIC (SDM Vol. 3D, A.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxBasic {
    /// VMCS revision identifier (bits 30:0), written to the first dword of
    /// the VMXON region and of every VMCS.
    pub revision_id: u32,
    /// Bytes to allocate for the VMXON region and a VMCS (bits 44:32).
    pub region_size: u32,
    /// Bit 48: physical addresses of VMX structures are limited to 32 bits.
    pub addresses_32bit: bool,
    /// Memory type for VMCS accesses (bits 53:50; 6 = write-back).
    pub memory_type: u8,
    /// Bit 54: INS/OUTS exits report instruction information.
    pub ins_outs_info: bool,
    /// Bit 55: the IA32_VMX_TRUE_*_CTLS MSRs exist and must be used.
    pub true_controls: bool,
}

impl VmxBasic {
    /// Decodes the MSR value.
    pub const fn decode(value: u64) -> Self {
        VmxBasic {
            revision_id: (value & 0x7fff_ffff) as u32,
            region_size: ((value >> 32) & 0x1fff) as u32,
            addresses_32bit: value & (1 << 48) != 0,
            memory_type: ((value >> 50) & 0xf) as u8,
            ins_outs_info: value & (1 << 54) != 0,
            true_controls: value & (1 << 55) != 0,
        }
    }
}

/// Result of fitting desired control bits to what the CPU allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdjustedControls {
    /// Value to VMWRITE: desired bits plus the ones the CPU forces to 1.
    pub value: u32,
    /// Desired bits the CPU does not allow to be 1 (dropped from `value`).
    pub unsupported: u32,
}

/// Adjusts `desired` with a VMX capability MSR (SDM Vol. 3D, A.3-A.5):
/// bits 31:0 are the allowed 0-settings (a 1 there means the control must
/// be 1), bits 63:32 the allowed 1-settings (a 0 there means the control
/// must be 0).
pub const fn adjust_controls(desired: u32, capability: u64) -> AdjustedControls {
    let must_be_one = capability as u32;
    let may_be_one = (capability >> 32) as u32;
    AdjustedControls {
        value: (desired | must_be_one) & may_be_one,
        unsupported: desired & !may_be_one,
    }
}

/// Whether a control can be set to 1 according to `capability`.
pub const fn control_allowed(control: u32, capability: u64) -> bool {
    ((capability >> 32) as u32) & control == control
}

/// Applies IA32_VMX_CR0/CR4_FIXED0/1 to a control-register value: bits set
/// in FIXED0 must be 1, bits clear in FIXED1 must be 0 (SDM Vol. 3D, A.7/A.8).
pub const fn apply_fixed_bits(value: u64, fixed0: u64, fixed1: u64) -> u64 {
    (value | fixed0) & fixed1
}

/// CR0 bits of interest to VMX.
pub mod cr0 {
    pub const PE: u64 = 1 << 0;
    pub const MP: u64 = 1 << 1;
    pub const EM: u64 = 1 << 2;
    pub const TS: u64 = 1 << 3;
    pub const ET: u64 = 1 << 4;
    pub const NE: u64 = 1 << 5;
    pub const WP: u64 = 1 << 16;
    pub const NW: u64 = 1 << 29;
    pub const CD: u64 = 1 << 30;
    pub const PG: u64 = 1 << 31;
}

/// CR4 bits of interest to VMX.
pub mod cr4 {
    pub const PAE: u64 = 1 << 5;
    pub const PGE: u64 = 1 << 7;
    pub const OSFXSR: u64 = 1 << 9;
    pub const OSXMMEXCPT: u64 = 1 << 10;
    pub const VMXE: u64 = 1 << 13;
    pub const OSXSAVE: u64 = 1 << 18;
}

/// IA32_EFER bits.
pub mod efer {
    pub const SCE: u64 = 1 << 0;
    pub const LME: u64 = 1 << 8;
    pub const LMA: u64 = 1 << 10;
    pub const NXE: u64 = 1 << 11;
}

/// Segment access-rights values in the VMCS format (SDM Vol. 3C, 25.4.1):
/// type[3:0], S[4], DPL[6:5], P[7], AVL[12], L[13], D/B[14], G[15],
/// unusable[16].
pub mod access_rights {
    /// 64-bit code, execute/read, accessed, present, L = 1, G = 1.
    pub const CODE64: u32 = 0xA09B;
    /// Data, read/write, accessed, present, D/B = 1, G = 1.
    pub const DATA: u32 = 0xC093;
    /// 64-bit busy TSS, present.
    pub const TSS64_BUSY: u32 = 0x008B;
    /// The segment register is unusable (e.g. a null LDTR).
    pub const UNUSABLE: u32 = 1 << 16;
}

/// VM-instruction error numbers (SDM Vol. 3C, 31.4) that eterna reports by
/// name.
pub const fn vm_instruction_error_name(error: u32) -> &'static str {
    match error {
        1 => "VMCALL executed in VMX root operation",
        2 => "VMCLEAR with invalid physical address",
        3 => "VMCLEAR with VMXON pointer",
        4 => "VMLAUNCH with non-clear VMCS",
        5 => "VMRESUME with non-launched VMCS",
        7 => "VM entry with invalid control field(s)",
        8 => "VM entry with invalid host-state field(s)",
        9 => "VMPTRLD with invalid physical address",
        10 => "VMPTRLD with VMXON pointer",
        11 => "VMPTRLD with incorrect VMCS revision identifier",
        12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
        13 => "VMWRITE to read-only VMCS component",
        15 => "VMXON executed in VMX root operation",
        26 => "VM entry with events blocked by MOV SS",
        28 => "invalid operand to INVEPT/INVVPID",
        _ => "unknown VM-instruction error",
    }
}

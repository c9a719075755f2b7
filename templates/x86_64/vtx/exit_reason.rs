//! VM-exit information decoding (SDM Vol. 3C chapter 28 and appendix C):
//! the exit-reason field, exit qualifications of the exits eterna handles,
//! and the interruption-information format shared by VM-exit, IDT-vectoring
//! and VM-entry event injection.
//!
//! Pure logic: compiles for the bare-metal target and on the build host.

/// Basic exit reasons (bits 15:0 of the exit-reason field, SDM appendix C).
pub mod basic {
    pub const EXCEPTION_OR_NMI: u16 = 0;
    pub const EXTERNAL_INTERRUPT: u16 = 1;
    pub const TRIPLE_FAULT: u16 = 2;
    pub const INIT_SIGNAL: u16 = 3;
    pub const STARTUP_IPI: u16 = 4;
    pub const INTERRUPT_WINDOW: u16 = 7;
    pub const NMI_WINDOW: u16 = 8;
    pub const TASK_SWITCH: u16 = 9;
    pub const CPUID: u16 = 10;
    pub const GETSEC: u16 = 11;
    pub const HLT: u16 = 12;
    pub const INVD: u16 = 13;
    pub const INVLPG: u16 = 14;
    pub const RDPMC: u16 = 15;
    pub const RDTSC: u16 = 16;
    pub const RSM: u16 = 17;
    pub const VMCALL: u16 = 18;
    pub const VMCLEAR: u16 = 19;
    pub const VMLAUNCH: u16 = 20;
    pub const VMPTRLD: u16 = 21;
    pub const VMPTRST: u16 = 22;
    pub const VMREAD: u16 = 23;
    pub const VMRESUME: u16 = 24;
    pub const VMWRITE: u16 = 25;
    pub const VMXOFF: u16 = 26;
    pub const VMXON: u16 = 27;
    pub const CR_ACCESS: u16 = 28;
    pub const DR_ACCESS: u16 = 29;
    pub const IO_INSTRUCTION: u16 = 30;
    pub const RDMSR: u16 = 31;
    pub const WRMSR: u16 = 32;
    pub const ENTRY_FAILURE_GUEST_STATE: u16 = 33;
    pub const ENTRY_FAILURE_MSR_LOADING: u16 = 34;
    pub const MWAIT: u16 = 36;
    pub const MONITOR_TRAP_FLAG: u16 = 37;
    pub const MONITOR: u16 = 39;
    pub const PAUSE: u16 = 40;
    pub const ENTRY_FAILURE_MACHINE_CHECK: u16 = 41;
    pub const TPR_BELOW_THRESHOLD: u16 = 43;
    pub const APIC_ACCESS: u16 = 44;
    pub const GDTR_IDTR_ACCESS: u16 = 46;
    pub const LDTR_TR_ACCESS: u16 = 47;
    pub const EPT_VIOLATION: u16 = 48;
    pub const EPT_MISCONFIG: u16 = 49;
    pub const INVEPT: u16 = 50;
    pub const RDTSCP: u16 = 51;
    pub const PREEMPTION_TIMER: u16 = 52;
    pub const INVVPID: u16 = 53;
    pub const WBINVD: u16 = 54;
    pub const XSETBV: u16 = 55;
}

/// The exit reasons eterna distinguishes; the x86 counterpart of the
/// AArch64 `ExceptionClass`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// Exception or NMI in the guest (exception bitmap / NMI exiting).
    ExceptionOrNmi,
    /// A physical interrupt arrived while the guest ran.
    ExternalInterrupt,
    /// The guest triple-faulted (shutdown).
    TripleFault,
    /// The guest can take an interrupt now (interrupt-window exiting).
    InterruptWindow,
    /// CPUID (always exits).
    Cpuid,
    /// HLT (HLT exiting).
    Hlt,
    /// VMCALL: an eterna hypercall.
    Vmcall,
    /// Any other VMX instruction executed by the guest.
    VmxInstruction(u16),
    /// MOV to/from a control register that the masks trap.
    CrAccess,
    /// IN/OUT/INS/OUTS.
    IoInstruction,
    /// RDMSR.
    Rdmsr,
    /// WRMSR.
    Wrmsr,
    /// VM entry failed: invalid guest state.
    InvalidGuestState,
    /// VM entry failed: MSR loading.
    MsrLoading,
    /// VM entry failed: machine check.
    MachineCheck,
    /// EPT violation: an access the EPT does not allow (MMIO emulation).
    EptViolation,
    /// EPT misconfiguration: a malformed EPT entry (hypervisor bug).
    EptMisconfig,
    /// The VMX-preemption timer expired.
    PreemptionTimer,
    /// XSETBV (always exits).
    Xsetbv,
    /// Anything else, with its basic reason.
    Other(u16),
}

impl ExitReason {
    /// Decodes a basic exit reason.
    pub const fn from_basic(reason: u16) -> Self {
        match reason {
            basic::EXCEPTION_OR_NMI => ExitReason::ExceptionOrNmi,
            basic::EXTERNAL_INTERRUPT => ExitReason::ExternalInterrupt,
            basic::TRIPLE_FAULT => ExitReason::TripleFault,
            basic::INTERRUPT_WINDOW => ExitReason::InterruptWindow,
            basic::CPUID => ExitReason::Cpuid,
            basic::HLT => ExitReason::Hlt,
            basic::VMCALL => ExitReason::Vmcall,
            basic::VMCLEAR..=basic::VMXON | basic::INVEPT | basic::INVVPID => {
                ExitReason::VmxInstruction(reason)
            }
            basic::CR_ACCESS => ExitReason::CrAccess,
            basic::IO_INSTRUCTION => ExitReason::IoInstruction,
            basic::RDMSR => ExitReason::Rdmsr,
            basic::WRMSR => ExitReason::Wrmsr,
            basic::ENTRY_FAILURE_GUEST_STATE => ExitReason::InvalidGuestState,
            basic::ENTRY_FAILURE_MSR_LOADING => ExitReason::MsrLoading,
            basic::ENTRY_FAILURE_MACHINE_CHECK => ExitReason::MachineCheck,
            basic::EPT_VIOLATION => ExitReason::EptViolation,
            basic::EPT_MISCONFIG => ExitReason::EptMisconfig,
            basic::PREEMPTION_TIMER => ExitReason::PreemptionTimer,
            basic::XSETBV => ExitReason::Xsetbv,
            other => ExitReason::Other(other),
        }
    }
}

/// The 32-bit exit-reason field (SDM Vol. 3C 25.9.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitReasonField(pub u32);

impl ExitReasonField {
    /// Basic exit reason, bits 15:0.
    pub const fn basic(self) -> u16 {
        self.0 as u16
    }

    /// Decoded basic reason.
    pub const fn reason(self) -> ExitReason {
        ExitReason::from_basic(self.basic())
    }

    /// Bit 31: the exit is a VM-entry failure (reasons 33, 34, 41).
    pub const fn entry_failure(self) -> bool {
        self.0 & (1 << 31) != 0
    }

    /// Bit 28: a monitor-trap-flag exit is pending.
    pub const fn pending_mtf(self) -> bool {
        self.0 & (1 << 28) != 0
    }

    /// Bit 29: the exit came from VMX root operation (SMM dual monitor).
    pub const fn in_root_operation(self) -> bool {
        self.0 & (1 << 29) != 0
    }
}

/// Exit qualification of an EPT violation (SDM Vol. 3C table 28-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptViolation {
    /// Bit 0: the access was a data read.
    pub read: bool,
    /// Bit 1: the access was a data write.
    pub write: bool,
    /// Bit 2: the access was an instruction fetch.
    pub fetch: bool,
    /// Bits 5:3: the permissions (R, W, X) the EPT entry granted; all
    /// clear means the address is not mapped at all.
    pub granted: u8,
    /// Bit 7: the guest-linear-address field is valid.
    pub linear_valid: bool,
    /// Bit 8 (with bit 7): the access was to the translated address, not
    /// to a guest paging structure during the guest's own page walk.
    pub translated_access: bool,
    /// Bit 12: NMI unblocking due to IRET.
    pub nmi_unblocking: bool,
}

impl EptViolation {
    /// Decodes the exit qualification.
    pub const fn decode(qualification: u64) -> Self {
        EptViolation {
            read: qualification & (1 << 0) != 0,
            write: qualification & (1 << 1) != 0,
            fetch: qualification & (1 << 2) != 0,
            granted: ((qualification >> 3) & 0b111) as u8,
            linear_valid: qualification & (1 << 7) != 0,
            translated_access: qualification & (1 << 8) != 0,
            nmi_unblocking: qualification & (1 << 12) != 0,
        }
    }

    /// The counterpart of an AArch64 stage-2 translation fault: nothing is
    /// mapped at the address (how emulated devices are implemented).
    pub const fn is_not_present(&self) -> bool {
        self.granted == 0
    }

    /// The counterpart of a stage-2 permission fault: mapped, but not with
    /// the permission the access needed.
    pub const fn is_permission(&self) -> bool {
        self.granted != 0
    }

    /// Whether the access hit a guest paging structure rather than the
    /// final translated address (cannot be emulated as MMIO).
    pub const fn during_guest_walk(&self) -> bool {
        self.linear_valid && !self.translated_access
    }
}

/// Exit qualification of a control-register access (SDM Vol. 3C table 28-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrAccess {
    /// Bits 3:0: the control register.
    pub cr: u8,
    /// Bits 5:4: 0 MOV to CR, 1 MOV from CR, 2 CLTS, 3 LMSW.
    pub access_type: u8,
    /// Bits 11:8: the general-purpose register (x86 encoding).
    pub gpr: u8,
    /// Bits 31:16: LMSW source data.
    pub lmsw_source: u16,
}

impl CrAccess {
    /// Decodes the exit qualification.
    pub const fn decode(qualification: u64) -> Self {
        CrAccess {
            cr: (qualification & 0xf) as u8,
            access_type: ((qualification >> 4) & 0b11) as u8,
            gpr: ((qualification >> 8) & 0xf) as u8,
            lmsw_source: (qualification >> 16) as u16,
        }
    }
}

/// Exit qualification of an I/O instruction (SDM Vol. 3C table 28-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoAccess {
    /// Access size in bytes (bits 2:0 plus one).
    pub size: u8,
    /// Bit 3: IN (true) or OUT (false).
    pub input: bool,
    /// Bit 4: string instruction.
    pub string: bool,
    /// Bit 5: REP prefix.
    pub rep: bool,
    /// Bits 31:16: the port.
    pub port: u16,
}

impl IoAccess {
    /// Decodes the exit qualification.
    pub const fn decode(qualification: u64) -> Self {
        IoAccess {
            size: ((qualification & 0b111) + 1) as u8,
            input: qualification & (1 << 3) != 0,
            string: qualification & (1 << 4) != 0,
            rep: qualification & (1 << 5) != 0,
            port: (qualification >> 16) as u16,
        }
    }
}

/// Event types of the interruption-information format (bits 10:8).
pub mod event_type {
    pub const EXTERNAL_INTERRUPT: u8 = 0;
    pub const NMI: u8 = 2;
    pub const HARDWARE_EXCEPTION: u8 = 3;
    pub const SOFTWARE_INTERRUPT: u8 = 4;
    pub const PRIVILEGED_SOFTWARE_EXCEPTION: u8 = 5;
    pub const SOFTWARE_EXCEPTION: u8 = 6;
    pub const OTHER_EVENT: u8 = 7;
}

/// Interruption information: VM-exit interruption info, IDT-vectoring info
/// and the VM-entry interruption-information field (SDM Vol. 3C 25.8.3,
/// 25.9.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptionInfo {
    /// Bits 7:0.
    pub vector: u8,
    /// Bits 10:8, see [`event_type`].
    pub kind: u8,
    /// Bit 11: an error code is pushed/delivered.
    pub error_code: bool,
    /// Bit 31: the field is valid.
    pub valid: bool,
}

impl InterruptionInfo {
    /// Bit 31 of the raw field.
    pub const VALID: u32 = 1 << 31;

    /// An external interrupt with `vector`, ready to inject.
    pub const fn external_interrupt(vector: u8) -> Self {
        InterruptionInfo {
            vector,
            kind: event_type::EXTERNAL_INTERRUPT,
            error_code: false,
            valid: true,
        }
    }

    /// A hardware exception with `vector` (with an error code for #DF, #TS,
    /// #NP, #SS, #GP, #PF, #AC).
    pub const fn hardware_exception(vector: u8) -> Self {
        let error_code = matches!(vector, 8 | 10..=14 | 17);
        InterruptionInfo {
            vector,
            kind: event_type::HARDWARE_EXCEPTION,
            error_code,
            valid: true,
        }
    }

    /// Decodes the raw field.
    pub const fn decode(raw: u32) -> Self {
        InterruptionInfo {
            vector: raw as u8,
            kind: ((raw >> 8) & 0b111) as u8,
            error_code: raw & (1 << 11) != 0,
            valid: raw & Self::VALID != 0,
        }
    }

    /// Encodes the raw field.
    pub const fn encode(self) -> u32 {
        let mut raw = self.vector as u32 | ((self.kind as u32 & 0b111) << 8);
        if self.error_code {
            raw |= 1 << 11;
        }
        if self.valid {
            raw |= Self::VALID;
        }
        raw
    }
}

/// Guest interruptibility-state bits (SDM Vol. 3C table 25-3).
pub mod interruptibility {
    pub const BLOCKING_BY_STI: u32 = 1 << 0;
    pub const BLOCKING_BY_MOV_SS: u32 = 1 << 1;
    pub const BLOCKING_BY_SMI: u32 = 1 << 2;
    pub const BLOCKING_BY_NMI: u32 = 1 << 3;
}

/// RFLAGS.IF.
pub const RFLAGS_IF: u64 = 1 << 9;

/// Whether a guest with `rflags` and `interruptibility` can take an
/// external interrupt injected on the next VM entry (SDM Vol. 3C 27.3.1.4:
/// IF must be set and there must be no STI or MOV-SS blocking).
pub const fn can_inject_external(rflags: u64, interruptibility: u32) -> bool {
    rflags & RFLAGS_IF != 0
        && interruptibility
            & (interruptibility::BLOCKING_BY_STI | interruptibility::BLOCKING_BY_MOV_SS)
            == 0
}

/// First vector an external interrupt may use; lower ones are exceptions.
pub const FIRST_INTERRUPT_VECTOR: u8 = 32;

//! VM control: VMX operation and the virtual-machine control structure.
//!
//! The VT-x counterpart of the AArch64 `vm` module. Where AArch64 writes a
//! few EL2 registers (HCR_EL2, VTCR_EL2, VTTBR_EL2, VMPIDR_EL2), x86 puts
//! everything that defines how a guest runs in a VMCS, one per vCPU:
//!
//! * **VMX operation.** [`probe`] checks CPUID.1:ECX.VMX and
//!   IA32_FEATURE_CONTROL (locked with "VMX outside SMX", or unlocked and
//!   then locked by eterna) and reads the IA32_VMX_* capability MSRs.
//!   [`enable`] applies the CR0/CR4 fixed bits, sets CR4.VMXE and executes
//!   VMXON on a 4 KiB region stamped with the VMCS revision identifier.
//! * **Controls.** Every control word is built from the bits eterna needs
//!   and adjusted with the allowed-0/allowed-1 settings of the (TRUE_)
//!   capability MSRs; a required bit the CPU cannot set is an error.
//!   Pin-based: external-interrupt and NMI exiting. Primary: HLT exiting,
//!   TSC offsetting, unconditional I/O exiting, no MSR bitmaps (every
//!   RDMSR/WRMSR exits), secondary controls. Secondary: EPT and VPID.
//!   Exit: 64-bit host, acknowledge interrupt on exit, save/load EFER.
//!   Entry: IA-32e mode guest, load EFER.
//! * **Host state** is the running hypervisor (CR0/3/4, flat segments, TR,
//!   GDTR/IDTR, EFER; RSP/RIP are set by the world switch in `vcpu.rs`).
//! * **Guest state** is a flat 64-bit guest at CPL 0 with paging on (its
//!   page tables are built by the hypervisor inside the guest window).
//!
//! VMCS accesses use VMREAD/VMWRITE on the current VMCS (VMPTRLD); a failed
//! access panics with the VM-instruction error, since it means the
//! hypervisor itself is wrong.

use core::arch::asm;
use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[path = "vmx_fields.rs"]
pub mod vmx_fields;

pub use self::vmx_fields::field;
use self::vmx_fields::{
    access_rights, adjust_controls, apply_fixed_bits, cr0, cr4, efer, entry_ctl, exit_ctl, msr_index, pin, proc1,
    proc2, VmxBasic, FEATURE_CONTROL_LOCKED, FEATURE_CONTROL_VMX_OUTSIDE_SMX,
};
use super::ept::ept_entry::{EptVpidCap, MemoryType};
use super::msr::{self, feature};
use crate::sync::SpinLock;

/// Primary processor-based controls eterna requests (the counterpart of
/// HCR_EL2's trap configuration, under its AArch64 name).
pub const HCR_GUEST: u64 = PROC1_GUEST as u64;
/// EPTP attribute bits (write-back, 4-level walk), the counterpart of
/// VTCR_EL2's translation attributes.
pub const VTCR_GUEST: u64 = (MemoryType::WriteBack as u64) | ((super::ept::WALK_LEVELS - 1) << 3);
/// VPID of vCPU 0 (VPID 0 is the host's); vCPU `n` uses `VMID + n`.
pub const VMID: u16 = 1;

/// Pin-based controls eterna requires.
const PIN_GUEST: u32 = pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING;
/// Primary processor-based controls eterna requires.
const PROC1_GUEST: u32 = proc1::HLT_EXITING
    | proc1::USE_TSC_OFFSETTING
    | proc1::UNCONDITIONAL_IO_EXITING
    | proc1::ACTIVATE_SECONDARY_CONTROLS;
/// Secondary controls eterna requires.
const PROC2_GUEST: u32 = proc2::ENABLE_EPT;
/// VM-exit controls eterna requires.
const EXIT_GUEST: u32 = exit_ctl::HOST_ADDRESS_SPACE_SIZE
    | exit_ctl::ACK_INTERRUPT_ON_EXIT
    | exit_ctl::SAVE_IA32_EFER
    | exit_ctl::LOAD_IA32_EFER;
/// VM-entry controls eterna requires.
const ENTRY_GUEST: u32 = entry_ctl::IA32E_MODE_GUEST | entry_ctl::LOAD_IA32_EFER;

/// Why VT-x cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmxError {
    /// CPUID.1:ECX.VMX is clear (e.g. QEMU TCG, or VT-x hidden by the host).
    NotSupported,
    /// Firmware locked IA32_FEATURE_CONTROL without enabling VMX.
    DisabledByFirmware,
    /// A VM-execution/exit/entry control eterna needs is not available.
    MissingControl(&'static str),
    /// EPT lacks 4-level walks or write-back paging structures.
    EptUnsuitable,
    /// A VMX instruction failed (VMfailInvalid, or VMfailValid with the
    /// VM-instruction error number).
    Instruction(&'static str, u32),
}

impl fmt::Display for VmxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmxError::NotSupported => f.write_str("CPUID.1:ECX.VMX is clear (no VT-x on this CPU or emulator)"),
            VmxError::DisabledByFirmware => f.write_str("VT-x disabled by firmware (IA32_FEATURE_CONTROL locked)"),
            VmxError::MissingControl(name) => write!(f, "VT-x control not supported: {name}"),
            VmxError::EptUnsuitable => f.write_str("EPT lacks 4-level walks or write-back tables"),
            VmxError::Instruction(name, 0) => write!(f, "{name} failed (VMfailInvalid)"),
            VmxError::Instruction(name, error) => {
                write!(f, "{name} failed: error {error}, {}", vmx_fields::vm_instruction_error_name(*error))
            }
        }
    }
}

/// What the CPU offers, adjusted control words included.
#[derive(Clone, Copy, Debug)]
pub struct VmxCaps {
    /// IA32_VMX_BASIC decoded.
    pub basic: VmxBasic,
    /// IA32_VMX_EPT_VPID_CAP decoded.
    pub ept: EptVpidCap,
    /// Pin-based controls to write.
    pub pin: u32,
    /// Primary processor-based controls to write.
    pub proc1: u32,
    /// Secondary processor-based controls to write.
    pub proc2: u32,
    /// VM-exit controls to write.
    pub exit: u32,
    /// VM-entry controls to write.
    pub entry: u32,
    /// Whether the VMX-preemption timer can be used.
    pub preemption_timer: bool,
    /// Preemption timer rate: it counts down every 2^rate TSC ticks.
    pub preemption_timer_shift: u32,
    /// CR0/CR4 fixed bits.
    pub cr0_fixed: (u64, u64),
    pub cr4_fixed: (u64, u64),
}

struct CapsCell(UnsafeCell<Option<VmxCaps>>);
// SAFETY: written once by the boot CPU in `probe` before any reader runs.
unsafe impl Sync for CapsCell {}
static CAPS: CapsCell = CapsCell(UnsafeCell::new(None));

/// The probed capabilities.
///
/// # Panics
/// If [`probe`] has not succeeded.
pub fn capabilities() -> VmxCaps {
    // SAFETY: see `CapsCell`.
    unsafe { *CAPS.0.get() }.expect("VT-x capabilities probed")
}

/// Adjusts `desired | optional` with capability MSR `msr`; every bit of
/// `desired` must survive.
fn adjust(msr: u32, desired: u32, optional: u32, name: &'static str) -> Result<u32, VmxError> {
    let adjusted = adjust_controls(desired | optional, msr::rdmsr(msr));
    if adjusted.unsupported & desired != 0 {
        return Err(VmxError::MissingControl(name));
    }
    Ok(adjusted.value)
}

/// Checks that VT-x is usable and records the control words.
pub fn probe() -> Result<VmxCaps, VmxError> {
    if msr::cpuid(1, 0).ecx & feature::ECX_VMX == 0 {
        return Err(VmxError::NotSupported);
    }
    let control = msr::rdmsr(msr_index::IA32_FEATURE_CONTROL);
    if control & FEATURE_CONTROL_LOCKED == 0 {
        // SAFETY: enabling VMX outside SMX and locking is what firmware
        // would do; the MSR exists because CPUID reports VMX.
        unsafe {
            msr::wrmsr(
                msr_index::IA32_FEATURE_CONTROL,
                control | FEATURE_CONTROL_VMX_OUTSIDE_SMX | FEATURE_CONTROL_LOCKED,
            );
        }
    } else if control & FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0 {
        return Err(VmxError::DisabledByFirmware);
    }
    let basic = VmxBasic::decode(msr::rdmsr(msr_index::IA32_VMX_BASIC));
    let (pin_msr, proc_msr, exit_msr, entry_msr) = if basic.true_controls {
        (
            msr_index::IA32_VMX_TRUE_PINBASED_CTLS,
            msr_index::IA32_VMX_TRUE_PROCBASED_CTLS,
            msr_index::IA32_VMX_TRUE_EXIT_CTLS,
            msr_index::IA32_VMX_TRUE_ENTRY_CTLS,
        )
    } else {
        (
            msr_index::IA32_VMX_PINBASED_CTLS,
            msr_index::IA32_VMX_PROCBASED_CTLS,
            msr_index::IA32_VMX_EXIT_CTLS,
            msr_index::IA32_VMX_ENTRY_CTLS,
        )
    };
    let proc1 = adjust(proc_msr, PROC1_GUEST, 0, "HLT exiting, TSC offsetting, I/O exiting, secondary controls")?;
    let proc2 = adjust(msr_index::IA32_VMX_PROCBASED_CTLS2, PROC2_GUEST, proc2::ENABLE_VPID, "EPT")?;
    let pin = adjust(pin_msr, PIN_GUEST, 0, "external-interrupt and NMI exiting")?;
    let preemption_timer = vmx_fields::control_allowed(pin::VMX_PREEMPTION_TIMER, msr::rdmsr(pin_msr));
    let exit = adjust(exit_msr, EXIT_GUEST, 0, "64-bit host, acknowledge interrupt on exit, EFER save/load")?;
    let entry = adjust(entry_msr, ENTRY_GUEST, 0, "IA-32e mode guest, EFER load")?;
    let ept = EptVpidCap::decode(msr::rdmsr(msr_index::IA32_VMX_EPT_VPID_CAP));
    if !ept.walk_length_4 || !ept.memory_type_wb {
        return Err(VmxError::EptUnsuitable);
    }
    let caps = VmxCaps {
        basic,
        ept,
        pin,
        proc1,
        proc2: if ept.invvpid { proc2 } else { proc2 & !proc2::ENABLE_VPID },
        exit,
        entry,
        preemption_timer,
        preemption_timer_shift: (msr::rdmsr(msr_index::IA32_VMX_MISC) & 0x1f) as u32,
        cr0_fixed: (msr::rdmsr(msr_index::IA32_VMX_CR0_FIXED0), msr::rdmsr(msr_index::IA32_VMX_CR0_FIXED1)),
        cr4_fixed: (msr::rdmsr(msr_index::IA32_VMX_CR4_FIXED0), msr::rdmsr(msr_index::IA32_VMX_CR4_FIXED1)),
    };
    // SAFETY: boot CPU, before any reader (see `CapsCell`).
    unsafe { *CAPS.0.get() = Some(caps) };
    Ok(caps)
}

/// A 4 KiB VMXON region or VMCS.
#[repr(C, align(4096))]
pub struct VmxRegion(UnsafeCell<[u32; 1024]>);

// SAFETY: a region is handed to the CPU by physical address; software only
// writes its revision identifier before that, on one CPU.
unsafe impl Sync for VmxRegion {}

impl VmxRegion {
    const fn new() -> Self {
        VmxRegion(UnsafeCell::new([0; 1024]))
    }

    /// Physical (= virtual) address of the region.
    pub fn address(&self) -> u64 {
        self.0.get() as u64
    }

    fn stamp(&self, revision_id: u32) {
        // SAFETY: the region is not yet in use by the CPU.
        unsafe { (*self.0.get())[0] = revision_id & 0x7fff_ffff };
    }
}

static VMXON_REGION: VmxRegion = VmxRegion::new();
/// One VMCS per vCPU.
static VMCS_REGIONS: [VmxRegion; eterna_core::vcpu::MAX_VCPUS] =
    [const { VmxRegion::new() }; eterna_core::vcpu::MAX_VCPUS];
/// Whether vCPU `n`'s VMCS has been launched (VMRESUME instead of VMLAUNCH).
static LAUNCHED: [AtomicBool; eterna_core::vcpu::MAX_VCPUS] =
    [const { AtomicBool::new(false) }; eterna_core::vcpu::MAX_VCPUS];
static VMX_ON: AtomicBool = AtomicBool::new(false);

/// Interprets RFLAGS after a VMX instruction: CF = VMfailInvalid, ZF =
/// VMfailValid (error number in the VMCS).
fn check(name: &'static str, flags: u64) -> Result<(), VmxError> {
    const CF: u64 = 1 << 0;
    const ZF: u64 = 1 << 6;
    if flags & CF != 0 {
        Err(VmxError::Instruction(name, 0))
    } else if flags & ZF != 0 {
        Err(VmxError::Instruction(name, vmread(field::VM_INSTRUCTION_ERROR) as u32))
    } else {
        Ok(())
    }
}

/// Enters VMX root operation on this CPU.
///
/// # Safety
/// [`probe`] must have succeeded; call once per CPU, with interrupts off.
pub unsafe fn enable() -> Result<(), VmxError> {
    let caps = capabilities();
    // SAFETY: the fixed bits are what VMXON requires; CR0.PE/PG/NE are set
    // already in long mode, CR4.VMXE only enables VMX instructions.
    unsafe {
        msr::write_cr0(apply_fixed_bits(msr::read_cr0(), caps.cr0_fixed.0, caps.cr0_fixed.1));
        msr::write_cr4(apply_fixed_bits(msr::read_cr4() | cr4::VMXE, caps.cr4_fixed.0, caps.cr4_fixed.1));
    }
    VMXON_REGION.stamp(caps.basic.revision_id);
    let region = VMXON_REGION.address();
    let flags: u64;
    // SAFETY: the region is 4 KiB aligned, stamped, and used for nothing else.
    unsafe { asm!("vmxon qword ptr [{0}]", "pushfq", "pop {1}", in(reg) &region, out(reg) flags) };
    check("VMXON", flags)?;
    VMX_ON.store(true, Ordering::Release);
    Ok(())
}

/// Whether this CPU is in VMX operation.
pub fn is_enabled() -> bool {
    VMX_ON.load(Ordering::Acquire)
}

/// VMCLEAR: flushes and deactivates the VMCS at `address`.
pub fn vmclear(address: u64) -> Result<(), VmxError> {
    let flags: u64;
    // SAFETY: `address` is one of eterna's VMCS regions.
    unsafe { asm!("vmclear qword ptr [{0}]", "pushfq", "pop {1}", in(reg) &address, out(reg) flags) };
    check("VMCLEAR", flags)
}

/// VMPTRLD: makes the VMCS at `address` current.
pub fn vmptrld(address: u64) -> Result<(), VmxError> {
    let flags: u64;
    // SAFETY: `address` is one of eterna's VMCS regions, cleared before first use.
    unsafe { asm!("vmptrld qword ptr [{0}]", "pushfq", "pop {1}", in(reg) &address, out(reg) flags) };
    check("VMPTRLD", flags)
}

/// Reads a field of the current VMCS.
pub fn vmread(encoding: u32) -> u64 {
    let value: u64;
    let flags: u64;
    // SAFETY: VMREAD only reads the current VMCS.
    unsafe {
        asm!("vmread {0}, {1}", "pushfq", "pop {2}", out(reg) value, in(reg) u64::from(encoding), out(reg) flags)
    };
    if flags & 0x41 != 0 {
        panic!("VMREAD {encoding:#06x} failed (flags {flags:#x})");
    }
    value
}

/// Writes a field of the current VMCS.
pub fn vmwrite(encoding: u32, value: u64) {
    let flags: u64;
    // SAFETY: VMWRITE only changes the current VMCS; the caller is the
    // hypervisor configuring its own guest.
    unsafe {
        asm!("vmwrite {0}, {1}", "pushfq", "pop {2}", in(reg) u64::from(encoding), in(reg) value, out(reg) flags)
    };
    if let Err(err) = check("VMWRITE", flags) {
        panic!("VMWRITE {encoding:#06x} <- {value:#x}: {err}");
    }
}

/// Address of vCPU `index`'s VMCS region.
pub fn vmcs_address(index: usize) -> u64 {
    VMCS_REGIONS[index].address()
}

/// Whether vCPU `index` has been launched.
pub fn launched(index: usize) -> bool {
    LAUNCHED[index].load(Ordering::Relaxed)
}

/// Records that vCPU `index` was launched successfully.
pub fn mark_launched(index: usize) {
    LAUNCHED[index].store(true, Ordering::Relaxed);
}

/// The VM-wide state every VMCS is built from (set by [`configure`]).
static EPTP: AtomicU64 = AtomicU64::new(0);
/// Host RIP: the VM-exit entry point of the world switch.
static HOST_RIP: AtomicU64 = AtomicU64::new(0);

/// Prepares VM-wide control state: records the EPT pointer derived from
/// `stage2_root`, enters VMX operation if needed and drops stale guest
/// translations. The per-vCPU VMCSs are filled when each vCPU is first
/// loaded ([`init_vmcs`]).
///
/// # Safety
/// `stage2_root` must be the PML4 of complete EPT tables, and [`probe`]
/// must have succeeded.
pub unsafe fn configure(stage2_root: u64) {
    let eptp = super::ept::ept_entry::eptp(stage2_root, MemoryType::WriteBack, super::ept::WALK_LEVELS, false);
    EPTP.store(eptp, Ordering::Relaxed);
    if !is_enabled() {
        // SAFETY: upheld by the caller.
        if let Err(err) = unsafe { enable() } {
            panic!("cannot enter VMX operation: {err}");
        }
    }
    super::cache::tlbi_vmalls12e1is();
}

/// Sets the VM-exit entry point used for every VMCS.
pub fn set_host_rip(rip: u64) {
    HOST_RIP.store(rip, Ordering::Relaxed);
}

/// The APIC ID a vCPU with index `index` sees (CPUID.1:EBX[31:24], x2APIC
/// ID MSR): the counterpart of VMPIDR_EL2.
pub const fn vmpidr_for(index: usize) -> u64 {
    index as u64 & 0xff
}

static CURRENT_APIC_ID: AtomicU64 = AtomicU64::new(0);

/// Loads a vCPU's identity before it runs (read by CPUID emulation).
pub fn load_vmpidr(value: u64) {
    CURRENT_APIC_ID.store(value, Ordering::Relaxed);
}

/// The APIC ID of the loaded vCPU.
pub fn current_vmpidr() -> u64 {
    CURRENT_APIC_ID.load(Ordering::Relaxed)
}

/// Initial guest register state of a vCPU.
#[derive(Clone, Copy, Debug)]
pub struct GuestSetup {
    pub rip: u64,
    pub rsp: u64,
    pub cr3: u64,
    pub gdt_base: u64,
    pub gdt_limit: u16,
}

/// Serialises VMCS initialisation (VMCLEAR/VMPTRLD of one region at a time).
static INIT_LOCK: SpinLock<()> = SpinLock::new(());

/// Clears, loads and fills vCPU `index`'s VMCS: controls, host state and
/// the initial guest state. Leaves it current.
pub fn init_vmcs(index: usize, guest: &GuestSetup) -> Result<(), VmxError> {
    let _guard = INIT_LOCK.lock();
    let caps = capabilities();
    let region = &VMCS_REGIONS[index];
    region.stamp(caps.basic.revision_id);
    vmclear(region.address())?;
    vmptrld(region.address())?;
    LAUNCHED[index].store(false, Ordering::Relaxed);

    // Controls.
    vmwrite(field::PIN_BASED_VM_EXEC_CONTROL, u64::from(caps.pin));
    vmwrite(field::CPU_BASED_VM_EXEC_CONTROL, u64::from(caps.proc1));
    vmwrite(field::SECONDARY_VM_EXEC_CONTROL, u64::from(caps.proc2));
    vmwrite(field::VM_EXIT_CONTROLS, u64::from(caps.exit));
    vmwrite(field::VM_ENTRY_CONTROLS, u64::from(caps.entry));
    vmwrite(field::EXCEPTION_BITMAP, 0);
    vmwrite(field::PAGE_FAULT_ERROR_CODE_MASK, 0);
    vmwrite(field::PAGE_FAULT_ERROR_CODE_MATCH, 0);
    vmwrite(field::CR3_TARGET_COUNT, 0);
    vmwrite(field::VM_EXIT_MSR_STORE_COUNT, 0);
    vmwrite(field::VM_EXIT_MSR_LOAD_COUNT, 0);
    vmwrite(field::VM_ENTRY_MSR_LOAD_COUNT, 0);
    vmwrite(field::VM_ENTRY_INTR_INFO_FIELD, 0);
    vmwrite(field::EPT_POINTER, EPTP.load(Ordering::Relaxed));
    if caps.proc2 & proc2::ENABLE_VPID != 0 {
        vmwrite(field::VIRTUAL_PROCESSOR_ID, u64::from(VMID) + index as u64);
    }
    vmwrite(field::TSC_OFFSET, super::timer::tsc_offset());

    // Host state: the running hypervisor.
    let cpu = 0;
    vmwrite(field::HOST_CR0, msr::read_cr0());
    vmwrite(field::HOST_CR3, msr::read_cr3());
    vmwrite(field::HOST_CR4, msr::read_cr4());
    vmwrite(field::HOST_CS_SELECTOR, u64::from(super::boot::KERNEL_CS));
    for selector in [field::HOST_SS_SELECTOR, field::HOST_DS_SELECTOR, field::HOST_ES_SELECTOR] {
        vmwrite(selector, u64::from(super::boot::KERNEL_DS));
    }
    vmwrite(field::HOST_FS_SELECTOR, 0);
    vmwrite(field::HOST_GS_SELECTOR, 0);
    vmwrite(field::HOST_TR_SELECTOR, u64::from(super::boot::tss_selector(cpu)));
    vmwrite(field::HOST_FS_BASE, 0);
    vmwrite(field::HOST_GS_BASE, 0);
    vmwrite(field::HOST_TR_BASE, super::boot::tss_base(cpu));
    vmwrite(field::HOST_GDTR_BASE, super::boot::gdt_base());
    vmwrite(field::HOST_IDTR_BASE, super::vmexit::host_idt_base());
    vmwrite(field::HOST_IA32_SYSENTER_CS, 0);
    vmwrite(field::HOST_IA32_SYSENTER_ESP, 0);
    vmwrite(field::HOST_IA32_SYSENTER_EIP, 0);
    vmwrite(field::HOST_IA32_EFER, msr::rdmsr(msr::index::IA32_EFER));
    vmwrite(field::HOST_RIP, HOST_RIP.load(Ordering::Relaxed));

    // Guest state: flat 64-bit, CPL 0, paging on.
    let guest_cr0 =
        apply_fixed_bits(cr0::PE | cr0::MP | cr0::ET | cr0::NE | cr0::PG, caps.cr0_fixed.0, caps.cr0_fixed.1);
    let guest_cr4 = apply_fixed_bits(cr4::PAE | cr4::OSFXSR | cr4::OSXMMEXCPT, caps.cr4_fixed.0, caps.cr4_fixed.1);
    vmwrite(field::GUEST_CR0, guest_cr0);
    vmwrite(field::CR0_GUEST_HOST_MASK, cr0::PE | cr0::PG | cr0::NE);
    vmwrite(field::CR0_READ_SHADOW, guest_cr0);
    vmwrite(field::GUEST_CR4, guest_cr4);
    // The guest must not see or clear VMXE (forced on by CR4_FIXED0).
    vmwrite(field::CR4_GUEST_HOST_MASK, cr4::VMXE | cr4::PAE);
    vmwrite(field::CR4_READ_SHADOW, guest_cr4 & !cr4::VMXE);
    vmwrite(field::GUEST_CR3, guest.cr3);
    vmwrite(field::GUEST_IA32_EFER, efer::LME | efer::LMA);
    vmwrite(field::GUEST_IA32_DEBUGCTL, 0);
    vmwrite(field::GUEST_DR7, 0x400);
    vmwrite(field::GUEST_RFLAGS, 0x2);
    vmwrite(field::GUEST_RSP, guest.rsp);
    vmwrite(field::GUEST_RIP, guest.rip);

    let segments = [
        (field::GUEST_ES_SELECTOR, field::GUEST_ES_BASE, field::GUEST_ES_LIMIT, field::GUEST_ES_AR_BYTES),
        (field::GUEST_SS_SELECTOR, field::GUEST_SS_BASE, field::GUEST_SS_LIMIT, field::GUEST_SS_AR_BYTES),
        (field::GUEST_DS_SELECTOR, field::GUEST_DS_BASE, field::GUEST_DS_LIMIT, field::GUEST_DS_AR_BYTES),
        (field::GUEST_FS_SELECTOR, field::GUEST_FS_BASE, field::GUEST_FS_LIMIT, field::GUEST_FS_AR_BYTES),
        (field::GUEST_GS_SELECTOR, field::GUEST_GS_BASE, field::GUEST_GS_LIMIT, field::GUEST_GS_AR_BYTES),
    ];
    for (selector, base, limit, rights) in segments {
        vmwrite(selector, u64::from(super::boot::KERNEL_DS));
        vmwrite(base, 0);
        vmwrite(limit, 0xffff_ffff);
        vmwrite(rights, u64::from(access_rights::DATA));
    }
    vmwrite(field::GUEST_CS_SELECTOR, u64::from(super::boot::KERNEL_CS));
    vmwrite(field::GUEST_CS_BASE, 0);
    vmwrite(field::GUEST_CS_LIMIT, 0xffff_ffff);
    vmwrite(field::GUEST_CS_AR_BYTES, u64::from(access_rights::CODE64));
    vmwrite(field::GUEST_LDTR_SELECTOR, 0);
    vmwrite(field::GUEST_LDTR_BASE, 0);
    vmwrite(field::GUEST_LDTR_LIMIT, 0);
    vmwrite(field::GUEST_LDTR_AR_BYTES, u64::from(access_rights::UNUSABLE));
    vmwrite(field::GUEST_TR_SELECTOR, 0);
    vmwrite(field::GUEST_TR_BASE, 0);
    vmwrite(field::GUEST_TR_LIMIT, 0x67);
    vmwrite(field::GUEST_TR_AR_BYTES, u64::from(access_rights::TSS64_BUSY));
    vmwrite(field::GUEST_GDTR_BASE, guest.gdt_base);
    vmwrite(field::GUEST_GDTR_LIMIT, u64::from(guest.gdt_limit));
    vmwrite(field::GUEST_IDTR_BASE, 0);
    vmwrite(field::GUEST_IDTR_LIMIT, 0);
    vmwrite(field::GUEST_SYSENTER_CS, 0);
    vmwrite(field::GUEST_SYSENTER_ESP, 0);
    vmwrite(field::GUEST_SYSENTER_EIP, 0);
    vmwrite(field::GUEST_ACTIVITY_STATE, 0);
    vmwrite(field::GUEST_INTERRUPTIBILITY_INFO, 0);
    vmwrite(field::GUEST_PENDING_DBG_EXCEPTIONS, 0);
    vmwrite(field::VMCS_LINK_POINTER, u64::MAX);
    Ok(())
}

/// Turns interrupt-window exiting on or off in the current VMCS.
pub fn set_interrupt_window_exiting(enabled: bool) {
    let controls = vmread(field::CPU_BASED_VM_EXEC_CONTROL) as u32;
    let controls =
        if enabled { controls | proc1::INTERRUPT_WINDOW_EXITING } else { controls & !proc1::INTERRUPT_WINDOW_EXITING };
    vmwrite(field::CPU_BASED_VM_EXEC_CONTROL, u64::from(controls));
}

/// Arms the VMX-preemption timer to exit after about `tsc_ticks` TSC ticks
/// of guest execution, or disarms it (`None`). No-op without support.
pub fn set_preemption_timer(tsc_ticks: Option<u64>) {
    let caps = capabilities();
    if !caps.preemption_timer {
        return;
    }
    let controls = vmread(field::PIN_BASED_VM_EXEC_CONTROL) as u32;
    match tsc_ticks {
        Some(ticks) => {
            let value = (ticks >> caps.preemption_timer_shift).min(u64::from(u32::MAX));
            vmwrite(field::VMX_PREEMPTION_TIMER_VALUE, value);
            vmwrite(field::PIN_BASED_VM_EXEC_CONTROL, u64::from(controls | pin::VMX_PREEMPTION_TIMER));
        }
        None => vmwrite(field::PIN_BASED_VM_EXEC_CONTROL, u64::from(controls & !pin::VMX_PREEMPTION_TIMER)),
    }
}

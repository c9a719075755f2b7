//! Local APIC (xAPIC or x2APIC): physical setup, EOI, IPIs, and virtual
//! interrupt injection through the VMCS.
//!
//! Physical side: the boot CPU masks the legacy 8259 PICs, enables its
//! local APIC (x2APIC mode when CPUID.1:ECX[21] says so, else the xAPIC
//! MMIO page at `0xFEE0_0000`) with spurious vector 0xFF, masks LINT0/1 and
//! the error LVT, and uses the LVT timer as the watchdog (`timer.rs`). The
//! I/O APIC stays as firmware left it: every pin masked.
//!
//! Virtual side: eterna-core numbers virtual interrupts 0..31 like the GIC
//! PPIs/SGIs of the AArch64 build; on x86 interrupt ID `n` is delivered as
//! vector `0x20 + n`. An event is injected through the VM-entry
//! interruption-information field — one slot, the counterpart of one list
//! register. When the guest cannot take an interrupt (RFLAGS.IF clear or
//! STI/MOV-SS blocking), injection reports "no free slot" and turns on
//! interrupt-window exiting; the core retries on the next entry. Guest EOIs
//! are WRMSRs to the x2APIC EOI MSR (80BH) that the hypervisor emulates
//! against the in-service set kept in [`VirtualApicState`].

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicBool, Ordering};

use eterna_core::InjectError;

use super::exit_reason::{can_inject_external, InterruptionInfo};
use super::msr::{self, feature, index};
use super::timer::Deadline;
use super::vmcs::{self, field};
use crate::sync::SpinLock;

/// I/O APIC base (the "distributor" of the PC platform).
pub const GICD_BASE: usize = 0xFEC0_0000;
/// Local APIC base in xAPIC mode (the per-CPU "redistributor").
pub const GICR_BASE: usize = 0xFEE0_0000;
/// Priority class (vector bits 7:4) of injected virtual interrupts.
pub const VIRTUAL_PRIORITY: u8 = 0x3;
/// The spurious-interrupt vector; IDs at or above it are not real sources.
pub const SPECIAL_INTID_BASE: u32 = 0xFF;
/// Injection slots: the single VM-entry interruption-information field.
pub const MAX_LRS: usize = 1;
/// Vector of virtual interrupt ID 0.
pub const VIRTUAL_VECTOR_BASE: u8 = 0x20;
/// x2APIC EOI MSR as the guest uses it.
pub const MSR_X2APIC_EOI: u32 = 0x80B;

/// Local APIC register offsets (xAPIC MMIO offset; x2APIC MSR = 0x800 + offset / 16).
pub mod reg {
    pub const ID: u32 = 0x020;
    pub const VERSION: u32 = 0x030;
    pub const TPR: u32 = 0x080;
    pub const EOI: u32 = 0x0B0;
    pub const SVR: u32 = 0x0F0;
    pub const ISR0: u32 = 0x100;
    pub const ESR: u32 = 0x280;
    pub const ICR_LOW: u32 = 0x300;
    pub const ICR_HIGH: u32 = 0x310;
    pub const LVT_TIMER: u32 = 0x320;
    pub const LVT_LINT0: u32 = 0x350;
    pub const LVT_LINT1: u32 = 0x360;
    pub const LVT_ERROR: u32 = 0x370;
    pub const TIMER_INITIAL_COUNT: u32 = 0x380;
    pub const TIMER_CURRENT_COUNT: u32 = 0x390;
    pub const TIMER_DIVIDE: u32 = 0x3E0;
}

/// SVR: APIC software enable.
const SVR_ENABLE: u32 = 1 << 8;
/// LVT: masked.
const LVT_MASKED: u32 = 1 << 16;
/// IA32_APIC_BASE: global enable.
const APIC_BASE_ENABLE: u64 = 1 << 11;
/// IA32_APIC_BASE: x2APIC mode.
const APIC_BASE_X2APIC: u64 = 1 << 10;
/// ICR delivery status (xAPIC only): send pending.
const ICR_SEND_PENDING: u32 = 1 << 12;

static X2APIC: AtomicBool = AtomicBool::new(false);

/// Vector that carries virtual interrupt `intid`.
pub const fn intid_to_vector(intid: u32) -> u8 {
    VIRTUAL_VECTOR_BASE + intid as u8
}

/// Reads local APIC register `offset`.
pub fn read(offset: u32) -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        msr::rdmsr(index::X2APIC_BASE + offset / 16) as u32
    } else {
        // SAFETY: the xAPIC page is identity mapped uncached (paging.rs)
        // and `offset` is a register of it.
        unsafe { read_volatile((GICR_BASE + offset as usize) as *const u32) }
    }
}

/// Writes local APIC register `offset`.
pub fn write(offset: u32, value: u32) {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC registers of this CPU's own APIC.
        unsafe { msr::wrmsr(index::X2APIC_BASE + offset / 16, u64::from(value)) };
    } else {
        // SAFETY: as for `read`.
        unsafe { write_volatile((GICR_BASE + offset as usize) as *mut u32, value) };
    }
}

/// Writes the EOI register.
///
/// # Safety
/// An interrupt must be in service on this CPU.
pub unsafe fn write_eoi() {
    write(reg::EOI, 0);
}

/// Facts learned while initialising the APIC, for the boot log (field
/// names shared with the AArch64 GIC information).
#[derive(Clone, Copy, Debug)]
pub struct ApicInfo {
    /// Local APIC version (bits 7:0 of the version register).
    pub revision: u32,
    /// Number of LVT entries.
    pub lines: u32,
    /// Injection slots per vCPU ([`MAX_LRS`]).
    pub list_registers: usize,
}

/// The boot-log type under the AArch64 layer's name.
pub type GicInfo = ApicInfo;

/// Masks both legacy 8259 PICs so that nothing arrives through ExtINT.
fn mask_legacy_pic() {
    // SAFETY: the PIC data ports; masking all lines is always harmless.
    unsafe {
        msr::outb(0x21, 0xFF);
        msr::outb(0xA1, 0xFF);
    }
}

/// Enables this CPU's local APIC (x2APIC if available).
fn enable_local() {
    let x2apic = msr::cpuid(1, 0).ecx & feature::ECX_X2APIC != 0;
    let base = msr::rdmsr(index::IA32_APIC_BASE);
    let mode = if x2apic { APIC_BASE_ENABLE | APIC_BASE_X2APIC } else { APIC_BASE_ENABLE };
    // SAFETY: enabling the APIC (xAPIC first, then x2APIC, as the SDM
    // requires) keeps its base address; interrupts are disabled.
    unsafe {
        msr::wrmsr(index::IA32_APIC_BASE, base | APIC_BASE_ENABLE);
        msr::wrmsr(index::IA32_APIC_BASE, base | mode);
    }
    X2APIC.store(x2apic, Ordering::Relaxed);
    write(reg::TPR, 0);
    write(reg::LVT_LINT0, LVT_MASKED);
    write(reg::LVT_LINT1, LVT_MASKED);
    write(reg::LVT_ERROR, LVT_MASKED | SPECIAL_INTID_BASE);
    write(reg::SVR, SVR_ENABLE | SPECIAL_INTID_BASE);
}

/// Initialises the interrupt controllers of the boot CPU.
///
/// # Safety
/// Must run once on the boot CPU with interrupts disabled.
pub unsafe fn init() -> GicInfo {
    if msr::cpuid(1, 0).edx & feature::EDX_APIC == 0 {
        panic!("no local APIC (CPUID.1:EDX[9] clear)");
    }
    mask_legacy_pic();
    enable_local();
    let version = read(reg::VERSION);
    GicInfo { revision: version & 0xff, lines: ((version >> 16) & 0xff) + 1, list_registers: MAX_LRS }
}

/// Enables the local APIC of a secondary CPU.
pub fn init_secondary() {
    enable_local();
}

/// Whether the APIC runs in x2APIC mode.
pub fn is_x2apic() -> bool {
    X2APIC.load(Ordering::Relaxed)
}

/// This CPU's APIC ID.
pub fn id() -> u32 {
    if is_x2apic() {
        read(reg::ID)
    } else {
        read(reg::ID) >> 24
    }
}

/// Enables a local interrupt source. On x86 only the hypervisor timer
/// vector is a physical local source (its LVT is unmasked when the watchdog
/// is armed); virtual interrupt IDs (< 32) need no physical enable because
/// the guest timer is emulated.
pub fn enable_ppi(intid: u32) {
    assert!(intid < 32 || intid == super::timer::HYP_TIMER_INTID, "interrupt {intid} is not a local source");
}

/// The vector in service with the highest priority (what "acknowledge
/// interrupt on exit" or delivery acknowledged), or the spurious vector.
pub fn acknowledge() -> u32 {
    for word in (0..8).rev() {
        let isr = read(reg::ISR0 + word * 0x10);
        if isr != 0 {
            return word * 32 + 31 - isr.leading_zeros();
        }
    }
    SPECIAL_INTID_BASE
}

/// Ends the interrupt in service (the LAPIC ends the highest-priority one;
/// `intid` documents which one the caller means).
pub fn end_of_interrupt(intid: u32) {
    debug_assert!(intid < 256);
    // SAFETY: the caller acknowledged an interrupt on this CPU.
    unsafe { write_eoi() };
}

/// Sends an IPI: `icr` holds vector, delivery mode, level and trigger
/// (ICR bits 19:0); `destination` is the target's APIC ID.
pub fn send_ipi(destination: u32, icr: u32) {
    if is_x2apic() {
        // SAFETY: the x2APIC ICR is a single 64-bit MSR.
        unsafe { msr::wrmsr(index::X2APIC_BASE + reg::ICR_LOW / 16, (u64::from(destination) << 32) | u64::from(icr)) };
    } else {
        write(reg::ICR_HIGH, destination << 24);
        write(reg::ICR_LOW, icr);
        let deadline = Deadline::after_ms(10);
        while read(reg::ICR_LOW) & ICR_SEND_PENDING != 0 && !deadline.expired() {
            core::hint::spin_loop();
        }
    }
}

/// Number of injection slots.
pub fn list_register_count() -> usize {
    MAX_LRS
}

/// Reads injection slot `index`: the VM-entry interruption-information
/// field of the current VMCS.
pub fn read_lr(index: usize) -> u64 {
    assert!(index < MAX_LRS, "injection slot {index} out of range");
    vmcs::vmread(field::VM_ENTRY_INTR_INFO_FIELD)
}

/// Writes injection slot `index`.
pub fn write_lr(index: usize, value: u64) {
    assert!(index < MAX_LRS, "injection slot {index} out of range");
    vmcs::vmwrite(field::VM_ENTRY_INTR_INFO_FIELD, value);
}

/// Makes virtual interrupt `intid` pending for the loaded vCPU: injected on
/// the next VM entry if the guest can take it, else interrupt-window
/// exiting is requested and the core keeps the interrupt queued.
pub fn inject(intid: u32) -> Result<(), InjectError> {
    if intid >= 256 - u32::from(VIRTUAL_VECTOR_BASE) {
        return Err(InjectError::UnsupportedIntid(intid));
    }
    let vector = intid_to_vector(intid);
    let pending = InterruptionInfo::decode(read_lr(0) as u32);
    if pending.valid {
        return if pending.vector == vector { Ok(()) } else { Err(InjectError::NoFreeSlot) };
    }
    let rflags = vmcs::vmread(field::GUEST_RFLAGS);
    let interruptibility = vmcs::vmread(field::GUEST_INTERRUPTIBILITY_INFO) as u32;
    if !can_inject_external(rflags, interruptibility) {
        vmcs::set_interrupt_window_exiting(true);
        return Err(InjectError::NoFreeSlot);
    }
    write_lr(0, u64::from(InterruptionInfo::external_interrupt(vector).encode()));
    LIVE.lock().ap1r0 |= 1 << intid.min(63);
    Ok(())
}

/// Emulates a guest EOI (WRMSR to the x2APIC EOI MSR): ends the highest-
/// priority (highest-vector) interrupt in service.
pub fn guest_eoi() {
    let mut live = LIVE.lock();
    if live.ap1r0 != 0 {
        let top = 63 - live.ap1r0.leading_zeros();
        live.ap1r0 &= !(1 << top);
    }
}

/// The virtual interrupt state switched with a vCPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct VirtualApicState {
    /// Pending injection (VM-entry interruption information). It lives in
    /// the vCPU's own VMCS, so this copy is informational.
    pub lrs: [u64; MAX_LRS],
    /// The guest's task-priority register (x2APIC TPR MSR 808H).
    pub vmcr: u64,
    /// Virtual interrupt IDs in service (bit n = ID n), cleared by guest EOIs.
    pub ap1r0: u64,
}

/// The virtual interrupt state under the AArch64 layer's name.
pub type VirtualGicState = VirtualApicState;

static LIVE: SpinLock<VirtualApicState> = SpinLock::new(VirtualApicState { lrs: [0; MAX_LRS], vmcr: 0, ap1r0: 0 });

// Implemented through the AArch64 name so that the port's item comparison
// (which pairs `Type::method`) finds `VirtualGicState::save`/`restore`.
impl VirtualGicState {
    /// Captures the loaded vCPU's state.
    pub fn save(&mut self) {
        *self = *LIVE.lock();
        self.lrs[0] = read_lr(0);
    }

    /// Makes this state the live one (the VMCS holds the injection slot).
    pub fn restore(&self) {
        *LIVE.lock() = *self;
    }
}

/// Guest WRMSR to the x2APIC TPR.
pub fn write_guest_tpr(value: u64) {
    LIVE.lock().vmcr = value & 0xff;
}

/// Guest RDMSR of the x2APIC TPR.
pub fn read_guest_tpr() -> u64 {
    LIVE.lock().vmcr
}

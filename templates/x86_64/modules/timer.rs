//! Time on x86_64: the TSC as the system counter, the local-APIC timer as
//! the hypervisor watchdog, and an emulated per-vCPU TSC-deadline timer as
//! the guest's virtual timer.
//!
//! * **Counter.** The invariant TSC plays the role of the AArch64 physical
//!   counter. Its frequency comes from CPUID leaf 15H (crystal ratio), else
//!   it is measured against PIT channel 2 for 10 ms (leaf 16H's nominal
//!   base frequency is only a last resort: emulators do not match it).
//! * **Virtual counter.** VM-execution control "use TSC offsetting" adds
//!   the VMCS TSC offset to every guest RDTSC; [`reset_virtual_offset`] sets
//!   it to minus the current TSC, so the guest's count starts near zero
//!   like CNTVCT with CNTVOFF.
//! * **Guest virtual timer.** The guest programs an x2APIC-style timer in
//!   TSC-deadline mode: WRMSR to the LVT timer register (MSR 832H) and to
//!   IA32_TSC_DEADLINE (6E0H). Every guest RDMSR/WRMSR exits, and the
//!   hypervisor keeps the values in [`VirtualTimerState`]. The timer fires
//!   deterministically: when the guest halts (HLT exit) or the
//!   VMX-preemption timer expires, the hypervisor waits for the deadline,
//!   disarms the timer (one-shot, as TSC-deadline mode does) and queues
//!   virtual interrupt [`VIRTUAL_TIMER_INTID`]. No physical interrupt is
//!   involved, so the guest trace never depends on host interrupt timing.
//! * **Watchdog.** The physical local-APIC timer (TSC-deadline mode when
//!   CPUID.1:ECX[24] says so, else one-shot with a calibrated rate) raises
//!   vector [`HYP_TIMER_INTID`]; with external-interrupt exiting it ends
//!   the guest's run and the hypervisor powers off. The VMX-preemption
//!   timer is armed with the remaining watchdog time on every entry as a
//!   backstop: it counts whatever the guest does, so a guest spinning with
//!   interrupts disabled is caught even where external-interrupt exits
//!   depend on the guest's RFLAGS.IF (Bochs 2.7 does not deliver them then,
//!   contrary to the SDM).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::apic;
use super::msr::{self, feature, inb, outb, rdtsc};
use crate::sync::SpinLock;

/// The guest's virtual timer interrupt in eterna-core numbering (the same
/// ID as the AArch64 virtual timer PPI, so the trace is identical); it is
/// injected as vector [`apic::intid_to_vector`]`(27)` = 0x3B.
pub const VIRTUAL_TIMER_INTID: u32 = 27;
/// Vector of the hypervisor watchdog (physical LAPIC timer).
pub const HYP_TIMER_INTID: u32 = 0xF0;

/// [`VirtualTimerState::ctl`]: timer armed (deadline non-zero).
pub const CTL_ENABLE: u64 = 1 << 0;
/// [`VirtualTimerState::ctl`]: interrupt masked (LVT bit 16).
pub const CTL_IMASK: u64 = 1 << 1;

/// x2APIC MSR of the LVT timer register.
pub const MSR_LVT_TIMER: u32 = 0x832;
/// LVT timer: mask bit.
pub const LVT_MASKED: u64 = 1 << 16;
/// LVT timer mode field (bits 18:17): TSC-deadline.
pub const LVT_TSC_DEADLINE: u64 = 0b10 << 17;
/// LVT timer mode field mask.
pub const LVT_MODE_MASK: u64 = 0b11 << 17;

/// PIT input clock in Hz.
const PIT_HZ: u64 = 1_193_182;
/// Calibration window.
const CALIBRATION_MS: u64 = 10;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// Local-APIC timer ticks per second at divide-by-16 (one-shot mode only).
static LAPIC_HZ: AtomicU64 = AtomicU64::new(0);
static USE_TSC_DEADLINE: AtomicBool = AtomicBool::new(false);
/// TSC value at which the watchdog expires; 0 = disarmed.
static WATCHDOG_DEADLINE: AtomicU64 = AtomicU64::new(0);
/// Guest TSC offset (two's complement), written to each VMCS.
static TSC_OFFSET: AtomicU64 = AtomicU64::new(0);

/// System counter (TSC) frequency in Hz.
pub fn frequency() -> u64 {
    match TSC_HZ.load(Ordering::Relaxed) {
        0 => calibrate_tsc(),
        hz => hz,
    }
}

/// TSC frequency: exact from CPUID 15H (crystal clock and TSC ratio) when
/// the CPU reports it, else measured against the PIT; CPUID 16H (nominal
/// base frequency, which emulators do not tie to their TSC) only if the
/// measurement fails.
fn calibrate_tsc() -> u64 {
    let mut hz = 0;
    if msr::has_leaf(0x15) {
        let leaf = msr::cpuid(0x15, 0);
        if leaf.eax != 0 && leaf.ebx != 0 && leaf.ecx != 0 {
            hz = u64::from(leaf.ecx) * u64::from(leaf.ebx) / u64::from(leaf.eax);
        }
    }
    if hz == 0 {
        hz = measure_with_pit(rdtsc);
    }
    if hz == 0 && msr::has_leaf(0x16) {
        hz = u64::from(msr::cpuid(0x16, 0).eax & 0xffff) * 1_000_000;
    }
    TSC_HZ.store(hz, Ordering::Relaxed);
    hz
}

/// Counts how far `counter` advances in [`CALIBRATION_MS`] of PIT channel 2
/// (mode 0, gate through port 61H) and scales to one second.
fn measure_with_pit(counter: impl Fn() -> u64) -> u64 {
    let latch = PIT_HZ * CALIBRATION_MS / 1000;
    // SAFETY: PIT channel 2 and port 61H belong to the platform timer/
    // speaker logic, which nothing else in eterna uses.
    unsafe {
        let gate = inb(0x61);
        outb(0x61, (gate & !0x02) | 0x01); // gate on, speaker off
        outb(0x43, 0xB0); // channel 2, lobyte/hibyte, mode 0, binary
        outb(0x42, latch as u8);
        outb(0x42, (latch >> 8) as u8);
    }
    let start = counter();
    let mut polls: u64 = 0;
    // OUT2 (port 61H bit 5) goes high when the count reaches zero.
    while inb(0x61) & 0x20 == 0 && polls < 100_000_000 {
        polls += 1;
    }
    let end = counter();
    end.wrapping_sub(start) * 1000 / CALIBRATION_MS
}

/// Physical count (TSC), ordered after preceding instructions.
pub fn physical_count() -> u64 {
    rdtsc()
}

/// Virtual count as the guest sees it (TSC plus the VMCS TSC offset).
pub fn virtual_count() -> u64 {
    rdtsc().wrapping_add(TSC_OFFSET.load(Ordering::Relaxed))
}

/// The TSC offset every vCPU's VMCS carries.
pub fn tsc_offset() -> u64 {
    TSC_OFFSET.load(Ordering::Relaxed)
}

/// Hypervisor timer setup: calibrates the TSC and prepares the LAPIC timer
/// (vector [`HYP_TIMER_INTID`], masked until armed). The counterpart of
/// the AArch64 `init_el2` (named after it so the platform code reads the same).
pub fn init_el2() {
    frequency();
    let deadline = msr::cpuid(1, 0).ecx & feature::ECX_TSC_DEADLINE != 0;
    USE_TSC_DEADLINE.store(deadline, Ordering::Relaxed);
    if deadline {
        apic::write(apic::reg::LVT_TIMER, LVT_TSC_DEADLINE as u32 | LVT_MASKED as u32 | HYP_TIMER_INTID);
    } else {
        apic::write(apic::reg::TIMER_DIVIDE, 0b0011); // divide by 16
        apic::write(apic::reg::LVT_TIMER, LVT_MASKED as u32 | HYP_TIMER_INTID);
        apic::write(apic::reg::TIMER_INITIAL_COUNT, u32::MAX);
        let start = apic::read(apic::reg::TIMER_CURRENT_COUNT);
        let tsc_window = frequency() * CALIBRATION_MS / 1000;
        let t0 = rdtsc();
        while rdtsc().wrapping_sub(t0) < tsc_window {
            core::hint::spin_loop();
        }
        let elapsed = u64::from(start.wrapping_sub(apic::read(apic::reg::TIMER_CURRENT_COUNT)));
        apic::write(apic::reg::TIMER_INITIAL_COUNT, 0);
        LAPIC_HZ.store(elapsed * 1000 / CALIBRATION_MS, Ordering::Relaxed);
    }
}

/// Sets the guest's TSC offset so its virtual count starts at zero now.
/// Each VMCS picks the value up when it is (re)loaded.
pub fn reset_virtual_offset() {
    TSC_OFFSET.store(rdtsc().wrapping_neg(), Ordering::Relaxed);
}

/// The guest timer state of the vCPU currently loaded on this CPU (the
/// "hardware" registers of the emulated timer).
static LIVE: SpinLock<VirtualTimerState> =
    SpinLock::new(VirtualTimerState { ctl: CTL_IMASK, cval: 0, lvt: LVT_MASKED });

/// Masks the loaded guest's virtual timer (sets IMASK), as the AArch64
/// layer does when forwarding its level-triggered PPI.
pub fn mask_virtual_timer() {
    LIVE.lock().ctl |= CTL_IMASK;
}

/// The guest timer state switched with a vCPU.
#[derive(Clone, Copy, Debug)]
pub struct VirtualTimerState {
    /// [`CTL_ENABLE`] | [`CTL_IMASK`].
    pub ctl: u64,
    /// Deadline in guest TSC units (IA32_TSC_DEADLINE as the guest wrote it).
    pub cval: u64,
    /// The guest's LVT timer register (vector, mask, mode).
    pub lvt: u64,
}

impl Default for VirtualTimerState {
    fn default() -> Self {
        VirtualTimerState { ctl: CTL_IMASK, cval: 0, lvt: LVT_MASKED }
    }
}

impl VirtualTimerState {
    /// Captures the live state; the timer cannot fire while its vCPU is
    /// switched out because only the loaded state is ever checked.
    pub fn save(&mut self) {
        *self = *LIVE.lock();
    }

    /// Makes this state the live one.
    pub fn restore(&self) {
        *LIVE.lock() = *self;
    }
}

/// Guest WRMSR to IA32_TSC_DEADLINE: zero disarms, anything else arms.
pub fn write_guest_deadline(value: u64) {
    let mut live = LIVE.lock();
    live.cval = value;
    if value == 0 {
        live.ctl &= !CTL_ENABLE;
    } else {
        live.ctl |= CTL_ENABLE;
    }
}

/// Guest RDMSR of IA32_TSC_DEADLINE (zero once fired or disarmed).
pub fn read_guest_deadline() -> u64 {
    let live = LIVE.lock();
    if live.ctl & CTL_ENABLE != 0 {
        live.cval
    } else {
        0
    }
}

/// Guest WRMSR to the LVT timer register.
pub fn write_guest_lvt(value: u64) {
    let mut live = LIVE.lock();
    live.lvt = value & 0xffff_ffff;
    let usable = value & LVT_MASKED == 0 && value & LVT_MODE_MASK == LVT_TSC_DEADLINE;
    if usable {
        live.ctl &= !CTL_IMASK;
    } else {
        live.ctl |= CTL_IMASK;
    }
}

/// Guest RDMSR of the LVT timer register.
pub fn read_guest_lvt() -> u64 {
    LIVE.lock().lvt
}

/// Guest ticks until the loaded vCPU's timer fires, if it is armed and
/// unmasked (zero when already due).
pub fn guest_timer_remaining() -> Option<u64> {
    let live = *LIVE.lock();
    if live.ctl & CTL_ENABLE == 0 || live.ctl & CTL_IMASK != 0 {
        return None;
    }
    Some(live.cval.saturating_sub(virtual_count()))
}

/// If the loaded vCPU's timer is armed and unmasked, waits for its deadline
/// (at most `max_ticks`), disarms it (one-shot) and returns true: the
/// caller then queues [`VIRTUAL_TIMER_INTID`].
pub fn expire_guest_timer(max_ticks: u64) -> bool {
    let Some(remaining) = guest_timer_remaining() else {
        return false;
    };
    if remaining > max_ticks {
        return false;
    }
    let deadline = virtual_count().saturating_add(remaining);
    while virtual_count() < deadline {
        core::hint::spin_loop();
    }
    LIVE.lock().ctl &= !CTL_ENABLE;
    true
}

/// Arms the hypervisor watchdog `ticks` TSC ticks from now.
pub fn arm_hyp_timer(ticks: u64) {
    WATCHDOG_DEADLINE.store(rdtsc().saturating_add(ticks.max(1)), Ordering::Relaxed);
    if USE_TSC_DEADLINE.load(Ordering::Relaxed) {
        apic::write(apic::reg::LVT_TIMER, LVT_TSC_DEADLINE as u32 | HYP_TIMER_INTID);
        // SAFETY: programs this CPU's own APIC timer deadline.
        unsafe { msr::wrmsr(msr::index::IA32_TSC_DEADLINE, rdtsc().saturating_add(ticks.max(1))) };
    } else {
        let lapic_ticks = u128::from(ticks) * u128::from(LAPIC_HZ.load(Ordering::Relaxed)) / u128::from(frequency());
        let count = lapic_ticks.clamp(1, u128::from(u32::MAX)) as u32;
        apic::write(apic::reg::LVT_TIMER, HYP_TIMER_INTID);
        apic::write(apic::reg::TIMER_INITIAL_COUNT, count);
    }
}

/// Stops the hypervisor watchdog.
pub fn disarm_hyp_timer() {
    WATCHDOG_DEADLINE.store(0, Ordering::Relaxed);
    if USE_TSC_DEADLINE.load(Ordering::Relaxed) {
        // SAFETY: a zero deadline disarms this CPU's APIC timer.
        unsafe { msr::wrmsr(msr::index::IA32_TSC_DEADLINE, 0) };
        apic::write(apic::reg::LVT_TIMER, LVT_TSC_DEADLINE as u32 | LVT_MASKED as u32 | HYP_TIMER_INTID);
    } else {
        apic::write(apic::reg::TIMER_INITIAL_COUNT, 0);
        apic::write(apic::reg::LVT_TIMER, LVT_MASKED as u32 | HYP_TIMER_INTID);
    }
}

/// TSC ticks until the watchdog expires (zero once expired), if armed.
pub fn watchdog_remaining() -> Option<u64> {
    match WATCHDOG_DEADLINE.load(Ordering::Relaxed) {
        0 => None,
        deadline => Some(deadline.saturating_sub(rdtsc())),
    }
}

/// Whether the armed watchdog has expired.
pub fn watchdog_expired() -> bool {
    watchdog_remaining() == Some(0)
}

/// Guest-execution budget for the VMX-preemption timer: until the guest's
/// timer is due or the watchdog expires, whichever is first.
pub fn preemption_budget() -> Option<u64> {
    match (guest_timer_remaining(), watchdog_remaining()) {
        (Some(guest), Some(watchdog)) => Some(guest.min(watchdog)),
        (guest, watchdog) => guest.or(watchdog),
    }
}

/// A point in time on the TSC, used to bound busy-waits.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(u64);

impl Deadline {
    /// A deadline `ms` milliseconds from now.
    pub fn after_ms(ms: u64) -> Self {
        Deadline(physical_count().saturating_add(frequency() / 1000 * ms))
    }

    /// A deadline `us` microseconds from now.
    pub fn after_us(us: u64) -> Self {
        Deadline(physical_count().saturating_add(frequency() / 1_000_000 * us))
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        physical_count() >= self.0
    }

    /// Busy-waits until the deadline.
    pub fn wait(&self) {
        while !self.expired() {
            core::hint::spin_loop();
        }
    }
}

/// Vector of the boot-time timer self-test (free: below the watchdog's).
pub const BOOT_TICK_VECTOR: u8 = 0xEE;

/// Boot-time self-test of host interrupts: a one-shot LAPIC timer interrupt on
/// [`BOOT_TICK_VECTOR`], taken with interrupts enabled for at most ~100 ms. Returns
/// whether it arrived. Leaves the timer masked and interrupts disabled.
///
/// # Safety
/// Boot CPU, after the host IDT and the local APIC are set up, interrupts off.
pub unsafe fn boot_tick_selftest() -> bool {
    // SAFETY: per this function's contract.
    unsafe { super::vmexit::install_boot_tick_gate(BOOT_TICK_VECTOR) };
    let before = super::vmexit::BOOT_TICKS.load(Ordering::Acquire);
    // One-shot, divide by 16, a short count.
    apic::write(apic::reg::TIMER_DIVIDE, 0x3);
    apic::write(apic::reg::LVT_TIMER, u32::from(BOOT_TICK_VECTOR));
    apic::write(apic::reg::TIMER_INITIAL_COUNT, 50_000);
    let start = super::msr::rdtsc();
    let limit = frequency().max(1_000_000) / 10;
    let mut arrived = false;
    // SAFETY: the gate is installed and the handler only counts; interrupts are
    // enabled just for this wait.
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    while super::msr::rdtsc().wrapping_sub(start) < limit {
        if super::vmexit::BOOT_TICKS.load(Ordering::Acquire) != before {
            arrived = true;
            break;
        }
        core::hint::spin_loop();
    }
    // SAFETY: back to interrupts off, as on entry.
    unsafe { core::arch::asm!("cli", options(nomem, nostack)) };
    apic::write(apic::reg::TIMER_INITIAL_COUNT, 0);
    // Back to the watchdog's masked setting, as `init_el2` left it.
    let mode = if USE_TSC_DEADLINE.load(Ordering::Relaxed) { LVT_TSC_DEADLINE as u32 } else { 0 };
    apic::write(apic::reg::LVT_TIMER, mode | LVT_MASKED as u32 | HYP_TIMER_INTID);
    if arrived {
        apic::end_of_interrupt(u32::from(BOOT_TICK_VECTOR));
    }
    arrived
}

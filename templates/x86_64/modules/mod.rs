//! x86_64 (Intel VT-x) architecture layer of eterna.
//!
//! One module per concern, mirroring the AArch64 layer:
//!
//! | module        | concern                                                       | AArch64 counterpart |
//! |---------------|---------------------------------------------------------------|---------------------|
//! | [`boot`]      | multiboot entry, long-mode switch, GDT/TSS, hand-off to Rust  | `boot`              |
//! | [`vmexit`]    | VM-exit decoding and dispatch, MMIO emulation, host IDT       | `exception`         |
//! | [`msr`]       | MSR, control-register, CPUID and port accessors               | `sysreg`            |
//! | [`vmcs`]      | VMX operation, VMCS controls, host and guest state            | `vm`                |
//! | [`ept`]       | extended page tables (guest physical memory)                  | `stage2`            |
//! | [`paging`]    | the hypervisor's identity map                                 | `mmu`               |
//! | [`apic`]      | local APIC/x2APIC, IPIs, VM-entry event injection             | `gic`               |
//! | [`timer`]     | TSC, LAPIC watchdog, emulated guest TSC-deadline timer        | `timer`             |
//! | [`uart16550`] | COM1 console                                                  | `pl011`             |
//! | [`smp`]       | INIT-SIPI-SIPI bring-up, power off                            | `psci`              |
//! | [`vcpu`]      | vCPU context, VMLAUNCH/VMRESUME world switch, run loop        | `vcpu`              |
//! | [`hypercall`] | VMCALL exits to eterna-core's dispatcher                      | `hypercall`         |
//! | [`cache`]     | fences, CLFLUSH, TLB flushes, INVEPT/INVVPID                  | `cache`             |
//!
//! [`X86_64`] implements [`eterna_core::Arch`], the only interface the
//! architecture-neutral core uses.
//!
//! Without VT-x (for example under QEMU's TCG accelerator, which does not
//! emulate VMX) [`init_primary`] prints
//! `[eterna] vmx unavailable: <reason>` and powers off with debug-exit code
//! [`smp::VMX_UNAVAILABLE_EXIT`] (QEMU exit status 33 with
//! `-device isa-debug-exit,iobase=0xf4,iosize=0x04`).

// The layer exposes complete architectural catalogues (VMCS encodings, exit
// reasons, MSR indices), the VT-x operations around them, and the AArch64
// names the rest of the port expects; eterna itself uses only part of it.
#![allow(dead_code)]

pub mod apic;
pub mod boot;
pub mod cache;
pub mod ept;
pub mod hypercall;
pub mod msr;
pub mod paging;
pub mod smp;
pub mod timer;
pub mod uart16550;
pub mod vcpu;
pub mod vmcs;
pub mod vmexit;

// The pure-logic submodules shared between modules (also host-tested).
pub use hypercall::vmcall_abi;
pub use vmexit::exit_reason;

use core::sync::atomic::{AtomicBool, Ordering};

use eterna_core::{Arch, GuestMemoryError, InjectError, Vm};

pub use ept::Permissions;
pub use vcpu::VcpuContext;
pub use vmcs::VmxError;

/// The x86_64 implementation of the core's [`Arch`] boundary.
///
/// A unit struct: all state lives in hardware registers, the current VMCS
/// or module statics. Calls act on the physical CPU they run on and, for
/// guest state, on the vCPU currently loaded there.
#[derive(Clone, Copy, Debug, Default)]
pub struct X86_64;

impl Arch for X86_64 {
    fn console_write(&mut self, text: &str) {
        uart16550::write_locked(text);
    }

    fn virtual_counter(&self) -> u64 {
        timer::virtual_count()
    }

    fn counter_frequency(&self) -> u64 {
        timer::frequency()
    }

    fn inject_virtual_irq(&mut self, intid: u32) -> Result<(), InjectError> {
        apic::inject(intid)
    }

    fn arm_watchdog(&mut self, ticks: u64) {
        timer::arm_hyp_timer(ticks);
    }

    fn disarm_watchdog(&mut self) {
        timer::disarm_hyp_timer();
    }

    fn read_guest(&self, ipa: u64, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
        let mut ept = ept::STAGE2.lock();
        let mut done = 0;
        while done < buf.len() {
            let cursor = ipa + done as u64;
            let pa = ept.translate(cursor).ok_or(GuestMemoryError::Unmapped(cursor))?;
            let in_page = (ept::PAGE_SIZE - (cursor % ept::PAGE_SIZE)) as usize;
            let chunk = in_page.min(buf.len() - done);
            // SAFETY: `pa..pa + chunk` lies within one guest page that the
            // EPT maps, i.e. inside the guest window of the image, which the
            // hypervisor's identity map covers. The guest cannot run meanwhile.
            unsafe {
                core::ptr::copy_nonoverlapping(pa as *const u8, buf[done..].as_mut_ptr(), chunk);
            }
            done += chunk;
        }
        Ok(())
    }

    fn power_off(&mut self) -> ! {
        power_off()
    }
}

/// What the boot CPU learned about the machine, for the boot log. Field
/// names are shared with the AArch64 layer so `main.rs` prints the same.
#[derive(Clone, Copy, Debug)]
pub struct PlatformInfo {
    /// Privilege level the hypervisor runs at (CPL 0, VMX root operation).
    pub el: u64,
    /// CPUID.1:EAX of the boot CPU (family, model, stepping).
    pub midr: u64,
    /// TSC frequency in Hz.
    pub counter_hz: u64,
    /// Local APIC facts.
    pub gic: apic::GicInfo,
    /// Version of the CPU start-up protocol (MP specification 1.4).
    pub psci: (u16, u16),
}

/// Brings up the boot CPU: page tables, console, host IDT and TSS, APIC,
/// timers, and VT-x. Without VT-x this reports the reason on an
/// `[eterna]` line and powers off with [`smp::VMX_UNAVAILABLE_EXIT`].
///
/// # Safety
/// Call exactly once, first thing on the boot CPU.
pub unsafe fn init_primary() -> PlatformInfo {
    // SAFETY: first call on the boot CPU, no other CPU running.
    unsafe {
        paging::init_primary();
        boot::load_cpu_tables(0);
        vmexit::install_host_idt(true);
    }
    uart16550::init();
    // SAFETY: boot CPU, once, interrupts disabled.
    let gic = unsafe { apic::init() };
    timer::init_el2();
    boot_marker(format_args!("x86_64: long mode, paging, GDT/TSS and IDT up; 16550 console on COM1"));
    // SAFETY: boot CPU, host IDT loaded, local APIC enabled, interrupts off.
    let ticked = unsafe { timer::boot_tick_selftest() };
    boot_marker(format_args!(
        "x86_64: local APIC timer interrupt {}",
        if ticked { "received" } else { "NOT received" }
    ));
    apic::enable_ppi(timer::VIRTUAL_TIMER_INTID);
    apic::enable_ppi(timer::HYP_TIMER_INTID);
    if let Err(err) = vmcs::probe() {
        vmx_unavailable(err);
    }
    // SAFETY: probe succeeded; boot CPU, interrupts off.
    if let Err(err) = unsafe { vmcs::enable() } {
        vmx_unavailable(err);
    }
    let psci = smp::version().unwrap_or((0, 0));
    PlatformInfo {
        el: msr::current_privilege_level(),
        midr: u64::from(msr::cpuid(1, 0).eax),
        counter_hz: timer::frequency(),
        gic,
        psci,
    }
}

/// Prints a hypervisor-internal boot line.
fn boot_marker(args: core::fmt::Arguments<'_>) {
    let line = eterna_core::trace::prefixed_line(eterna_core::trace::HYP_PREFIX, args);
    uart16550::write_locked(line.as_str());
}

/// Reports that VT-x cannot be used and powers off with a distinct status.
fn vmx_unavailable(err: VmxError) -> ! {
    let line = eterna_core::trace::prefixed_line(
        eterna_core::trace::HYP_PREFIX,
        format_args!("vmx unavailable: {err}; powering off (exit code {:#x})", smp::VMX_UNAVAILABLE_EXIT),
    );
    uart16550::write_locked(line.as_str());
    smp::exit_with_status(smp::VMX_UNAVAILABLE_EXIT)
}

/// Set by each secondary CPU once it is up; index = logical CPU.
static CPU_ONLINE: [AtomicBool; boot::MAX_CPUS] = [const { AtomicBool::new(false) }; boot::MAX_CPUS];

/// Starts physical CPU `cpu` (APIC ID = `cpu`) with INIT-SIPI-SIPI and
/// waits until it reports in.
pub fn start_secondary(cpu: usize) -> Result<(), &'static str> {
    if cpu == 0 || cpu >= boot::MAX_CPUS {
        return Err("no such secondary CPU");
    }
    smp::cpu_on(cpu as u64, boot::secondary_entry_address(), cpu as u64).map_err(|_| "INIT-SIPI-SIPI refused")?;
    let deadline = timer::Deadline::after_ms(2000);
    while !CPU_ONLINE[cpu].load(Ordering::Acquire) {
        if deadline.expired() {
            return Err("secondary CPU did not report in (is the machine started with -smp 2?)");
        }
        core::hint::spin_loop();
    }
    Ok(())
}

/// Per-CPU setup on a secondary CPU; returns once the CPU may report in.
///
/// # Safety
/// Call once, first thing on the secondary CPU, after the boot CPU built
/// the page tables and IDT.
pub unsafe fn init_secondary() {
    let cpu = apic_cpu_index();
    // SAFETY: the boot CPU finished paging::init_primary and the IDT
    // before sending the start-up IPIs.
    unsafe {
        paging::init_secondary();
        boot::load_cpu_tables(cpu);
        vmexit::install_host_idt(false);
    }
    apic::init_secondary();
}

/// Logical CPU index of the caller (APIC IDs equal CPU numbers here).
fn apic_cpu_index() -> usize {
    (msr::cpuid(1, 0).ebx >> 24) as usize % boot::MAX_CPUS
}

/// Marks this secondary CPU online (the boot CPU is waiting for it).
pub fn mark_online(cpu: usize) {
    CPU_ONLINE[cpu].store(true, Ordering::Release);
}

/// Writes a complete line to the console, serialised with other CPUs.
pub fn console_write(text: &str) {
    uart16550::write_locked(text);
}

/// Writes to the console without taking its lock (panic path only).
pub fn console_write_unlocked(text: &str) {
    uart16550::write_unlocked(text);
}

/// Number of EPT tables in use, for the boot log.
pub fn stage2_tables_used() -> usize {
    ept::STAGE2.lock().tables_used()
}

/// Initial APIC ID of the CPU this runs on (the MPIDR counterpart).
pub fn mpidr() -> u64 {
    u64::from(msr::cpuid(1, 0).ebx >> 24)
}

/// Current privilege level (0: the hypervisor runs in ring 0).
pub fn current_el() -> u64 {
    msr::current_privilege_level()
}

/// Parks the calling CPU forever.
pub fn park() -> ! {
    smp::halt_forever()
}

/// Maps `[ipa, ipa + size)` of guest memory onto host memory at the same
/// address range plus `pa - ipa`, with `perms`.
pub fn map_guest(ipa: u64, pa: u64, size: u64, perms: Permissions) -> Result<(), ept::MapError> {
    ept::STAGE2.lock().map(ipa, pa, size, perms)
}

/// Configures VMX for the VM and runs `vm` until all vCPUs exit. Returns
/// the VM's exit code.
///
/// # Safety
/// Every RAM region of `vm` must be mapped with [`map_guest`], and each
/// context in `vcpus` must start inside guest code.
pub unsafe fn run_vm(vm: &mut Vm, vcpus: &mut [VcpuContext]) -> i64 {
    let root = ept::STAGE2.lock().root_address();
    // SAFETY: the tables at `root` are complete (caller's contract).
    unsafe { vmcs::configure(root) };
    timer::reset_virtual_offset();
    cache::invalidate_icache_all();
    // SAFETY: upheld by the caller.
    unsafe { vcpu::run(vm, vcpus) }
}

/// Switches the machine off (ACPI S5 / Bochs shutdown port / debug exit).
pub fn power_off() -> ! {
    smp::system_off()
}

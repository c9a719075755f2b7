//! The hypervisor's own page tables: an identity map of the low 4 GiB.
//!
//! The x86_64 counterpart of the AArch64 EL2 stage-1 MMU setup. `boot.rs`
//! already runs on a minimal identity map (long mode cannot be entered
//! without paging); this module replaces it with the final one:
//!
//! | VA = PA range               | contents on a PC                     | attributes        |
//! |-----------------------------|--------------------------------------|-------------------|
//! | `0x0000_0000..0xC000_0000`  | RAM (image, tables, guest window)    | WB, RW, executable |
//! | `0xC000_0000..0x1_0000_0000`| PCI hole: LAPIC, IOAPIC, HPET, BARs  | UC (PCD/PWT), RW, NX |
//!
//! 2 MiB pages throughout (one PML4, one PDPT, four page directories).
//! Execute-disable is applied to the device range when the CPU supports it
//! (EFER.NXE).

use core::cell::UnsafeCell;

use super::cache;
use super::ept::ept_entry::{pde_large, pte, pte_table, ENTRIES, LARGE_PAGE_SIZE};
use super::msr;

/// Bytes identity-mapped.
pub const MAPPED_BYTES: u64 = 4 << 30;
/// Start of the uncached device range.
pub const DEVICE_START: u64 = 0xC000_0000;

/// A 4 KiB-aligned page table.
#[repr(C, align(4096))]
struct Table(UnsafeCell<[u64; ENTRIES]>);

// SAFETY: the tables are written once by the boot CPU before any other CPU
// runs, and only read (by table walkers) afterwards.
unsafe impl Sync for Table {}

static PML4: Table = Table(UnsafeCell::new([0; ENTRIES]));
static PDPT: Table = Table(UnsafeCell::new([0; ENTRIES]));
static PD: [Table; 4] = [const { Table(UnsafeCell::new([0; ENTRIES])) }; 4];

/// Whether the CPU supports execute-disable (CPUID 80000001H:EDX[20]).
fn nx_supported() -> bool {
    msr::has_leaf(0x8000_0001) && msr::cpuid(0x8000_0001, 0).edx & (1 << 20) != 0
}

/// Physical (= virtual) address of the root table, for CR3 and the VMCS
/// host state.
pub fn root_address() -> u64 {
    PML4.0.get() as u64
}

/// Builds the identity map and switches the boot CPU to it.
///
/// # Safety
/// Must run once, on the boot CPU, before secondary CPUs start.
pub unsafe fn init_primary() {
    let nx = nx_supported();
    if nx {
        // SAFETY: setting EFER.NXE only makes bit 63 of entries meaningful;
        // the boot tables have it clear.
        unsafe { msr::wrmsr(msr::index::IA32_EFER, msr::rdmsr(msr::index::IA32_EFER) | (1 << 11)) };
    }
    // SAFETY: no other CPU runs yet and these tables are not in use, so
    // nothing else can observe them while they are filled.
    unsafe {
        let pml4 = &mut *PML4.0.get();
        let pdpt = &mut *PDPT.0.get();
        pml4[0] = pte_table(PDPT.0.get() as u64);
        for (gib, pd) in PD.iter().enumerate() {
            pdpt[gib] = pte_table(pd.0.get() as u64);
            let pd = &mut *pd.0.get();
            for (index, entry) in pd.iter_mut().enumerate() {
                let pa = ((gib as u64) << 30) | ((index as u64) * LARGE_PAGE_SIZE);
                let device = pa >= DEVICE_START;
                *entry = pde_large(pa, true, device);
                if device && nx {
                    *entry |= pte::NO_EXECUTE;
                }
            }
        }
    }
    // SAFETY: the new map covers everything the boot map covered with the
    // same addresses, so code, stack and data stay valid.
    unsafe { enable() };
}

/// Switches a secondary CPU to the map built by the boot CPU.
///
/// # Safety
/// [`init_primary`] must have completed on the boot CPU.
pub unsafe fn init_secondary() {
    if nx_supported() {
        // SAFETY: as in `init_primary`.
        unsafe { msr::wrmsr(msr::index::IA32_EFER, msr::rdmsr(msr::index::IA32_EFER) | (1 << 11)) };
    }
    // SAFETY: upheld by the caller.
    unsafe { enable() };
}

/// Loads CR3 with the identity map, enables global pages and flushes.
unsafe fn enable() {
    // SAFETY: the identity map covers the running code and stack.
    unsafe {
        msr::write_cr3(root_address());
        msr::write_cr0(msr::read_cr0() | (1 << 16)); // WP: honour read-only pages in ring 0
    }
    cache::tlbi_alle2();
}

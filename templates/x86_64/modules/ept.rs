//! Extended page tables: the guest's physical address space.
//!
//! The VT-x counterpart of AArch64 stage-2 translation. Guest physical
//! addresses are translated to host physical addresses through a 4-level
//! EPT (PML4 → PDPT → PD → PT, 4 KiB pages, 48-bit guest-physical space)
//! that the hypervisor owns. Guest RAM is mapped with 4 KiB pages so each
//! section of the guest image gets its own permissions; emulated devices
//! are left unmapped, so every access causes an EPT violation (exit reason
//! 48) that `vmexit.rs` emulates. The API matches the AArch64 `stage2`
//! module so the platform code is the same on both architectures.

use core::cell::UnsafeCell;
use core::fmt;

#[path = "ept_entry.rs"]
pub mod ept_entry;

use self::ept_entry::{ept, ept_leaf, ept_present, ept_table, level_index, MemoryType, ADDR_MASK};
use super::cache;
use crate::sync::SpinLock;

/// Bytes per page.
pub const PAGE_SIZE: u64 = 4096;
/// Guest-physical address bits covered by a 4-level EPT.
pub const IPA_BITS: u64 = 48;
/// Number of tables in the static pool (root + intermediate + leaf).
const POOL_TABLES: usize = 8;
/// EPT page-walk length.
pub const WALK_LEVELS: u64 = 4;

/// How a range is mapped for the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permissions {
    /// Code: read and execute.
    Executable,
    /// Constants: read only.
    ReadOnly,
    /// Data and stack: read and write, never execute.
    ReadWrite,
}

impl Permissions {
    /// The EPT leaf for `pa` with these permissions (write-back memory).
    pub const fn leaf(self, pa: u64) -> u64 {
        match self {
            Permissions::Executable => ept_leaf(pa, true, false, true, MemoryType::WriteBack),
            Permissions::ReadOnly => ept_leaf(pa, true, false, false, MemoryType::WriteBack),
            Permissions::ReadWrite => ept_leaf(pa, true, true, false, MemoryType::WriteBack),
        }
    }
}

/// Why a mapping failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Address or size not page aligned.
    Misaligned,
    /// Guest-physical address beyond [`IPA_BITS`].
    OutOfRange,
    /// The page is already mapped.
    AlreadyMapped(u64),
    /// The static table pool is exhausted.
    OutOfTables,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::Misaligned => f.write_str("range not page aligned"),
            MapError::OutOfRange => f.write_str("guest-physical address outside the EPT input range"),
            MapError::AlreadyMapped(gpa) => write!(f, "guest-physical address {gpa:#x} already mapped"),
            MapError::OutOfTables => f.write_str("out of EPT tables"),
        }
    }
}

#[repr(C, align(4096))]
struct Table([u64; 512]);

/// Backing store for all EPT tables.
struct Pool(UnsafeCell<[Table; POOL_TABLES]>);

// SAFETY: all access goes through `STAGE2`'s lock.
unsafe impl Sync for Pool {}

static POOL: Pool = Pool(UnsafeCell::new([const { Table([0; 512]) }; POOL_TABLES]));

/// The VM's extended page tables. Index 0 of the pool is the PML4.
pub struct Stage2 {
    used: usize,
}

/// The EPT type under its x86 name.
pub type Ept = Stage2;

/// The single VM's EPT.
pub static STAGE2: SpinLock<Stage2> = SpinLock::new(Stage2 { used: 1 });

impl Stage2 {
    fn table(&mut self, index: usize) -> &mut [u64; 512] {
        // SAFETY: `&mut self` comes from the lock guard, so this is the only
        // live reference into the pool; `index` is below POOL_TABLES.
        unsafe { &mut (*POOL.0.get())[index].0 }
    }

    fn table_index(pa: u64) -> usize {
        ((pa - POOL.0.get() as u64) / PAGE_SIZE) as usize
    }

    /// Physical address of the PML4 (for the EPTP).
    pub fn root_address(&self) -> u64 {
        POOL.0.get() as u64
    }

    /// The EPT pointer: write-back paging structures, 4-level walk, no
    /// accessed/dirty flags.
    pub fn eptp(&self) -> u64 {
        ept_entry::eptp(self.root_address(), MemoryType::WriteBack, WALK_LEVELS, false)
    }

    /// Returns the next-level table behind `entry` of `table`, allocating it
    /// if the entry is empty.
    fn next_table(&mut self, table: usize, entry: usize) -> Result<usize, MapError> {
        let desc = self.table(table)[entry];
        if ept_present(desc) {
            return Ok(Self::table_index(desc & ADDR_MASK));
        }
        if self.used == POOL_TABLES {
            return Err(MapError::OutOfTables);
        }
        let index = self.used;
        self.used += 1;
        // SAFETY: see `table`; the pool is identity mapped.
        let pa = unsafe { core::ptr::addr_of!((*POOL.0.get())[index]) } as u64;
        self.table(table)[entry] = ept_table(pa);
        Ok(index)
    }

    /// Maps `[ipa, ipa + size)` to `[pa, pa + size)` with 4 KiB pages.
    pub fn map(&mut self, ipa: u64, pa: u64, size: u64, perms: Permissions) -> Result<(), MapError> {
        if !ipa.is_multiple_of(PAGE_SIZE) || !pa.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
            return Err(MapError::Misaligned);
        }
        if ipa.checked_add(size).is_none_or(|end| end > 1 << IPA_BITS) {
            return Err(MapError::OutOfRange);
        }
        let mut offset = 0;
        while offset < size {
            let (page_ipa, page_pa) = (ipa + offset, pa + offset);
            let pdpt = self.next_table(0, level_index(page_ipa, 4))?;
            let pd = self.next_table(pdpt, level_index(page_ipa, 3))?;
            let pt = self.next_table(pd, level_index(page_ipa, 2))?;
            let slot = &mut self.table(pt)[level_index(page_ipa, 1)];
            if ept_present(*slot) {
                return Err(MapError::AlreadyMapped(page_ipa));
            }
            *slot = perms.leaf(page_pa);
            offset += PAGE_SIZE;
        }
        // The EPT walker snoops caches; a fence orders the table stores
        // before the next VM entry.
        cache::dsb_ishst();
        Ok(())
    }

    /// Removes the mappings of `[ipa, ipa + size)` (tables stay allocated)
    /// and invalidates cached translations.
    pub fn unmap(&mut self, ipa: u64, size: u64) -> Result<(), MapError> {
        if !ipa.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
            return Err(MapError::Misaligned);
        }
        let mut offset = 0;
        while offset < size {
            if let Some(slot) = self.leaf_slot(ipa + offset) {
                *slot = 0;
            }
            offset += PAGE_SIZE;
        }
        let eptp = self.eptp();
        if !cache::invept(cache::INVEPT_SINGLE_CONTEXT, eptp) {
            cache::invept(cache::INVEPT_ALL_CONTEXT, 0);
        }
        Ok(())
    }

    fn leaf_slot(&mut self, ipa: u64) -> Option<&mut u64> {
        if ipa >= 1 << IPA_BITS {
            return None;
        }
        let mut table = 0;
        for level in (2..=4).rev() {
            let desc = self.table(table)[level_index(ipa, level)];
            if !ept_present(desc) || desc & ept::LARGE_PAGE != 0 {
                return None;
            }
            table = Self::table_index(desc & ADDR_MASK);
        }
        Some(&mut self.table(table)[level_index(ipa, 1)])
    }

    /// Walks the tables like the hardware would and returns the host
    /// physical address for `ipa`, or `None` if it is unmapped.
    pub fn translate(&mut self, ipa: u64) -> Option<u64> {
        let leaf = *self.leaf_slot(ipa)?;
        if !ept_present(leaf) {
            return None;
        }
        Some((leaf & ADDR_MASK) | (ipa & (PAGE_SIZE - 1)))
    }

    /// Number of tables in use.
    pub fn tables_used(&self) -> usize {
        self.used
    }
}

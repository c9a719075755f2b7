//! Entry formats of the two kinds of x86_64 translation tables eterna
//! builds: extended page tables (EPT, SDM Vol. 3C 29.3.2) for the guest's
//! physical address space, and ordinary 4-level IA-32e paging entries
//! (SDM Vol. 3A 4.5) for the hypervisor's own identity map and the guest's
//! boot page tables.
//!
//! Pure logic: compiles for the bare-metal target and on the build host.

/// Bytes per 4 KiB page.
pub const PAGE_SIZE: u64 = 4096;
/// Bytes covered by a 2 MiB large page (a PDE with PS/bit 7 set).
pub const LARGE_PAGE_SIZE: u64 = 2 << 20;
/// Entries per table at every level.
pub const ENTRIES: usize = 512;
/// Physical-address field of table and page entries (bits 51:12).
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Physical-address field of a 2 MiB page entry (bits 51:21).
pub const LARGE_ADDR_MASK: u64 = 0x000f_ffff_ffe0_0000;

/// Index into the table of `level` for address `addr`; level 4 is the
/// root (PML4), level 1 the page table.
pub const fn level_index(addr: u64, level: u32) -> usize {
    ((addr >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

/// EPT paging-structure entry bits.
pub mod ept {
    /// Reads allowed.
    pub const READ: u64 = 1 << 0;
    /// Writes allowed.
    pub const WRITE: u64 = 1 << 1;
    /// Instruction fetches allowed (supervisor-mode fetches when
    /// mode-based execute control is off).
    pub const EXECUTE: u64 = 1 << 2;
    /// Leaf entries: EPT memory type in bits 5:3.
    pub const MEMORY_TYPE_SHIFT: u64 = 3;
    /// Leaf entries: ignore the guest's PAT memory type.
    pub const IGNORE_PAT: u64 = 1 << 6;
    /// PDE/PDPTE: the entry maps a 2 MiB/1 GiB page.
    pub const LARGE_PAGE: u64 = 1 << 7;
    /// Accessed flag (only with EPTP bit 6).
    pub const ACCESSED: u64 = 1 << 8;
    /// Dirty flag of leaf entries (only with EPTP bit 6).
    pub const DIRTY: u64 = 1 << 9;
    /// Non-leaf entries get every permission; leaves restrict.
    pub const TABLE: u64 = READ | WRITE | EXECUTE;
}

/// Memory types used in EPT leaves, the EPTP and PAT (SDM Vol. 3A 11.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MemoryType {
    Uncacheable = 0,
    WriteCombining = 1,
    WriteThrough = 4,
    WriteProtected = 5,
    WriteBack = 6,
}

/// An EPT leaf for `pa` with the given permissions and memory type.
pub const fn ept_leaf(
    pa: u64,
    read: bool,
    write: bool,
    execute: bool,
    memory_type: MemoryType,
) -> u64 {
    let mut entry =
        (pa & ADDR_MASK) | ((memory_type as u64) << ept::MEMORY_TYPE_SHIFT) | ept::IGNORE_PAT;
    if read {
        entry |= ept::READ;
    }
    if write {
        entry |= ept::WRITE;
    }
    if execute {
        entry |= ept::EXECUTE;
    }
    entry
}

/// An EPT entry pointing at the next-level table at `table_pa`.
pub const fn ept_table(table_pa: u64) -> u64 {
    (table_pa & ADDR_MASK) | ept::TABLE
}

/// Whether an EPT entry is present (any of read/write/execute set).
pub const fn ept_present(entry: u64) -> bool {
    entry & (ept::READ | ept::WRITE | ept::EXECUTE) != 0
}

/// Whether a write-only or write+execute-without-read combination would
/// make the entry an EPT misconfiguration (SDM Vol. 3C 29.3.3.1).
pub const fn ept_misconfigured(entry: u64) -> bool {
    entry & ept::WRITE != 0 && entry & ept::READ == 0
}

/// Builds an EPT pointer (SDM Vol. 3C 25.6.11): memory type in bits 2:0,
/// page-walk length minus one in bits 5:3, accessed/dirty enable in bit 6.
pub const fn eptp(
    pml4_pa: u64,
    memory_type: MemoryType,
    walk_levels: u64,
    accessed_dirty: bool,
) -> u64 {
    let ad = if accessed_dirty { 1 << 6 } else { 0 };
    (pml4_pa & ADDR_MASK) | ((walk_levels - 1) << 3) | ad | memory_type as u64
}

/// Decoded IA32_VMX_EPT_VPID_CAP (SDM Vol. 3D A.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptVpidCap {
    /// Bit 6: 4-level page walks.
    pub walk_length_4: bool,
    /// Bit 8: uncacheable EPT paging structures.
    pub memory_type_uc: bool,
    /// Bit 14: write-back EPT paging structures.
    pub memory_type_wb: bool,
    /// Bit 16: 2 MiB EPT pages.
    pub large_pages_2m: bool,
    /// Bit 21: accessed and dirty flags.
    pub accessed_dirty: bool,
    /// Bit 20: INVEPT exists.
    pub invept: bool,
    /// Bit 25: single-context INVEPT.
    pub invept_single_context: bool,
    /// Bit 26: all-context INVEPT.
    pub invept_all_context: bool,
    /// Bit 32: INVVPID exists.
    pub invvpid: bool,
    /// Bit 41: single-context INVVPID.
    pub invvpid_single_context: bool,
    /// Bit 42: all-context INVVPID.
    pub invvpid_all_context: bool,
}

impl EptVpidCap {
    /// Decodes the MSR value.
    pub const fn decode(value: u64) -> Self {
        const fn bit_of(value: u64, n: u32) -> bool {
            value & (1 << n) != 0
        }
        EptVpidCap {
            walk_length_4: bit_of(value, 6),
            memory_type_uc: bit_of(value, 8),
            memory_type_wb: bit_of(value, 14),
            large_pages_2m: bit_of(value, 16),
            accessed_dirty: bit_of(value, 21),
            invept: bit_of(value, 20),
            invept_single_context: bit_of(value, 25),
            invept_all_context: bit_of(value, 26),
            invvpid: bit_of(value, 32),
            invvpid_single_context: bit_of(value, 41),
            invvpid_all_context: bit_of(value, 42),
        }
    }
}

/// IA-32e paging entry bits (hypervisor identity map and guest boot tables).
pub mod pte {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITABLE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    /// Page-level write-through (PAT index bit 0).
    pub const PWT: u64 = 1 << 3;
    /// Page-level cache disable (PAT index bit 1).
    pub const PCD: u64 = 1 << 4;
    pub const ACCESSED: u64 = 1 << 5;
    pub const DIRTY: u64 = 1 << 6;
    /// PDE/PDPTE: maps a large page.
    pub const PAGE_SIZE: u64 = 1 << 7;
    pub const GLOBAL: u64 = 1 << 8;
    /// Execute disable (needs EFER.NXE).
    pub const NO_EXECUTE: u64 = 1 << 63;
}

/// A non-leaf paging entry pointing at `table_pa`, writable.
pub const fn pte_table(table_pa: u64) -> u64 {
    (table_pa & ADDR_MASK) | pte::PRESENT | pte::WRITABLE
}

/// A 2 MiB identity/large-page PDE for `pa`. `uncached` selects PCD|PWT
/// (PAT entry 3, UC with the power-on PAT) for MMIO; accessed and dirty
/// are preset so the CPU never has to write the entry.
pub const fn pde_large(pa: u64, writable: bool, uncached: bool) -> u64 {
    let mut entry =
        (pa & LARGE_ADDR_MASK) | pte::PRESENT | pte::PAGE_SIZE | pte::ACCESSED | pte::DIRTY;
    if writable {
        entry |= pte::WRITABLE;
    }
    if uncached {
        entry |= pte::PCD | pte::PWT;
    }
    entry
}

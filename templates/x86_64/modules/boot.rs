//! x86_64 entry: multiboot header, 32-bit protected-mode entry, switch to
//! long mode, descriptor tables and the first Rust functions.
//!
//! A multiboot (v1) loader — QEMU `-kernel`, GRUB, Bochs through GRUB —
//! enters `_start` in 32-bit protected mode with paging off, EAX =
//! `0x2BADB002` and EBX = the multiboot information. The header sets the
//! "address fields valid" flag (a.out kludge), so loaders that refuse ELF64
//! images (QEMU) load the file by the addresses in the header instead.
//!
//! `_start` then
//! 1. clears `.bss` (the boot page tables live there),
//! 2. checks for long mode (CPUID 80000001H:EDX.LM) and reports on COM1 if
//!    it is missing,
//! 3. identity-maps the first 4 GiB with 2 MiB pages (PML4 → PDPT → 4 PDs),
//! 4. sets CR4.PAE, CR3, EFER.LME and CR0.PG|WP, loads the GDT and far-
//!    returns into the 64-bit code segment,
//! 5. reloads the data segments, takes CPU 0's stack, enables SSE state
//!    (CR4.OSFXSR; the guest uses FXSAVE-managed state) and calls
//!    [`eterna_primary_entry`].
//!
//! Secondary CPUs come through the real-mode trampoline in `smp.rs` and
//! arrive at `eterna_secondary_start` in 64-bit mode on their own stack.

use core::arch::global_asm;

/// Size of each physical CPU's stack. The linker script reserves
/// `MAX_CPUS * STACK_SIZE` bytes below `__stacks_top`.
pub const STACK_SIZE: usize = 0x1_0000;
/// Physical CPUs with a stack (and a TSS).
pub const MAX_CPUS: usize = 2;

/// GDT selector of the 64-bit kernel code segment.
pub const KERNEL_CS: u16 = 0x08;
/// GDT selector of the kernel data segment.
pub const KERNEL_DS: u16 = 0x10;
/// GDT selector of CPU 0's TSS; CPU `n` uses `TSS_SELECTOR_BASE + 16 * n`.
pub const TSS_SELECTOR_BASE: u16 = 0x18;

/// Multiboot flags: bit 1 (memory information), bit 16 (header address
/// fields are valid: the a.out kludge).
const MULTIBOOT_FLAGS: u32 = (1 << 1) | (1 << 16);
/// Multiboot v1 header magic.
const MULTIBOOT_MAGIC: u32 = 0x1BAD_B002;

global_asm!(
    r#"
.section .text.boot, "ax"
.balign 4
.global eterna_multiboot_header
eterna_multiboot_header:
    .long {MB_MAGIC}
    .long {MB_FLAGS}
    .long -({MB_MAGIC} + {MB_FLAGS})
    .long eterna_multiboot_header
    .long __image_start
    .long __load_end
    .long __bss_end
    .long _start

.code32
.global _start
.type _start, @function
_start:
    cli
    cld
    mov     ebp, eax                    // multiboot magic
    mov     esp, offset __stacks_top

    // Zero .bss (16-byte aligned by the linker script). The multiboot
    // information (EBX) is not used: eterna needs no memory map.
    mov     edi, offset __bss_start
    mov     ecx, offset __bss_end
    sub     ecx, edi
    shr     ecx, 2
    xor     eax, eax
    rep stosd

    // Long mode available?
    mov     eax, 0x80000000
    cpuid
    cmp     eax, 0x80000001
    jb      .Lno_long_mode
    mov     eax, 0x80000001
    cpuid
    test    edx, 1 << 29
    jz      .Lno_long_mode

    // PML4[0] -> PDPT; PDPT[0..4] -> PD0..PD3; PDn: 512 x 2 MiB each.
    mov     eax, offset eterna_boot_pdpt
    or      eax, 0x3
    mov     dword ptr [eterna_boot_pml4], eax
    mov     eax, offset eterna_boot_pd
    or      eax, 0x3
    xor     ecx, ecx
1:  mov     dword ptr [eterna_boot_pdpt + ecx * 8], eax
    add     eax, 0x1000
    inc     ecx
    cmp     ecx, 4
    jb      1b
    mov     eax, 0x83                   // present, writable, 2 MiB page
    xor     ecx, ecx
2:  mov     dword ptr [eterna_boot_pd + ecx * 8], eax
    add     eax, 0x200000
    inc     ecx
    cmp     ecx, 2048
    jb      2b

    // PAE, page tables, EFER.LME, then paging (with WP) on.
    mov     eax, cr4
    or      eax, 1 << 5
    mov     cr4, eax
    mov     eax, offset eterna_boot_pml4
    mov     cr3, eax
    mov     ecx, 0xC0000080
    rdmsr
    or      eax, 1 << 8
    wrmsr
    mov     eax, cr0
    or      eax, 0x80010001
    mov     cr0, eax

    lgdt    [eterna_gdtr]
    push    {KERNEL_CS}
    mov     eax, offset .Llong_mode
    push    eax
    retf

.Lno_long_mode:
    mov     esi, offset .Lno_long_mode_message
    mov     dx, 0x3F8
3:  lodsb
    test    al, al
    jz      4f
    out     dx, al
    jmp     3b
4:  hlt
    jmp     4b

.code64
.Llong_mode:
    mov     ax, {KERNEL_DS}
    mov     ds, ax
    mov     es, ax
    mov     ss, ax
    xor     eax, eax
    mov     fs, ax
    mov     gs, ax
    lea     rsp, [rip + __stacks_top]
    call    eterna_enable_fp_state
    xor     ebp, ebp
    call    eterna_primary_entry
.Lpark:
    cli
    hlt
    jmp     .Lpark

// CR0: MP set, EM and TS clear; CR4: OSFXSR and OSXMMEXCPT. FXSAVE/FXRSTOR
// of guest state needs them even though the hypervisor itself is built
// without SSE.
eterna_enable_fp_state:
    mov     rax, cr0
    and     rax, ~0xC
    or      rax, 0x2
    mov     cr0, rax
    mov     rax, cr4
    or      rax, 0x600
    mov     cr4, rax
    ret

// Secondary CPUs: the trampoline enters here in 64-bit mode with RDI = CPU
// index and RSP = that CPU's stack top, still on the trampoline's GDT.
.global eterna_secondary_start
.type eterna_secondary_start, @function
eterna_secondary_start:
    lgdt    [rip + eterna_gdtr]
    push    {KERNEL_CS}
    lea     rax, [rip + 5f]
    push    rax
    retfq
5:  mov     ax, {KERNEL_DS}
    mov     ds, ax
    mov     es, ax
    mov     ss, ax
    xor     eax, eax
    mov     fs, ax
    mov     gs, ax
    call    eterna_enable_fp_state
    xor     ebp, ebp
    call    eterna_secondary_entry
    jmp     .Lpark

.section .rodata.eterna_boot, "a"
.Lno_long_mode_message:
    .asciz "[eterna] panic: CPU has no long mode (x86_64); cannot boot\r\n"

// GDT: null, 64-bit code, data, then one 16-byte TSS descriptor per CPU
// (filled in by `load_cpu_tables`).
.section .data.eterna_gdt, "aw"
.balign 16
.global eterna_gdt
eterna_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
    .fill {TSS_QUADS}, 8, 0
eterna_gdt_end:
.balign 8
.global eterna_gdtr
eterna_gdtr:
    .word eterna_gdt_end - eterna_gdt - 1
    .quad eterna_gdt

.section .bss.eterna_boot_tables, "aw", @nobits
.balign 4096
.global eterna_boot_pml4
eterna_boot_pml4:
    .skip 4096
eterna_boot_pdpt:
    .skip 4096
eterna_boot_pd:
    .skip 4 * 4096

.text
"#,
    MB_MAGIC = const MULTIBOOT_MAGIC,
    MB_FLAGS = const MULTIBOOT_FLAGS,
    KERNEL_CS = const KERNEL_CS,
    KERNEL_DS = const KERNEL_DS,
    TSS_QUADS = const MAX_CPUS * 2,
);

unsafe extern "C" {
    /// 64-bit entry of secondary CPUs (defined above).
    fn eterna_secondary_start();
    /// The GDT (defined above): 3 segment descriptors, then the TSSs.
    static mut eterna_gdt: [u64; 3 + 2 * MAX_CPUS];
}

/// Address the SMP trampoline jumps to once a secondary CPU is in long mode.
pub fn secondary_entry_address() -> u64 {
    eterna_secondary_start as *const () as usize as u64
}

/// 64-bit task-state segment: only the stack pointers for privilege and IST
/// switches; eterna never changes privilege, so all stay zero. VMX needs a
/// valid TR for the host state.
#[repr(C, packed)]
pub struct Tss {
    _reserved0: u32,
    /// RSP0..RSP2.
    pub rsp: [u64; 3],
    _reserved1: u64,
    /// IST1..IST7.
    pub ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    /// I/O permission bitmap offset (beyond the limit: no bitmap).
    pub iomap_base: u16,
}

const TSS_SIZE: usize = core::mem::size_of::<Tss>();
const _: () = assert!(TSS_SIZE == 104);

struct TssArray(core::cell::UnsafeCell<[Tss; MAX_CPUS]>);
// SAFETY: each CPU only touches its own entry, once, in `load_cpu_tables`.
unsafe impl Sync for TssArray {}

static TSS: TssArray = TssArray(core::cell::UnsafeCell::new(
    [const {
        Tss {
            _reserved0: 0,
            rsp: [0; 3],
            _reserved1: 0,
            ist: [0; 7],
            _reserved2: 0,
            _reserved3: 0,
            iomap_base: TSS_SIZE as u16,
        }
    }; MAX_CPUS],
));

/// TSS selector of CPU `cpu`.
pub const fn tss_selector(cpu: usize) -> u16 {
    TSS_SELECTOR_BASE + 16 * cpu as u16
}

/// Address of CPU `cpu`'s TSS.
pub fn tss_base(cpu: usize) -> u64 {
    // SAFETY: only the address is taken.
    unsafe { core::ptr::addr_of!((*TSS.0.get())[cpu]) as u64 }
}

/// Address and limit of the GDT, for the VMCS host state.
pub fn gdt_base() -> u64 {
    core::ptr::addr_of!(eterna_gdt) as u64
}

/// Installs CPU `cpu`'s TSS descriptor and loads TR.
///
/// # Safety
/// Call once per CPU, on that CPU, after the GDT is loaded.
pub unsafe fn load_cpu_tables(cpu: usize) {
    assert!(cpu < MAX_CPUS, "cpu{cpu} has no TSS");
    let base = tss_base(cpu);
    let limit = (TSS_SIZE - 1) as u64;
    // Available 64-bit TSS (type 9), present.
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x89 << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    let high = base >> 32;
    let slot = 3 + 2 * cpu;
    // SAFETY: the descriptor slots of this CPU are written only here, before
    // TR refers to them.
    unsafe {
        let gdt = core::ptr::addr_of_mut!(eterna_gdt) as *mut u64;
        gdt.add(slot).write_volatile(low);
        gdt.add(slot + 1).write_volatile(high);
        core::arch::asm!("ltr {0:x}", in(reg) tss_selector(cpu), options(nostack, preserves_flags));
    }
}

/// First Rust code on the boot CPU: 64-bit mode, identity map, stack and
/// clean `.bss`.
#[unsafe(no_mangle)]
extern "C" fn eterna_primary_entry() -> ! {
    crate::primary_main()
}

/// First Rust code on a secondary CPU: 64-bit mode on its own stack.
#[unsafe(no_mangle)]
extern "C" fn eterna_secondary_entry(cpu: u64) -> ! {
    crate::secondary_main(cpu as usize)
}

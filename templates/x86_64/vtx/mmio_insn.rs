//! Decoding of the guest instruction behind an EPT violation.
//!
//! An AArch64 data abort reports the access size and transfer register in
//! its syndrome (ESR.ISV). VT-x reports only the guest-physical address and
//! the access direction, so the hypervisor fetches the faulting instruction
//! and decodes it. Only what compiled MMIO accessors produce is supported:
//! `MOV` between a register or an immediate and memory, and `MOVZX` loads,
//! with legacy, operand-size and REX prefixes and any ModRM/SIB addressing
//! form. The memory address itself is not computed: the EPT violation
//! already reports it.
//!
//! Pure logic: compiles for the bare-metal target and on the build host.

/// Longest x86 instruction.
pub const MAX_INSN_LEN: usize = 15;

/// Where a store's data comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A general-purpose register (x86 number); with `high_byte`, the
    /// legacy AH/CH/DH/BH byte of register `n - 4`.
    Register { reg: u8, high_byte: bool },
    /// An immediate, already truncated/sign-extended to the access size.
    Immediate(u64),
}

/// What the instruction does with the emulated memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Load into `reg`. `zero_extend`: the whole 64-bit register is
    /// replaced (32-bit destinations and MOVZX); otherwise only the low
    /// `size` bytes change (8/16-bit MOV). `high_byte` as in [`Source`].
    Load {
        reg: u8,
        zero_extend: bool,
        high_byte: bool,
    },
    /// Store.
    Store(Source),
}

/// A decoded MMIO instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioInsn {
    /// Instruction length in bytes (RIP advance).
    pub len: u8,
    /// Access width in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// Direction and register/immediate.
    pub access: Access,
}

/// Why an instruction could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the instruction does.
    Truncated,
    /// An opcode other than the supported MOV forms.
    Unsupported(u8),
    /// ModRM names a register, so the instruction does not access memory.
    RegisterOperand,
}

/// Decodes the instruction at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<MmioInsn, DecodeError> {
    let byte = |i: usize| bytes.get(i).copied().ok_or(DecodeError::Truncated);
    let mut pos = 0;
    let mut operand16 = false;
    let mut rex = 0u8;
    // Legacy prefixes, then at most one REX immediately before the opcode.
    loop {
        match byte(pos)? {
            0x66 => operand16 = true,
            0x67 | 0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0xF0 => {}
            _ => break,
        }
        pos += 1;
        if pos >= MAX_INSN_LEN {
            return Err(DecodeError::Truncated);
        }
    }
    if (0x40..=0x4F).contains(&byte(pos)?) {
        rex = byte(pos)?;
        pos += 1;
    }
    let rex_w = rex & 0x8 != 0;
    let rex_r = (rex >> 2) & 1;
    let wide = if rex_w {
        8
    } else if operand16 {
        2
    } else {
        4
    };

    let opcode = byte(pos)?;
    pos += 1;
    // (access size, is store, immediate bytes, zero-extending load)
    let (size, store, imm_bytes, movzx) = match opcode {
        0x88 => (1, true, 0, false),
        0x89 => (wide, true, 0, false),
        0x8A => (1, false, 0, false),
        0x8B => (wide, false, 0, false),
        0xC6 => (1, true, 1, false),
        0xC7 => (wide, true, if wide == 2 { 2 } else { 4 }, false),
        0x0F => {
            let second = byte(pos)?;
            pos += 1;
            match second {
                0xB6 => (1, false, 0, true),
                0xB7 => (2, false, 0, true),
                other => return Err(DecodeError::Unsupported(other)),
            }
        }
        other => return Err(DecodeError::Unsupported(other)),
    };

    let modrm = byte(pos)?;
    pos += 1;
    let mode = modrm >> 6;
    let reg_low = (modrm >> 3) & 0b111;
    let rm = modrm & 0b111;
    if mode == 0b11 {
        return Err(DecodeError::RegisterOperand);
    }
    if rm == 0b100 {
        // SIB byte; base 101 with mod 00 means disp32 without a base.
        let sib = byte(pos)?;
        pos += 1;
        if mode == 0b00 && sib & 0b111 == 0b101 {
            pos += 4;
        }
    }
    pos += match (mode, rm) {
        (0b00, 0b101) => 4, // RIP-relative disp32
        (0b01, _) => 1,
        (0b10, _) => 4,
        _ => 0,
    };

    let reg = reg_low | (rex_r << 3);
    // Without REX, byte registers 4..7 are AH, CH, DH, BH.
    let byte_register = size == 1 && !movzx;
    let high_byte = byte_register && rex == 0 && (4..8).contains(&reg);
    let access = if store {
        if opcode == 0xC6 || opcode == 0xC7 {
            if reg_low != 0 {
                // C6/C7 with ModRM.reg != 0 are not MOV (XABORT/XBEGIN).
                return Err(DecodeError::Unsupported(opcode));
            }
            let mut imm: u64 = 0;
            for i in 0..imm_bytes {
                imm |= u64::from(byte(pos + i)?) << (8 * i);
            }
            pos += imm_bytes;
            // imm32 with REX.W is sign-extended to 64 bits.
            if size == 8 && imm & 0x8000_0000 != 0 {
                imm |= 0xffff_ffff_0000_0000;
            }
            Access::Store(Source::Immediate(imm))
        } else {
            Access::Store(Source::Register {
                reg: if high_byte { reg - 4 } else { reg },
                high_byte,
            })
        }
    } else {
        let zero_extend = movzx || size >= 4;
        Access::Load {
            reg: if high_byte { reg - 4 } else { reg },
            zero_extend,
            high_byte,
        }
    };
    if pos > MAX_INSN_LEN || pos > bytes.len() {
        return Err(DecodeError::Truncated);
    }
    Ok(MmioInsn {
        len: pos as u8,
        size: size as u8,
        access,
    })
}

/// Mask of an access of `size` bytes.
pub const fn size_mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size as u32 * 8)) - 1
    }
}

/// The value a store writes, given the register file (x86 numbering).
pub fn store_value(insn: &MmioInsn, gprs: &[u64; 16]) -> Option<u64> {
    match insn.access {
        Access::Store(Source::Immediate(imm)) => Some(imm & size_mask(insn.size)),
        Access::Store(Source::Register { reg, high_byte }) => {
            let value = gprs[reg as usize & 0xf];
            let value = if high_byte { value >> 8 } else { value };
            Some(value & size_mask(insn.size))
        }
        Access::Load { .. } => None,
    }
}

/// The new value of the destination register after a load of `value`
/// into a register that held `old`.
pub fn merge_load(insn: &MmioInsn, old: u64, value: u64) -> u64 {
    let value = value & size_mask(insn.size);
    match insn.access {
        Access::Load {
            zero_extend: true, ..
        } => value,
        Access::Load {
            high_byte: true, ..
        } => (old & !0xff00) | (value << 8),
        Access::Load { .. } => (old & !size_mask(insn.size)) | value,
        Access::Store(_) => old,
    }
}

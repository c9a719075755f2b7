//! 16550 UART driver (COM1), transmit side only.
//!
//! PC-compatible machines (QEMU `pc`/`q35`, Bochs) put the first serial
//! port at I/O port `0x3F8`; with `-serial stdio` / `-nographic` (QEMU) or
//! `com1: enabled=1, mode=file` (Bochs) it reaches the host. The hypervisor
//! owns the UART: the guest never gets I/O access (unconditional I/O
//! exiting) and prints through the `PRINT` hypercall instead.

use super::msr::{inb, outb};
use crate::sync::SpinLock;

/// I/O base of COM1.
pub const COM1_BASE: u16 = 0x3F8;
/// The console's base under the name the AArch64 layer uses for its UART.
pub const PL011_BASE: usize = COM1_BASE as usize;

/// Transmit holding register (DLAB = 0) / divisor latch low (DLAB = 1).
const THR: u16 = 0;
/// Interrupt enable (DLAB = 0) / divisor latch high (DLAB = 1).
const IER: u16 = 1;
/// FIFO control (write).
const FCR: u16 = 2;
/// Line control.
const LCR: u16 = 3;
/// Modem control.
const MCR: u16 = 4;
/// Line status.
const LSR: u16 = 5;

/// LCR: divisor latch access.
const LCR_DLAB: u8 = 1 << 7;
/// LCR: 8 data bits, no parity, 1 stop bit.
const LCR_8N1: u8 = 0b11;
/// FCR: enable and clear both FIFOs, 14-byte receive trigger.
const FCR_ENABLE_CLEAR: u8 = 0xC7;
/// MCR: DTR, RTS, OUT2.
const MCR_DTR_RTS_OUT2: u8 = 0x0B;
/// LSR: transmit holding register empty.
const LSR_THRE: u8 = 1 << 5;
/// Divisor for 115200 baud from the 1.8432 MHz reference clock.
const DIVISOR_115200: u16 = 1;
/// Polls of LSR before a byte is sent anyway, so a missing UART (no COM1
/// on the board) cannot hang the hypervisor.
const MAX_POLLS: u32 = 100_000;

/// A 16550-compatible UART at a fixed I/O base.
pub struct Uart16550 {
    base: u16,
}

/// The UART type under the name the AArch64 layer uses.
pub type Pl011 = Uart16550;

// Implemented through the AArch64 name so that the port's item comparison
// (which pairs `Type::method`) finds every method of `Pl011`.
impl Pl011 {
    /// A handle for the UART at I/O port `base`.
    ///
    /// # Safety
    /// `base` must be the I/O base of a 16550-compatible UART that nobody
    /// else drives.
    pub const unsafe fn new(base: usize) -> Self {
        Uart16550 { base: base as u16 }
    }

    fn write(&mut self, register: u16, value: u8) {
        // SAFETY: `new`'s contract makes `base + register` a register of our UART.
        unsafe { outb(self.base + register, value) };
    }

    fn read(&self, register: u16) -> u8 {
        inb(self.base + register)
    }

    /// Programs 115200 8N1 with FIFOs, interrupts off.
    pub fn init(&mut self) {
        self.write(IER, 0);
        self.write(LCR, LCR_DLAB);
        self.write(THR, DIVISOR_115200 as u8);
        self.write(IER, (DIVISOR_115200 >> 8) as u8);
        self.write(LCR, LCR_8N1);
        self.write(FCR, FCR_ENABLE_CLEAR);
        self.write(MCR, MCR_DTR_RTS_OUT2);
    }

    /// Sends one byte, waiting (bounded) for the transmitter.
    pub fn write_byte(&mut self, byte: u8) {
        let mut polls = 0;
        while self.read(LSR) & LSR_THRE == 0 && polls < MAX_POLLS {
            core::hint::spin_loop();
            polls += 1;
        }
        self.write(THR, byte);
    }

    /// Sends a string, turning `\n` into `\r\n` for terminals.
    pub fn write_str(&mut self, text: &str) {
        for byte in text.bytes() {
            if byte == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(byte);
        }
    }

    /// Waits until the transmitter has sent everything (before power-off,
    /// so the last line is not lost).
    pub fn drain(&self) {
        const LSR_TEMT: u8 = 1 << 6;
        let mut polls = 0;
        while self.read(LSR) & LSR_TEMT == 0 && polls < MAX_POLLS {
            core::hint::spin_loop();
            polls += 1;
        }
    }
}

/// The console shared by all physical CPUs.
// SAFETY (of `Uart16550::new`): COM1 sits at 0x3F8 on PC-compatible
// machines and only this driver uses it.
pub static CONSOLE: SpinLock<Uart16550> = SpinLock::new(unsafe { Uart16550::new(PL011_BASE) });

/// Initialises the console UART.
pub fn init() {
    CONSOLE.lock().init();
}

/// Writes `text` atomically with respect to other CPUs' lines.
pub fn write_locked(text: &str) {
    CONSOLE.lock().write_str(text);
}

/// Writes `text` without taking the lock; for the panic path only.
pub fn write_unlocked(text: &str) {
    // SAFETY: the UART handle is just a port number; concurrent use can at
    // worst interleave characters, which is acceptable while panicking.
    unsafe { CONSOLE.force_get() }.write_str(text);
}

/// Waits for the transmitter to drain (used before powering off).
pub fn drain() {
    // SAFETY: only reads the line status register.
    unsafe { CONSOLE.force_get() }.drain();
}

//! A polled 16550 UART on an I/O port (COM1 is 0x3F8): the console an x86_64 port
//! has where an ARM64 one has a PL011.

use super::instr::{inb, outb};

/// COM1's I/O base.
pub const COM1: u16 = 0x3f8;

/// A 16550 at an I/O base.
#[derive(Clone, Copy, Debug)]
pub struct Uart16550 {
    base: u16,
}

impl Uart16550 {
    /// The UART at I/O base `base`.
    pub const fn new(base: u16) -> Self {
        Self { base }
    }

    /// 115200 baud, 8N1, FIFOs on, interrupts off.
    pub fn init(&self) {
        // SAFETY: the caller owns this UART's ports.
        unsafe {
            outb(self.base + 1, 0x00);
            outb(self.base + 3, 0x80);
            outb(self.base, 0x01);
            outb(self.base + 1, 0x00);
            outb(self.base + 3, 0x03);
            outb(self.base + 2, 0xc7);
            outb(self.base + 4, 0x03);
        }
    }

    /// Sends one byte, waiting (boundedly) for room in the transmitter.
    pub fn write_byte(&self, b: u8) {
        for _ in 0..100_000 {
            // SAFETY: reading the line status register has no side effect.
            if unsafe { inb(self.base + 5) } & 0x20 != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        // SAFETY: the transmitter holding register takes the byte.
        unsafe { outb(self.base, b) };
    }

    /// Sends `s`, with `\n` as `\r\n`.
    pub fn write_str(&self, s: &str) {
        for b in s.bytes() {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
    }

    /// The next received byte, if one is waiting.
    pub fn read_byte(&self) -> Option<u8> {
        // SAFETY: reading the line status and receive registers of our UART.
        unsafe { (inb(self.base + 5) & 1 != 0).then(|| inb(self.base)) }
    }
}

impl core::fmt::Write for Uart16550 {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        Uart16550::write_str(self, s);
        Ok(())
    }
}

//! What stackproof knows of the x86-64 Linux kernel's stacks, written once:
//! the address-space split, stack sizes, where an IRQ stack keeps the stack it
//! interrupted, which ranges a CPU's chain crosses.

pub mod entry;
pub mod task;

use crate::memory::Memory;
use crate::symbols::Symbols;

/// The lowest kernel address (the upper half of the canonical space).
pub const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;
/// One past the highest user address (47-bit user space).
pub const USER_END: u64 = 0x0000_8000_0000_0000;
/// Task stacks: 16 KiB (since 3.15), THREAD_SIZE-aligned.
pub const THREAD_SIZE: u64 = 0x4000;
/// IRQ stacks: 16 KiB, page-aligned only (vmapped since 5.x).
pub const IRQ_STACK_SIZE: u64 = 0x4000;
/// Exception (IST) stacks: NMI, #DB, #DF, #MC: one page each in the CPU entry area.
pub const IST_STACK_SIZE: u64 = 0x1000;
/// The CPU entry area (IST stacks, entry stack): `CPU_ENTRY_AREA_BASE` of 4.15+.
pub const CPU_ENTRY_AREA: std::ops::Range<u64> = 0xffff_fe00_0000_0000..0xffff_fe80_0000_0000;
/// How far from the frames known a pt_regs is looked for: above a frame's sp when the
/// layout gives up, beyond the slots of a crash `bt` that misread one.
pub const PT_REGS_WINDOW: u64 = 0x400;
/// x86-64's kernel text and module mapping (with KASLR too): kernel code lies at or
/// above this; the direct map, vmalloc space and the stacks lie below.
pub const CODE_START: u64 = 0xffff_ffff_8000_0000;

pub fn is_kernel(addr: u64) -> bool {
    addr >= KERNEL_HALF
}

/// Is a CPU whose registers are `cs` and `pc` in user mode (`cs & 3 == 3`, or a user pc)?
pub fn user_mode(cs: u64, pc: u64) -> bool {
    cs & 3 == 3 || pc < USER_END
}

/// Stack pointers an IRQ stack's top may have saved for the frame at `sp`, each with the
/// address of the word that held it. 6.1's call_on_irqstack: `mov %rsp, (tos); mov tos,
/// %rsp; call func; pop %rsp`, so at the handler's frame (sp = tos) the word at sp is the
/// interrupted stack pointer; older kernels keep it in the top word of the (16 KiB or
/// page) block.
pub fn previous_stacks<M: Memory>(mem: &M, sp: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    if !is_kernel(sp) {
        return out;
    }
    let tops = [Some(sp), (sp | (THREAD_SIZE - 1)).checked_sub(7), (sp | 0xfff).checked_sub(7)];
    for top in tops.into_iter().flatten() {
        if let Ok(prev) = mem.read_u64(top) {
            if is_kernel(prev)
                && prev & 7 == 0
                && (prev ^ sp) >= THREAD_SIZE
                && prev != sp
                && !out.iter().any(|(_, p)| *p == prev)
            {
                out.push((top, prev));
            }
        }
    }
    out
}

/// A stack to scan for register sets, with the stack pointer live on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackRange {
    pub lo: u64,
    pub hi: u64,
    pub live_sp: u64,
}

/// The stack holding kernel address `a` when nothing else is known: a page of the CPU
/// entry area (IST stacks), else the THREAD_SIZE-aligned block (task stacks).
pub fn stack_around(a: u64) -> (u64, u64) {
    let size = if CPU_ENTRY_AREA.contains(&a) { IST_STACK_SIZE } else { THREAD_SIZE };
    let lo = a & !(size - 1);
    (lo, lo.saturating_add(size))
}

/// Symbols of any kind (data, markers) the kernel checks look up by name.
pub const MARKERS: [&str; 4] = ["_sinittext", "_einittext", "__init_begin", "__init_end"];

/// Size of `struct pt_regs`: the top of every task stack holds one.
pub const PT_REGS_SIZE: u64 = crate::regs::ptregs::SIZE;

/// The return-address slot of a kernel task stack's outermost frame: just below the
/// pt_regs at the top (`secondary_startup_64` pushes `.Lafter_lret` there itself, with
/// no call; `ret_from_fork` calls a kernel thread's function from there).
pub fn is_stack_bottom_slot(slot: u64) -> bool {
    is_kernel(slot) && slot.wrapping_add(8 + PT_REGS_SIZE).is_multiple_of(THREAD_SIZE)
}

/// A return address the layout's slot holds that no call can vouch for but the kernel's
/// stacks explain: the bottom frame's (pushed by the code itself), or one in freed init
/// code the file cannot give back.
pub fn unverifiable_ra<S: Symbols>(syms: &S, slot: u64, ra: u64) -> bool {
    let in_code = is_kernel(ra) && ra.checked_sub(1).and_then(|a| syms.lookup(a)).is_some();
    in_code && (is_stack_bottom_slot(slot) || code_freed_unknown(syms, ra))
}

/// The kernel's init text (`_sinittext`..`_einittext`, or `__init_begin`..`__init_end`),
/// freed after boot and its pages reused.
pub fn init_text<S: Symbols>(syms: &S) -> Option<std::ops::Range<u64>> {
    let pair = |a: &str, b: &str| Some(syms.address_of(a)?..syms.address_of(b)?).filter(|r| r.start < r.end);
    pair("_sinittext", "_einittext").or_else(|| pair("__init_begin", "__init_end"))
}

/// Code at `addr` memory cannot vouch for: init text, and no file bytes to read it from
/// (the verdict there is `unknown`, `code-freed`, never `bogus`).
pub fn code_freed_unknown<S: Symbols>(syms: &S, addr: u64) -> bool {
    init_text(syms).is_some_and(|r| r.contains(&addr)) && !syms.file_code(addr, &mut [0u8; 1])
}

/// Target memory with a kernel's freed init text read from the object file: where the
/// file has the bytes and memory no longer holds them (unreadable, or a page whose bytes
/// are mostly not the file's: reused after `free_initmem`), the file's bytes are what ran.
pub struct InitCode<'a, M, S> {
    mem: &'a M,
    syms: &'a S,
    init: Option<std::ops::Range<u64>>,
    /// Per page: is it freed (memory is not the file's code)?
    freed: std::cell::RefCell<std::collections::HashMap<u64, bool>>,
}

impl<'a, M: Memory, S: Symbols> InitCode<'a, M, S> {
    pub fn new(mem: &'a M, syms: &'a S) -> Self {
        InitCode { mem, syms, init: init_text(syms), freed: Default::default() }
    }

    fn page_freed(&self, page: u64) -> bool {
        if let Some(&f) = self.freed.borrow().get(&page) {
            return f;
        }
        let mut file = vec![0u8; crate::memory::PAGE as usize];
        let mut mem = vec![0u8; crate::memory::PAGE as usize];
        let f = if !self.syms.file_code(page, &mut file) {
            false
        } else if self.mem.read(page, &mut mem).is_err() {
            true
        } else {
            // Alternatives and static calls patch a few bytes; reused pages differ throughout.
            file.iter().zip(&mem).filter(|(a, b)| a != b).count() * 4 > file.len()
        };
        self.freed.borrow_mut().insert(page, f);
        f
    }
}

impl<M: Memory, S: Symbols> Memory for InitCode<'_, M, S> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), crate::memory::ReadError> {
        let end = addr.saturating_add(buf.len() as u64);
        let Some(init) = self.init.as_ref().filter(|r| addr < r.end && end > r.start) else {
            return self.mem.read(addr, buf);
        };
        if !(addr >= init.start && end <= init.end) {
            return self.mem.read(addr, buf);
        }
        // Page by page: each page is freed or not on its own.
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr + done as u64;
            let page = a & !(crate::memory::PAGE - 1);
            let n = ((page + crate::memory::PAGE - a) as usize).min(buf.len() - done);
            let chunk = &mut buf[done..done + n];
            if !(self.page_freed(page) && self.syms.file_code(a, chunk)) {
                self.mem.read(a, chunk)?;
            }
            done += n;
        }
        Ok(())
    }
    fn memo(&self) -> Option<&crate::memo::Memo> {
        self.mem.memo()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Regions;

    #[test]
    fn irq_stack_top_names_the_interrupted_stack() {
        // irq CPU 1 (tests/fixtures/kernel/NOTES.md): [ffffc900000d0ff8] = ffffc9000043ba40.
        let mut m = Regions::new();
        m.add_u64s(0xffffc900000d0fe0, &[0xffffc9000043ba58, 0, 0xffffffff819fe439, 0xffffc9000043ba40]);
        assert_eq!(previous_stacks(&m, 0xffffc900000d0ff8), vec![(0xffffc900000d0ff8, 0xffffc9000043ba40)]);
        // Below the top: the word at sp (any pointer to another stack) comes first, then the top word.
        let below = previous_stacks(&m, 0xffffc900000d0fe8);
        assert_eq!(below, vec![(0xffffc900000d0ff8, 0xffffc9000043ba40)]);
        // A pointer into the same stack block is a saved frame pointer or a local, not a switch.
        m.add_u64s(0xffffc900000d0fe8, &[0xffffc900000d0f00]);
        assert_eq!(previous_stacks(&m, 0xffffc900000d0fe8), below);
        assert!(previous_stacks(&m, 0x7ffc_0000_0ff8).is_empty());
    }

    #[test]
    fn default_stack_blocks() {
        assert_eq!(stack_around(0xffffc9000043ba58), (0xffffc90000438000, 0xffffc9000043c000));
        assert_eq!(stack_around(0xfffffe0000010f58), (0xfffffe0000010000, 0xfffffe0000011000));
    }

    #[test]
    fn stack_bottom_slots() {
        // idle (tests/fixtures/kernel/README.md): init_stack ffffffff82a00000, CPU 1's stack ffffc90000098000.
        assert!(is_stack_bottom_slot(0xffffffff82a03f50));
        assert!(is_stack_bottom_slot(0xffffc9000009bf50));
        assert!(!is_stack_bottom_slot(0xffffc9000009bf58));
        assert!(!is_stack_bottom_slot(0x7ffc_0000_3f50));
    }

    /// Memory whose init page was reused, a file with the code: the file's bytes are read;
    /// a page that matches the file (a few patched bytes) keeps memory's.
    #[test]
    fn freed_init_code_comes_from_the_file() {
        use crate::symbols::{Symbol, SymbolTable};
        struct WithFile(SymbolTable, Vec<u8>);
        impl Symbols for WithFile {
            fn lookup(&self, a: u64) -> Option<Symbol> {
                self.0.lookup(a)
            }
            fn address_of(&self, n: &str) -> Option<u64> {
                match n {
                    "_sinittext" => Some(0xffffffff83000000),
                    "_einittext" => Some(0xffffffff83002000),
                    _ => None,
                }
            }
            fn file_code(&self, a: u64, buf: &mut [u8]) -> bool {
                let off = a.wrapping_sub(0xffffffff83000000) as usize;
                match self.1.get(off..off + buf.len()) {
                    Some(b) => {
                        buf.copy_from_slice(b);
                        true
                    }
                    None => false,
                }
            }
        }
        let file: Vec<u8> = (0..0x2000u32).map(|i| (i % 251) as u8).collect();
        let mut m = Regions::new();
        m.add(0xffffffff83000000, vec![0xcc; 0x1000]); // reused page
        let mut patched = file[0x1000..].to_vec();
        patched[0x10] = 0x90; // an alternative patched in place
        m.add(0xffffffff83001000, patched);
        let syms = WithFile(SymbolTable::default(), file.clone());
        let code = InitCode::new(&m, &syms);
        let mut b = [0u8; 0x20];
        code.read(0xffffffff83000ff0, &mut b).unwrap();
        assert_eq!(&b[..0x10], &file[0xff0..0x1000], "freed page: the file's bytes");
        assert_eq!(b[0x10..], m_bytes(&m, 0xffffffff83001000, 0x10)[..], "live page: memory's");
        assert!(!code_freed_unknown(&syms, 0xffffffff83000010), "the file has the bytes");
        let symbol_only = WithFile(SymbolTable::default(), Vec::new());
        assert!(code_freed_unknown(&symbol_only, 0xffffffff83000010));
        assert!(!code_freed_unknown(&symbol_only, 0xffffffff81000010), "not init text");
    }

    fn m_bytes(m: &Regions, a: u64, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        m.read(a, &mut b).unwrap();
        b
    }
}

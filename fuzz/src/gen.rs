//! Inputs: a seeded generator, synthetic memory (text with calls and return
//! addresses, stacks with loops and holes), symbol tables with odd names, and
//! mutations of real files.

use stackproof::memory::{Memory, ReadError, PAGE};
use stackproof::symbols::{Symbol, SymbolTable};

/// xorshift64*: small, fast, and the same on every machine.
pub struct Rng(std::cell::Cell<u64>);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(std::cell::Cell::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xd1b5_4a32_d192_ed03 | 1))
    }
    pub fn next(&self) -> u64 {
        let mut x = self.0.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (0 when n is 0).
    pub fn below(&self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    pub fn chance(&self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T>(&self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    pub fn bytes(&self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Memory as explicit, non-overlapping segments; reads are exact (the ground truth).
#[derive(Clone, Default)]
pub struct Mem {
    segs: Vec<(u64, Vec<u8>)>,
}

impl Mem {
    /// Add bytes; a later segment replaces what it overlaps.
    pub fn add(&mut self, addr: u64, bytes: Vec<u8>) {
        let end = addr.saturating_add(bytes.len() as u64);
        if end == addr {
            return;
        }
        self.remove(addr, end - addr);
        self.segs.push((addr, bytes[..(end - addr) as usize].to_vec()));
        self.segs.sort_by_key(|s| s.0);
    }

    pub fn add_u64s(&mut self, addr: u64, words: &[u64]) {
        self.add(addr, words.iter().flat_map(|w| w.to_le_bytes()).collect());
    }

    /// Make `[addr, addr + len)` unreadable.
    pub fn remove(&mut self, addr: u64, len: u64) {
        let end = addr.saturating_add(len);
        let mut out = Vec::new();
        for (s, b) in self.segs.drain(..) {
            let e = s + b.len() as u64;
            if e <= addr || s >= end {
                out.push((s, b));
                continue;
            }
            if s < addr {
                out.push((s, b[..(addr - s) as usize].to_vec()));
            }
            if e > end {
                out.push((end, b[(end - s) as usize..].to_vec()));
            }
        }
        self.segs = out;
    }

    pub fn readable(&self, addr: u64) -> bool {
        self.byte(addr).is_some()
    }

    pub fn byte(&self, addr: u64) -> Option<u8> {
        let i = self.segs.partition_point(|s| s.0 <= addr);
        let (s, b) = self.segs.get(i.checked_sub(1)?)?;
        b.get(usize::try_from(addr - s).ok()?).copied()
    }

    pub fn u64_at(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b).ok()?;
        Some(u64::from_le_bytes(b))
    }
}

/// The same memory, but it does not tell its readable ranges: the core must probe (as with gdb).
pub struct Opaque<'a>(pub &'a Mem);

impl Memory for Opaque<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        self.0.read(addr, buf)
    }
}

impl Memory for Mem {
    fn readable_ranges(&self, lo: u64, hi: u64) -> Option<Vec<(u64, u64)>> {
        Some(stackproof::memory::clip_ranges(self.segs.iter().map(|(s, b)| (*s, s + b.len() as u64)), lo, hi))
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr.checked_add(done as u64).ok_or(ReadError { addr })?;
            let i = self.segs.partition_point(|s| s.0 <= a);
            let Some((s, b)) = i.checked_sub(1).and_then(|i| self.segs.get(i)) else {
                return Err(ReadError { addr: a });
            };
            let off = (a - s) as usize;
            if off >= b.len() {
                return Err(ReadError { addr: a });
            }
            let take = (b.len() - off).min(buf.len() - done);
            buf[done..done + take].copy_from_slice(&b[off..off + take]);
            done += take;
        }
        Ok(())
    }
}

pub const USER_TEXT: u64 = 0x5555_5555_4000;
pub const KERNEL_TEXT: u64 = 0xffff_ffff_8100_0000;
pub const USER_STACK: u64 = 0x7fff_ffff_0000;
pub const KERNEL_STACK: u64 = 0xffff_c900_0040_0000;

/// Instruction shapes the layout engine meets in prologues, bodies and epilogues.
const PIECES: &[&[u8]] = &[
    &[0x55],                                     // push %rbp
    &[0x48, 0x89, 0xe5],                         // mov %rsp,%rbp
    &[0x53],                                     // push %rbx
    &[0x41, 0x54],                               // push %r12
    &[0x41, 0x55],                               // push %r13
    &[0x48, 0x83, 0xec, 0x18],                   // sub $0x18,%rsp
    &[0x48, 0x81, 0xec, 0x00, 0x10, 0x00, 0x00], // sub $0x1000,%rsp
    &[0x48, 0x83, 0xe4, 0xf0],                   // and $-16,%rsp
    &[0x48, 0x83, 0xc4, 0x18],                   // add $0x18,%rsp
    &[0x5b],                                     // pop %rbx
    &[0x41, 0x5c],                               // pop %r12
    &[0x5d],                                     // pop %rbp
    &[0xc9],                                     // leave
    &[0xc3],                                     // ret
    &[0x90],                                     // nop
    &[0x85, 0xff],                               // test %edi,%edi
    &[0x31, 0xc0],                               // xor %eax,%eax
    &[0x48, 0x89, 0xfb],                         // mov %rdi,%rbx
    &[0x0f, 0x0b],                               // ud2
    &[0xff, 0xd0],                               // call *%rax
    &[0xff, 0x53, 0x10],                         // call *0x10(%rbx)
    &[0xff, 0x15, 0x10, 0x00, 0x00, 0x00],       // call *0x10(%rip)
    &[0xff, 0xe0],                               // jmp *%rax
    &[0x48, 0x8b, 0x04, 0x24],                   // mov (%rsp),%rax
    &[0x48, 0x89, 0xc4],                         // mov %rax,%rsp
    &[0xf3, 0x0f, 0x1e, 0xfa],                   // endbr64
    &[0x0f, 0x01, 0xf8],                         // swapgs
    &[0x48, 0xcf],                               // iretq
];

/// Function-like code at `base`: pieces, direct calls / jumps / branches into
/// `[lo, hi)`, a little noise. Returns the bytes and the return addresses of its calls.
pub fn code(rng: &mut Rng, base: u64, len: usize, lo: u64, hi: u64) -> (Vec<u8>, Vec<u64>) {
    let mut out = Vec::with_capacity(len + 16);
    let mut ras = Vec::new();
    while out.len() < len {
        let here = base.wrapping_add(out.len() as u64);
        match rng.below(12) {
            0 | 1 => {
                // call rel32 to somewhere in [lo, hi)
                let t = lo.wrapping_add(rng.below(hi.wrapping_sub(lo).max(1)));
                let rel = t.wrapping_sub(here.wrapping_add(5)) as i64 as i32;
                out.push(0xe8);
                out.extend_from_slice(&rel.to_le_bytes());
                ras.push(here.wrapping_add(5));
            }
            2 => {
                // jmp / jcc rel8 or rel32 nearby or far
                let far = rng.chance(30);
                if far {
                    let t = lo.wrapping_add(rng.below(hi.wrapping_sub(lo).max(1)));
                    let rel = t.wrapping_sub(here.wrapping_add(5)) as i64 as i32;
                    out.push(0xe9);
                    out.extend_from_slice(&rel.to_le_bytes());
                } else {
                    out.push(*rng.pick(&[0xeb, 0x74, 0x75, 0x7e]));
                    out.push(rng.below(64) as u8 ^ if rng.chance(30) { 0xc0 } else { 0 });
                }
            }
            3 if rng.chance(20) => out.extend(rng.bytes(1 + rng.below(6) as usize)),
            _ => out.extend_from_slice(*rng.pick(PIECES)),
        }
    }
    out.truncate(len);
    ras.retain(|&r| r <= base.wrapping_add(len as u64));
    (out, ras)
}

/// Names as compilers, assemblers and strippers make them, and worse.
const NAMES: &[&str] = &[
    "main",
    "foo",
    "foo.cold",
    "foo.cold.1",
    "foo.isra.0",
    "foo.part.0.cold",
    ".cold",
    ".cold.1",
    "..cold",
    ".text.cold",
    ".text",
    ".",
    "",
    "bar.cold.cold",
    "__schedule",
    "panic",
    "abort",
    "__restore_rt",
    "entry_SYSCALL_64",
    "asm_exc_page_fault",
    "__x86_return_thunk",
    "__x86_indirect_thunk_rax",
    "__x86_indirect_thunk_array",
    "ret_from_fork",
    "__switch_to_asm",
    "x.cold",
    "x",
];

/// A synthetic image: `nfuncs` functions of text at `text`, with symbols (some unsized,
/// some overlapping, some aliases), all readable; returns the return addresses.
pub struct Image {
    pub mem: Mem,
    pub syms: SymbolTable,
    pub funcs: Vec<(u64, u64)>,
    pub ras: Vec<u64>,
    pub text: (u64, u64),
}

pub fn image(rng: &mut Rng, text: u64) -> Image {
    let nfuncs = 1 + rng.below(12) as usize;
    let mut mem = Mem::default();
    let mut syms = Vec::new();
    let mut funcs = Vec::new();
    let mut ras = Vec::new();
    let mut a = text;
    let total: u64 = 0x200 * nfuncs as u64;
    for i in 0..nfuncs {
        let len = 16 + rng.below(0x1e0) as usize;
        let (c, r) = code(rng, a, len, text, text + total);
        mem.add(a, c);
        ras.extend(r);
        let name = if rng.chance(60) { format!("f{i}") } else { rng.pick(NAMES).to_string() };
        let size = if rng.chance(10) {
            0
        } else if rng.chance(5) {
            rng.below(1 << 20)
        } else {
            len as u64
        };
        syms.push(Symbol::new(name, a, size));
        if rng.chance(10) {
            syms.push(Symbol::new(rng.pick(NAMES).to_string(), a, size));
        }
        funcs.push((a, a + len as u64));
        a += 0x200;
    }
    if rng.chance(20) {
        // a page of the text missing, or a piece of it
        let at = text + rng.below(total);
        mem.remove(at, 1 + rng.below(PAGE));
    }
    Image { mem, syms: SymbolTable::new(syms), funcs, ras, text: (text, text + total) }
}

/// A stack of `words` words at `base` over an image: return addresses (real-looking,
/// at call ends), pointers into the stack (frame-pointer chains, loops onto themselves),
/// pt_regs-like and sigframe-like values, noise; with holes of unreadable pages and pieces.
pub fn stack(rng: &mut Rng, img: &Image, base: u64, words: usize) -> Vec<u64> {
    let end = base + words as u64 * 8;
    let mut w = Vec::with_capacity(words);
    for i in 0..words {
        let here = base + i as u64 * 8;
        let v = match rng.below(10) {
            0..=2 if !img.ras.is_empty() => *rng.pick(&img.ras),
            3 => here,                                      // points at itself
            4 => base + rng.below(words as u64) * 8,        // somewhere in the stack (loops)
            5 => here.wrapping_add(8 * (1 + rng.below(8))), // a frame-pointer chain going up
            6 => *rng.pick(&[0, u64::MAX, 0x10, 0x18, 0x33, 0x2b, 0x246, 0x202, 0xffff_ffff_ffff_ff13, !0xec]),
            7 => img.text.0 + rng.below(img.text.1 - img.text.0 + 1),
            8 => end.wrapping_add(rng.below(0x100)),
            _ => rng.next(),
        };
        w.push(v);
    }
    w
}

/// Stack memory with holes: whole pages and pieces of pages made unreadable.
pub fn stack_mem(rng: &mut Rng, mem: &mut Mem, base: u64, words: &[u64]) {
    mem.add_u64s(base, words);
    let len = words.len() as u64 * 8;
    for _ in 0..rng.below(3) {
        let at = base + rng.below(len.max(1));
        let n = if rng.chance(50) { PAGE - (at & (PAGE - 1)) } else { 1 + rng.below(PAGE) };
        mem.remove(at, n);
    }
}

/// A byte-level mutation of `data`: flips, overwritten words (sizes and offsets in
/// headers become huge or wrap), truncation, insertions.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        if data.is_empty() {
            data.extend(rng.bytes(16));
        }
        let n = data.len() as u64;
        match rng.below(6) {
            0 => {
                let i = rng.below(n) as usize;
                data[i] ^= 1 << rng.below(8);
            }
            1 | 2 => {
                // a header-ish word: near the start, or anywhere 8-aligned
                let i = if rng.chance(60) { rng.below(n.min(0x400)) } else { rng.below(n) } as usize & !7;
                let v = *rng.pick(&[u64::MAX, u64::MAX / 2, 1 << 40, 0x7fff_ffff, 0, n, n + 1, rng.next()]);
                for (k, b) in v.to_le_bytes().iter().enumerate() {
                    if let Some(d) = data.get_mut(i + k) {
                        *d = *b;
                    }
                }
            }
            3 => data.truncate(rng.below(n) as usize),
            4 => {
                let i = rng.below(n) as usize;
                let extra = rng.bytes(1 + rng.below(64) as usize);
                data.splice(i..i, extra);
            }
            _ => {
                let i = rng.below(n) as usize;
                data[i] = rng.next() as u8;
            }
        }
    }
}

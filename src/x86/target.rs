//! Does a call's target lead to a given callee: directly, through a PLT stub or
//! GOT slot, or through a chain of tail jumps?

use super::decode::{decode, read_code, Flow, Insn, Reg};
use crate::memory::{Memory, ReadError};
use crate::symbols::{cold_parent, Symbol, Symbols};
use iced_x86::Code;
use std::collections::{HashSet, VecDeque};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Hops (tail jumps and pointer slots) followed from the target.
    pub max_depth: usize,
    /// Functions decoded per search.
    pub max_functions: usize,
    /// Bytes decoded per function; a longer one is searched only this far.
    pub max_function_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_depth: 4, max_functions: 64, max_function_bytes: 64 * 1024 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hop {
    /// `jmp *slot(%rip)` at `at` (a PLT stub, or a `-fno-plt` tail call); the slot held `dest`.
    Slot { at: u64, slot: u64, dest: u64 },
    /// A direct jump at `at`, in function `from`, to `to` outside it (a tail call).
    TailJump { from: String, at: u64, to: u64 },
}

impl Hop {
    pub fn dest(&self) -> u64 {
        match self {
            Hop::Slot { dest, .. } => *dest,
            Hop::TailJump { to, .. } => *to,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unknown {
    Unreadable(ReadError),
    /// No symbol holds this address, so its extent (and its jumps) are unknown.
    NoSymbol(u64),
    /// The pointer slot still points back into its PLT stub: not bound yet.
    Unbound {
        stub: u64,
        slot: u64,
    },
    /// An indirect jump (`jmp *%rax`, a jump table, a retpoline tail call) at `at`
    /// out of code the target reaches: it could lead anywhere.
    IndirectTail {
        at: u64,
        text: String,
    },
    /// The search stopped at a limit before finding the callee.
    Limit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetMatch {
    /// The target is in the callee (its start, its body, or its `.cold` part).
    Exact,
    Via(Vec<Hop>),
    /// The target is a retpoline thunk: the call is really `call *%reg`.
    IndirectRegister {
        reg: Reg,
        thunk: String,
    },
    /// Every path from the target was followed to its end without meeting the callee.
    Mismatch {
        target_sym: Symbol,
    },
    Unknown(Unknown),
}

/// Whether two symbols are the same function, counting `foo.cold` as part of `foo`.
pub fn same_function(a: &Symbol, b: &Symbol) -> bool {
    a.start == b.start
        || (a.module == b.module
            && a.base_name() == b.base_name()
            && (cold_parent(&a.name).is_some() || cold_parent(&b.name).is_some()))
}

/// The register of a retpoline thunk (`__x86_indirect_thunk_r11`, `__llvm_retpoline_rax`).
pub fn thunk_register(name: &str) -> Option<Reg> {
    let thunk =
        (name.starts_with("__x86_indirect_") && name.contains("thunk_")) || name.starts_with("__llvm_retpoline_");
    if !thunk {
        return None;
    }
    Reg::from_name(name.rsplit('_').next()?)
}

/// A slot of the kernel's `__x86_indirect_thunk_array`: one 32-byte thunk per
/// register, in encoding order (rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8..r15).
pub fn thunk_array_register(sym: &Symbol, addr: u64) -> Option<Reg> {
    const BY_ENCODING: [&str; 16] =
        ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];
    if &*sym.name != "__x86_indirect_thunk_array" {
        return None;
    }
    let off = addr.checked_sub(sym.start)?;
    if off % 32 != 0 {
        return None;
    }
    Reg::from_name(BY_ENCODING.get(usize::try_from(off / 32).ok()?)?)
}

/// Where a call to a pointer-slot stub (a PLT entry) goes: the bound slot's value.
pub fn through_stub<M: Memory + ?Sized, S: Symbols + ?Sized>(mem: &M, syms: &S, addr: u64) -> Option<u64> {
    let limits = Limits::default();
    let s = Search { mem, syms, limits: &limits, scanned: HashSet::new(), blocked: None, first_sym: None };
    s.slot_stub(addr).ok()?.map(|h| h.dest())
}

/// Does a call to `target` lead to `callee`?
pub fn follow_target<M: Memory + ?Sized, S: Symbols + ?Sized>(
    mem: &M,
    syms: &S,
    target: u64,
    callee: &Symbol,
    limits: &Limits,
) -> TargetMatch {
    enum Leads {}
    crate::memory::remembered::<Leads, _, _>(mem, (target, callee.start, callee.name.clone()), || {
        search(mem, syms, target, callee, limits)
    })
}

fn search<M: Memory + ?Sized, S: Symbols + ?Sized>(
    mem: &M,
    syms: &S,
    target: u64,
    callee: &Symbol,
    limits: &Limits,
) -> TargetMatch {
    let mut s = Search { mem, syms, limits, scanned: HashSet::new(), blocked: None, first_sym: None };
    let mut queue = VecDeque::from([(target, Vec::<Hop>::new())]);
    let mut seen = HashSet::from([target]);
    let max_nodes = limits.max_functions.saturating_mul(4);
    let mut nodes = 0usize;
    while let Some((addr, hops)) = queue.pop_front() {
        nodes += 1;
        if nodes > max_nodes {
            s.block(Unknown::Limit);
            break;
        }
        let next = match s.visit(addr, &hops, callee) {
            Visit::Found(m) => return m,
            Visit::Next(next) => next,
        };
        for hop in next {
            if hops.len() >= limits.max_depth {
                s.block(Unknown::Limit);
                break;
            }
            let dest = hop.dest();
            if seen.insert(dest) {
                let mut h = hops.clone();
                h.push(hop);
                queue.push_back((dest, h));
            }
        }
    }
    match (s.blocked, s.first_sym) {
        (Some(u), _) => TargetMatch::Unknown(u),
        (None, Some(target_sym)) => TargetMatch::Mismatch { target_sym },
        (None, None) => TargetMatch::Unknown(Unknown::NoSymbol(target)),
    }
}

enum Visit {
    Found(TargetMatch),
    Next(Vec<Hop>),
}

/// Where control can leave one function.
#[derive(Default)]
struct Exits {
    hops: Vec<Hop>,
    blocked: Vec<Unknown>,
}

struct Search<'a, M: ?Sized, S: ?Sized> {
    mem: &'a M,
    syms: &'a S,
    limits: &'a Limits,
    /// Starts of the functions decoded so far: each is decoded once per search.
    scanned: HashSet<u64>,
    blocked: Option<Unknown>,
    first_sym: Option<Symbol>,
}

impl<M: Memory + ?Sized, S: Symbols + ?Sized> Search<'_, M, S> {
    /// Remember why the search may be incomplete; an indirect tail outranks the rest.
    fn block(&mut self, u: Unknown) {
        let indirect = |u: &Unknown| matches!(u, Unknown::IndirectTail { .. });
        if self.blocked.is_none() || (indirect(&u) && !self.blocked.as_ref().is_some_and(indirect)) {
            self.blocked = Some(u);
        }
    }

    fn visit(&mut self, addr: u64, hops: &[Hop], callee: &Symbol) -> Visit {
        // (a stripped file's nameless function by its unwind tables' extent)
        let sym = self.syms.lookup(addr).or_else(|| self.syms.unnamed_function(addr));
        if let Some(sym) = &sym {
            if same_function(sym, callee) {
                return Visit::Found(if hops.is_empty() {
                    TargetMatch::Exact
                } else {
                    TargetMatch::Via(hops.to_vec())
                });
            }
            if self.first_sym.is_none() {
                self.first_sym = Some(sym.clone());
            }
            if let Some(reg) = thunk_register(&sym.name).or_else(|| thunk_array_register(sym, addr)) {
                if hops.is_empty() {
                    return Visit::Found(TargetMatch::IndirectRegister { reg, thunk: sym.name.to_string() });
                }
                let at = hops.last().map_or(addr, |h| match h {
                    Hop::TailJump { at, .. } | Hop::Slot { at, .. } => *at,
                });
                self.block(Unknown::IndirectTail { at, text: format!("jmp *%{reg} (via {})", sym.name) });
                return Visit::Next(Vec::new());
            }
        }
        // A stub that only jumps through a pointer slot (PLT entries often have no symbol).
        match self.slot_stub(addr) {
            Ok(Some(hop)) => return Visit::Next(vec![hop]),
            Ok(None) => {}
            Err(u) => {
                self.block(u);
                return Visit::Next(Vec::new());
            }
        }
        let Some(sym) = sym else {
            self.block(Unknown::NoSymbol(addr));
            return Visit::Next(Vec::new());
        };
        // A function already followed (e.g. re-entered from its cold part) adds nothing.
        if self.scanned.contains(&sym.start) {
            return Visit::Next(Vec::new());
        }
        if self.scanned.len() >= self.limits.max_functions {
            self.block(Unknown::Limit);
            return Visit::Next(Vec::new());
        }
        self.scanned.insert(sym.start);
        let e = self.scan(&sym);
        for u in e.blocked {
            self.block(u);
        }
        Visit::Next(e.hops)
    }

    /// `[endbr64;] [bnd] jmp *slot(%rip)` at `addr`: the hop through the slot.
    fn slot_stub(&self, addr: u64) -> Result<Option<Hop>, Unknown> {
        let bytes = read_code(self.mem, addr, 16).map_err(Unknown::Unreadable)?;
        let mut insns = decode(&bytes, addr, 2).into_iter();
        let mut first = insns.next();
        if first.as_ref().is_some_and(|i| i.instr.code() == Code::Endbr64) {
            first = insns.next();
        }
        match first.filter(|i| i.flow == Flow::IndirectJump && i.instr.is_ip_rel_memory_operand()) {
            Some(jmp) => self.through_slot(&jmp).map(Some),
            None => Ok(None),
        }
    }

    fn through_slot(&self, jmp: &Insn) -> Result<Hop, Unknown> {
        let slot = jmp.instr.ip_rel_memory_address();
        let dest = self.mem.read_u64(slot).map_err(Unknown::Unreadable)?;
        // Lazy binding: the slot points at the `push` just after the jump.
        if dest > jmp.addr && dest <= jmp.addr.saturating_add(16) {
            return Err(Unknown::Unbound { stub: jmp.addr, slot });
        }
        Ok(Hop::Slot { at: jmp.addr, slot, dest })
    }

    /// Decode `sym` once and list its jumps to outside itself.
    fn scan(&self, sym: &Symbol) -> Exits {
        let mut e = Exits::default();
        let max = self.limits.max_function_bytes;
        let len = if sym.size == 0 { max } else { sym.size.min(max) };
        if sym.size > max {
            e.blocked.push(Unknown::Limit);
        }
        let bytes = match read_code(self.mem, sym.start, len as usize) {
            Ok(b) => b,
            Err(err) => {
                e.blocked.push(Unknown::Unreadable(err));
                return e;
            }
        };
        let end = sym.start.saturating_add(if sym.size == 0 { bytes.len() as u64 } else { sym.size });
        let inside = |a: u64| a >= sym.start && a < end;
        for i in decode(&bytes, sym.start, usize::MAX) {
            match i.flow {
                Flow::Jump | Flow::CondJump => {
                    if let Some(to) = i.near_target.filter(|&t| !inside(t)) {
                        e.hops.push(Hop::TailJump { from: sym.name.to_string(), at: i.addr, to });
                    }
                }
                Flow::IndirectJump if i.instr.is_ip_rel_memory_operand() => match self.through_slot(&i) {
                    Ok(hop) => e.hops.push(hop),
                    Err(u) => e.blocked.push(u),
                },
                // Register jumps, jump tables: nothing to follow statically. One is enough to report.
                Flow::IndirectJump if !e.blocked.iter().any(|u| matches!(u, Unknown::IndirectTail { .. })) => {
                    e.blocked.push(Unknown::IndirectTail { at: i.addr, text: i.text() });
                }
                _ => {}
            }
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Regions;
    use crate::symbols::SymbolTable;
    use std::cell::RefCell;

    /// Records every read.
    struct Logged<'a>(&'a Regions, RefCell<Vec<(u64, usize)>>);
    impl Memory for Logged<'_> {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
            self.1.borrow_mut().push((addr, buf.len()));
            self.0.read(addr, buf)
        }
    }

    /// `jmp rel32` (or `jcc rel32` with `cc`) at `at` to `to`.
    fn jmp(at: u64, to: u64, cc: Option<u8>) -> Vec<u8> {
        let (mut v, len) = match cc {
            None => (vec![0xe9], 5),
            Some(c) => (vec![0x0f, 0x80 | c], 6),
        };
        let rel = to.wrapping_sub(at + len) as i64 as i32;
        v.extend_from_slice(&rel.to_le_bytes());
        v
    }

    /// A function at `start`: `push %rbp`, then `body`, then `ret`.
    fn func(m: &mut Regions, start: u64, body: &[u8]) -> u64 {
        let mut code = vec![0x55];
        code.extend_from_slice(body);
        code.push(0xc3);
        m.add(start, code.clone());
        code.len() as u64
    }

    fn follow(m: &Regions, t: &SymbolTable, target: u64, callee: &str) -> TargetMatch {
        let c = t.iter().find(|s| &*s.name == callee).cloned().unwrap_or_else(|| panic!("no {callee}"));
        follow_target(m, t, target, &c, &Limits::default())
    }

    fn sym(t: &SymbolTable, name: &str) -> Symbol {
        t.iter().find(|s| &*s.name == name).cloned().unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn same_function_exact_and_cold() {
        let mut m = Regions::new();
        func(&mut m, 0x1000, &[0x90; 8]);
        func(&mut m, 0x5000, &[]);
        let t = SymbolTable::new(vec![
            Symbol::new("foo", 0x1000, 0x10),
            Symbol::new("foo.cold", 0x5000, 0x10),
            Symbol::new("bar", 0x2000, 0x10),
        ]);
        assert_eq!(follow(&m, &t, 0x1000, "foo"), TargetMatch::Exact);
        assert_eq!(follow(&m, &t, 0x1004, "foo"), TargetMatch::Exact, "a target inside the function");
        assert_eq!(follow(&m, &t, 0x1000, "foo.cold"), TargetMatch::Exact, "the callee runs in its cold part");
        assert_eq!(follow(&m, &t, 0x1000, "bar"), TargetMatch::Mismatch { target_sym: sym(&t, "foo") });
        // A same-named function in another object is another function.
        let other = Symbol::new("foo.cold", 0x9000, 0x10).in_module("kvm");
        assert!(matches!(follow_target(&m, &t, 0x1000, &other, &Limits::default()), TargetMatch::Mismatch { .. }));
    }

    #[test]
    fn through_plt_stubs() {
        let mut m = Regions::new();
        // .plt.sec entry at 0x401020: endbr64; bnd jmp *0x2fed(%rip) -> slot 0x404018; nopl.
        m.add(0x401020, [0xf3, 0x0f, 0x1e, 0xfa, 0xf2, 0xff, 0x25, 0xed, 0x2f, 0, 0, 0x0f, 0x1f, 0x44, 0, 0]);
        m.add_u64s(0x404018, &[0x7fff_f7e5_0000]);
        // Classic lazy .plt entry at 0x401040: jmp *0x2fda(%rip) -> slot 0x404020; push $1; jmp .plt.
        m.add(0x401040, [0xff, 0x25, 0xda, 0x2f, 0, 0, 0x68, 1, 0, 0, 0, 0xe9, 0xd0, 0xff, 0xff, 0xff]);
        m.add_u64s(0x404020, &[0x401046]);
        func(&mut m, 0x7fff_f7e5_0000, &[]);
        let t = SymbolTable::new(vec![Symbol::new("puts", 0x7fff_f7e5_0000, 0x100).in_module("libc.so.6")]);
        let via = TargetMatch::Via(vec![Hop::Slot { at: 0x401024, slot: 0x404018, dest: 0x7fff_f7e5_0000 }]);
        assert_eq!(follow(&m, &t, 0x401020, "puts"), via);
        assert_eq!(
            follow(&m, &t, 0x401040, "puts"),
            TargetMatch::Unknown(Unknown::Unbound { stub: 0x401040, slot: 0x404020 })
        );
    }

    #[test]
    fn retpoline_thunk_is_an_indirect_register_call() {
        let mut m = Regions::new();
        func(&mut m, 0xffffffff82000000, &[]);
        let t = SymbolTable::new(vec![
            Symbol::new("__x86_indirect_thunk_r11", 0xffffffff82000000, 0x20),
            Symbol::new("f", 0x1000, 1),
        ]);
        assert_eq!(
            follow(&m, &t, 0xffffffff82000000, "f"),
            TargetMatch::IndirectRegister { reg: Reg::R11, thunk: "__x86_indirect_thunk_r11".into() }
        );
        assert_eq!(thunk_register("__llvm_retpoline_rax"), Some(Reg::Rax));
        assert_eq!(thunk_register("__x86_return_thunk"), None);
    }

    #[test]
    fn two_tail_jumps() {
        let mut m = Regions::new();
        // a: jmp b; b: jne c (a conditional tail call); c is the callee.
        let la = func(&mut m, 0x1000, &jmp(0x1001, 0x2000, None));
        let lb = func(&mut m, 0x2000, &jmp(0x2001, 0x3000, Some(0x5)));
        let lc = func(&mut m, 0x3000, &[]);
        let t = SymbolTable::new(vec![
            Symbol::new("a", 0x1000, la),
            Symbol::new("b", 0x2000, lb),
            Symbol::new("c", 0x3000, lc),
        ]);
        let want = TargetMatch::Via(vec![
            Hop::TailJump { from: "a".into(), at: 0x1001, to: 0x2000 },
            Hop::TailJump { from: "b".into(), at: 0x2001, to: 0x3000 },
        ]);
        assert_eq!(follow(&m, &t, 0x1000, "c"), want);
    }

    #[test]
    fn limits_and_indirect_tails_make_it_unknown() {
        let mut m = Regions::new();
        let mut syms = Vec::new();
        // f0 -> f1 -> ... -> f6, each by a tail jump.
        for k in 0..7u64 {
            let at = 0x1000 * (k + 1);
            let len = func(&mut m, at, &jmp(at + 1, at + 0x1000, None));
            syms.push(Symbol::new(format!("f{k}"), at, len));
        }
        let t = SymbolTable::new(syms);
        assert!(matches!(follow(&m, &t, 0x1000, "f4"), TargetMatch::Via(h) if h.len() == 4));
        assert_eq!(follow(&m, &t, 0x1000, "f5"), TargetMatch::Unknown(Unknown::Limit));

        // g: jmp *%rax could reach anything; h is the callee.
        let mut m = Regions::new();
        let lg = func(&mut m, 0x1000, &[0xff, 0xe0]);
        let t = SymbolTable::new(vec![Symbol::new("g", 0x1000, lg), Symbol::new("h", 0x2000, 1)]);
        assert_eq!(
            follow(&m, &t, 0x1000, "h"),
            TargetMatch::Unknown(Unknown::IndirectTail { at: 0x1001, text: "jmp *%rax".into() })
        );
    }

    #[test]
    fn unreadable_or_unnamed_targets_are_unknown() {
        let m = Regions::new();
        let t = SymbolTable::new(vec![Symbol::new("f", 0x1000, 0x10), Symbol::new("g", 0x2000, 0x10)]);
        assert_eq!(follow(&m, &t, 0x1000, "g"), TargetMatch::Unknown(Unknown::Unreadable(ReadError { addr: 0x1000 })));
        let mut m = Regions::new();
        m.add(0x3000, [0x55, 0xc3]);
        assert_eq!(follow(&m, &t, 0x3000, "g"), TargetMatch::Unknown(Unknown::NoSymbol(0x3000)));
        // Nothing readable, no symbol, addresses at the edges: no panic.
        for a in [0, u64::MAX, 0x8000_0000_0000_0000] {
            assert!(matches!(follow(&m, &t, a, "g"), TargetMatch::Unknown(_)));
        }
    }

    #[test]
    fn each_function_is_decoded_once() {
        let mut m = Regions::new();
        m.add(0x1000, vec![0xcc; 0x2000]); // int3 padding, so a stub check reads 16 bytes in one go
                                           // a and b jump to each other (and a twice to b): a finite search, each read once.
        let mut body = jmp(0x1001, 0x2000, Some(0x4));
        body.extend(jmp(0x1007, 0x2003, None));
        let la = func(&mut m, 0x1000, &body);
        let lb = func(&mut m, 0x2000, &jmp(0x2001, 0x1000, None));
        let t = SymbolTable::new(vec![
            Symbol::new("a", 0x1000, la),
            Symbol::new("b", 0x2000, lb),
            Symbol::new("z", 0x9000, 1),
        ]);
        let c = Logged(&m, RefCell::new(Vec::new()));
        assert_eq!(
            follow_target(&c, &t, 0x1000, &sym(&t, "z"), &Limits::default()),
            TargetMatch::Mismatch { target_sym: sym(&t, "a") }
        );
        let log = c.1.borrow();
        assert_eq!(log.iter().filter(|r| **r == (0x1000, la as usize)).count(), 1);
        assert_eq!(log.iter().filter(|r| **r == (0x2000, lb as usize)).count(), 1);
    }
}

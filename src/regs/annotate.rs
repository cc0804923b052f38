//! `regs-from-stack --annotate`: every stack word from sp, labelled (return addresses
//! and the frame each belongs to, saved-register slots, the canary, the register sets
//! a scan found). Every decision is here; report.rs writes the text and the JSON, the
//! front-ends (gdb's Python layer, the crash glue) only gather the inputs.

use std::collections::HashMap;

use super::scan::{read_runs, Found};
use super::word_at;
use crate::memory::Memory;
use crate::symbols::Symbols;
use crate::unwind::Origin;
use crate::verify::{FrameIn, FrameKind};

/// Words shown at most by default (1 MiB of stack); a larger range is cut there.
pub const MAX_WORDS: u64 = 1 << 17;

/// A stack word, or a run of words that cannot be read (one row, however long).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackWord {
    /// `ra`: `func+off` when the value is a return address (code right after a call).
    Word {
        address: u64,
        value: u64,
        ra: Option<String>,
    },
    Unreadable {
        address: u64,
        len: u64,
    },
}

/// The 8-byte words from `lo` below `hi`, at most `max_words` of them; the second
/// value is where the range was cut, if it was.
pub fn stack_words<M: Memory, S: Symbols>(
    mem: &M,
    syms: &S,
    lo: u64,
    hi: u64,
    max_words: u64,
) -> (Vec<StackWord>, Option<u64>) {
    let n = hi.saturating_sub(lo) / 8;
    let cut = (n > max_words).then(|| lo + max_words * 8);
    let n = n.min(max_words);
    let mut out = Vec::new();
    if n == 0 {
        return (out, cut);
    }
    let mut unreadable = Vec::new();
    let runs = read_runs(mem, lo, lo + n * 8, &mut unreadable);
    let mut runs = runs.iter().peekable();
    for a in (0..n).map(|i| lo + i * 8) {
        while runs.next_if(|(b, v)| b + v.len() as u64 <= a).is_some() {}
        let value = runs.peek().and_then(|(b, v)| {
            let off = usize::try_from(a.checked_sub(*b)?).ok()?;
            word_at(v, off)
        });
        match value {
            Some(value) => {
                out.push(StackWord::Word { address: a, value, ra: crate::unwind::return_address_in(mem, syms, value) })
            }
            None => match out.last_mut() {
                Some(StackWord::Unreadable { address, len }) if *address + *len == a => *len += 8,
                _ => out.push(StackWord::Unreadable { address: a, len: 8 }),
            },
        }
    }
    (out, cut)
}

/// Without a range, the words shown run from sp for this many bytes.
pub const DEFAULT_SPAN: u64 = 0x200;
/// Where the stack-protector canary sits from its segment base (`%fs:0x28`, `%gs:0x28`).
pub const CANARY_OFFSET: u64 = 0x28;

/// The words `[from, to)` shown for `range` (`--from/--to`, or the first stack scanned;
/// None: `DEFAULT_SPAN` bytes from sp): from sp when the range holds it, else its start.
pub fn words_range(sp: u64, range: Option<(u64, u64)>) -> (u64, u64) {
    let (lo, hi) = range.unwrap_or((sp, sp.saturating_add(DEFAULT_SPAN)));
    (if lo <= sp && sp < hi { sp } else { lo }, hi)
}

/// The canary value at `addr`: None when unreadable or zero (no stack protector).
pub fn canary_at<M: Memory>(mem: &M, addr: u64) -> Option<u64> {
    if addr > u64::MAX - 7 {
        return None;
    }
    mem.read_u64(addr).ok().filter(|v| *v != 0)
}

/// The canary of the code running on a CPU with these segment bases: `%gs:0x28` (per
/// CPU) on a kernel stack, `%fs:0x28` (per thread) on a user one.
pub fn canary_of_cpu<M: Memory>(mem: &M, sp: u64, fs_base: Option<u64>, gs_base: Option<u64>) -> Option<u64> {
    let base = if crate::kernel::is_kernel(sp) { gs_base } else { fs_base }?;
    if base == 0 {
        return None;
    }
    canary_at(mem, base.checked_add(CANARY_OFFSET)?)
}

/// What `--annotate` labels the words by.
pub struct Inputs<'a> {
    /// The live sp: words below it are stale.
    pub sp: u64,
    /// `--from/--to`, or the first stack scanned; None: [`DEFAULT_SPAN`] bytes from sp.
    pub range: Option<(u64, u64)>,
    /// The backtrace whose frame numbers name the words (gdb's frames; in crash,
    /// stackproof's own chain).
    pub frames: &'a [FrameIn],
    /// stackproof's own chain from the same registers: where callee-saved registers were saved.
    pub own: &'a [crate::unwind::Frame],
    pub found: &'a [Found],
    pub canary: Option<u64>,
    pub max_words: u64,
}

/// A word (`value` None: unreadable; `unreadable_bytes`: a run of unreadable words
/// shown as one) with its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub address: u64,
    pub value: Option<u64>,
    pub labels: Vec<String>,
    pub unreadable_bytes: Option<u64>,
}

/// The labelled words, where they were cut (after `max_words`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotated {
    pub words: Vec<Word>,
    pub cut: Option<u64>,
    pub max_words: u64,
}

/// Labels that belong to an address whatever its value: the slots of the register
/// sets found, then the slot where each frame's callee-saved registers were saved
/// (`saved rbx of #N`, N the backtrace's number of the innermost frame whose value
/// it is; outer frames that kept the register share the slot).
fn slot_labels(inp: &Inputs) -> HashMap<u64, Vec<String>> {
    let mut labels: HashMap<u64, Vec<String>> = HashMap::new();
    for (addr, label) in all_labels(inp.found) {
        labels.entry(addr).or_default().push(label);
    }
    let level: HashMap<(u64, Option<u64>), u32> =
        inp.frames.iter().filter(|f| f.kind != FrameKind::Inline).map(|f| ((f.pc, f.sp), f.level)).collect();
    for c in inp.own {
        let Some(lvl) = level.get(&(c.frame.pc, c.frame.sp)) else { continue };
        for (i, r) in c.regs.iter().enumerate() {
            let Some(Origin::Saved { addr, .. }) = r.as_ref().map(|r| &r.origin) else { continue };
            let name = crate::layout::CALLEE_SAVED_NAMES.get(i).copied().unwrap_or("?");
            let mine = format!("saved {name} of #");
            let here = labels.entry(*addr).or_default();
            if !here.iter().any(|l| l.starts_with(&mine)) {
                here.push(format!("{mine}{lvl}"));
            }
        }
    }
    labels
}

/// Every word of the range from sp (see [`words_range`]), at most `max_words`, labelled:
/// the register-set and saved-register slots, `canary`, `ra #N func+off` where frame N
/// of the backtrace returns to (a normal frame's slot, by default `sp - 8` above frame 0,
/// holding its pc), other return
/// addresses `ra func+off, not in the backtrace` at or above sp, `stale ra` below it.
pub fn annotate<M: Memory, S: Symbols>(mem: &M, syms: &S, inp: &Inputs) -> Annotated {
    let labels = slot_labels(inp);
    let chain: HashMap<u64, (u32, u64)> = inp
        .frames
        .iter()
        .filter(|f| f.kind == FrameKind::Normal && (f.level > 0 || f.slot.is_some()))
        .filter_map(|f| Some((f.slot.or(f.sp?.checked_sub(8))?, (f.level, f.pc))))
        .collect();
    let (lo, hi) = words_range(inp.sp, inp.range);
    let (rows, cut) = stack_words(mem, syms, lo, hi, inp.max_words);
    let words = rows
        .into_iter()
        .map(|r| match r {
            StackWord::Unreadable { address, len } => {
                Word { address, value: None, labels: Vec::new(), unreadable_bytes: Some(len) }
            }
            StackWord::Word { address, value, ra } => {
                let mut ls = labels.get(&address).cloned().unwrap_or_default();
                if inp.canary == Some(value) {
                    ls.push("canary".into());
                }
                match (chain.get(&address), ra) {
                    (Some(&(level, pc)), ra) if pc == value => {
                        ls.push(format!("ra #{level} {}", ra.as_deref().unwrap_or("??")))
                    }
                    (_, Some(ra)) if address >= inp.sp => ls.push(format!("ra {ra}, not in the backtrace")),
                    (_, Some(ra)) => ls.push(format!("stale ra {ra} (below sp)")),
                    (_, None) => {}
                }
                Word { address, value: Some(value), labels: ls, unreadable_bytes: None }
            }
        })
        .collect();
    Annotated { words, cut, max_words: inp.max_words }
}

/// `--annotate` as a front-end asks for it.
pub struct Request {
    /// `--from/--to` (or, filled by the document, the first stack scanned); None:
    /// [`DEFAULT_SPAN`] bytes from sp.
    pub range: Option<(u64, u64)>,
    /// The backtrace that numbers the frames (gdb's); None: stackproof's own chain from `start`.
    pub frames: Option<Vec<FrameIn>>,
    /// The registers the chain starts from (a CPU's, or a sleeping task's switch frame).
    pub start: Option<crate::unwind::Start>,
    /// A sleeping task's frame 0 return-address slot (its switch frame's `ret_addr`).
    pub slot0: Option<u64>,
    pub canary: Option<u64>,
    pub max_words: u64,
}

/// stackproof's own chain from `start`, as `check` builds it (freed init code read from the file).
fn own_chain<M: Memory, S: Symbols>(
    mem: &M,
    syms: &S,
    start: &crate::unwind::Start,
    max: usize,
) -> Vec<crate::unwind::Frame> {
    let mem = &crate::kernel::InitCode::new(mem, syms);
    crate::memory::scoped(mem, |mem| crate::unwind::unwind(mem, syms, start, max)).frames
}

/// Annotate the words `req` asks for, with the sets `found`: the frames are numbered by
/// `req.frames` when given (gdb's backtrace), else by stackproof's own chain (crash, a
/// sleeping task), whose frame 0 returns through `req.slot0`.
pub fn annotate_stack<M: Memory, S: Symbols>(mem: &M, syms: &S, sp: u64, found: &[Found], req: Request) -> Annotated {
    let max = req.frames.as_ref().map_or(crate::unwind::DEFAULT_MAX_FRAMES, |f| f.len() + 16);
    let own = req.start.as_ref().map(|s| own_chain(mem, syms, s, max)).unwrap_or_default();
    let frames = req.frames.unwrap_or_else(|| {
        let mut v: Vec<FrameIn> = own.iter().map(|f| f.frame.clone()).collect();
        if let (Some(f), Some(slot)) = (v.first_mut(), req.slot0) {
            f.slot = Some(slot);
        }
        v
    });
    let inp = Inputs {
        sp,
        range: req.range,
        frames: &frames,
        own: &own,
        found,
        canary: req.canary,
        max_words: req.max_words,
    };
    annotate(mem, syms, &inp)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub address: u64,
    pub value: u64,
    pub labels: Vec<String>,
}

/// One row per 8-byte word from `base`; each label goes to the word holding its address.
pub fn rows(base: u64, bytes: &[u8], labels: &[(u64, String)]) -> Vec<Row> {
    let mut out: Vec<Row> = (0..bytes.len() / 8)
        .map_while(|i| {
            let off = i * 8;
            Some(Row { address: base.checked_add(off as u64)?, value: word_at(bytes, off)?, labels: Vec::new() })
        })
        .collect();
    for (addr, label) in labels {
        let Some(off) = addr.checked_sub(base) else { continue };
        if let Some(row) = usize::try_from(off / 8).ok().and_then(|i| out.get_mut(i)) {
            row.labels.push(label.clone());
        }
    }
    out
}

/// The same from words already decoded.
pub fn rows_from_words(base: u64, words: &[u64], labels: &[(u64, String)]) -> Vec<Row> {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    rows(base, &bytes, labels)
}

/// `pt_regs.ip`, `sigframe.rip`, ... at the address of each slot of a found frame.
pub fn frame_labels(f: &Found) -> Vec<(u64, String)> {
    let prefix = f.layout.label_prefix();
    f.layout
        .fields()
        .into_iter()
        .filter_map(|(name, off)| Some((f.address.checked_add(off)?, format!("{prefix}.{name}"))))
        .collect()
}

/// Labels of every found frame.
pub fn all_labels(found: &[Found]) -> Vec<(u64, String)> {
    found.iter().flat_map(frame_labels).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs::{Layout, Status};

    #[test]
    fn rows_take_labels_and_survive_odd_input() {
        let bytes: Vec<u8> = [1u64, 2, 3].iter().flat_map(|w| w.to_le_bytes()).chain([9u8; 3]).collect();
        let r = rows(
            0x1000,
            &bytes,
            &[(0x1008, "a".into()), (0x100c, "b".into()), (0xff8, "x".into()), (0x2000, "y".into())],
        );
        assert_eq!(r.len(), 3);
        assert_eq!(r[1].value, 2);
        assert_eq!(r[1].labels, vec!["a".to_string(), "b".to_string()]);
        assert!(r[0].labels.is_empty() && r[2].labels.is_empty());
        assert!(rows(u64::MAX - 7, &[0u8; 16], &[]).len() == 1);
    }

    #[test]
    fn words_collapse_unreadable_runs_and_stop_at_the_cap() {
        use crate::memory::Regions;
        use crate::symbols::SymbolTable;
        let mut m = Regions::new();
        m.add_u64s(0x10000, &[1, 2]);
        m.add_u64s(0x13000, &[3]);
        m.add(0x13ffc, vec![0xee; 4]); // a word cut by the end of what reads
        let syms = SymbolTable::default();
        let (w, cut) = stack_words(&m, &syms, 0x10000, 0x14008, MAX_WORDS);
        assert_eq!(cut, None);
        let unreadable = |address, len| StackWord::Unreadable { address, len };
        let word = |address, value| StackWord::Word { address, value, ra: None };
        assert_eq!(w[..3], [word(0x10000, 1), word(0x10008, 2), unreadable(0x10010, 0x3000 - 0x10)]);
        assert_eq!(w[3], word(0x13000, 3));
        assert_eq!(w[4..], [unreadable(0x13008, 0x1000)]);
        // Every word reported unreadable is, every value is memory's.
        for r in &w {
            match r {
                StackWord::Word { address, value, .. } => assert_eq!(m.read_u64(*address), Ok(*value)),
                StackWord::Unreadable { address, len } => {
                    assert!((0..len / 8).all(|i| m.read_u64(address + i * 8).is_err()))
                }
            }
        }
        // The whole address space: cut after max_words words, one row for what does not read.
        let (w, cut) = stack_words(&m, &syms, 0, u64::MAX, 4096);
        assert_eq!(cut, Some(4096 * 8));
        assert_eq!(w, vec![unreadable(0, 4096 * 8)]);
        let (w, cut) = stack_words(&m, &syms, u64::MAX - 15, u64::MAX, 10);
        assert_eq!((w.len(), cut), (1, None));
    }

    /// A function `f` at 0x401000 whose `call` ends at 0x401006 (a return address),
    /// and a stack at 0x7ff000.
    fn code_and_stack(words: &[u64]) -> (crate::memory::Regions, crate::symbols::SymbolTable) {
        let mut m = crate::memory::Regions::new();
        m.add(0x401000, [0x55, 0xe8, 0, 0, 0, 0, 0x90, 0x90, 0xc3]);
        m.add_u64s(0x7ff000, words);
        let f = crate::symbols::Symbol { name: "f".into(), start: 0x401000, size: 9, module: None };
        (m, crate::symbols::SymbolTable::new(vec![f]))
    }

    fn frame(level: u32, pc: u64, sp: u64, kind: FrameKind) -> FrameIn {
        FrameIn { level, pc, sp: Some(sp), slot: None, bp: None, kind, name: None, trust: crate::verify::Trust::Cfi }
    }

    fn own_frame(f: FrameIn, rbx_at: Option<u64>) -> crate::unwind::Frame {
        let mut regs: crate::unwind::CalleeSaved = Default::default();
        regs[0] = rbx_at
            .map(|addr| crate::unwind::RegValue { value: 7, origin: Origin::Saved { addr, by_level: 0, insn: None } });
        crate::unwind::Frame { frame: f, regs, cfa: None, layout_note: None, rebuilt: None, candidates: Vec::new() }
    }

    fn labels_at(a: &Annotated, addr: u64) -> Vec<String> {
        a.words.iter().find(|w| w.address == addr).map(|w| w.labels.clone()).unwrap_or_default()
    }

    #[test]
    fn return_addresses_saved_registers_and_canary() {
        const RA: u64 = 0x401006;
        // 0x7ff000: rbx saved; 0x7ff008: frame 1's return address; 0x7ff010: a return
        // address no frame returns through; 0x7ff018: the canary.
        let (m, syms) = code_and_stack(&[7, RA, RA, 0xc0ffee, 0]);
        let frames = vec![
            frame(0, 0x401002, 0x7ff000, FrameKind::Normal),
            frame(1, RA, 0x7ff010, FrameKind::Normal),
            // An inline frame at the same place names no slot.
            frame(2, RA, 0x7ff010, FrameKind::Inline),
        ];
        // Frame 1 and the one above it kept rbx in the same slot: the innermost names it.
        let own = vec![
            own_frame(frames[0].clone(), None),
            own_frame(frames[1].clone(), Some(0x7ff000)),
            own_frame(frame(2, 0x401006, 0x7ff020, FrameKind::Normal), Some(0x7ff000)),
        ];
        let inp = Inputs {
            sp: 0x7ff000,
            range: Some((0x7ff000, 0x7ff028)),
            frames: &frames,
            own: &own,
            found: &[],
            canary: canary_at(&m, 0x7ff018),
            max_words: MAX_WORDS,
        };
        let a = annotate(&m, &syms, &inp);
        assert_eq!(a.words.len(), 5);
        assert_eq!(labels_at(&a, 0x7ff000), ["saved rbx of #1"]);
        assert_eq!(labels_at(&a, 0x7ff008), ["ra #1 f+0x6"]);
        assert_eq!(labels_at(&a, 0x7ff010), ["ra f+0x6, not in the backtrace"]);
        assert_eq!(labels_at(&a, 0x7ff018), ["canary"]);
        assert!(labels_at(&a, 0x7ff020).is_empty());
        // A slot holding another value than the frame's pc is no `ra #N`.
        let moved = [frame(1, RA + 1, 0x7ff010, FrameKind::Normal)];
        let a = annotate(&m, &syms, &Inputs { frames: &moved, own: &[], ..inp });
        assert_eq!(labels_at(&a, 0x7ff008), ["ra f+0x6, not in the backtrace"]);
        // Below the live sp (a range that does not hold it: its words from its start) every ra is stale.
        let a = annotate(&m, &syms, &Inputs { sp: 0x7ff100, frames: &[], own: &[], canary: None, ..inp });
        assert_eq!(a.words[0].address, 0x7ff000);
        assert_eq!(labels_at(&a, 0x7ff008), ["stale ra f+0x6 (below sp)"]);
        assert!(labels_at(&a, 0x7ff018).is_empty());
    }

    #[test]
    fn a_sleeping_tasks_frame_0_returns_through_its_slot() {
        const RA: u64 = 0x401006;
        let (m, syms) = code_and_stack(&[0, RA, 0, 0]);
        // Frame 0 of the own chain (a switch frame's ret_addr), numbered by that chain.
        let f0 = frame(0, RA, 0x7ff010, FrameKind::Normal);
        let start = crate::unwind::Start { pc: RA, sp: 0x7ff010, ..Default::default() };
        let req = |slot0| Request {
            range: Some((0x7ff000, 0x7ff020)),
            frames: Some(vec![FrameIn { slot: slot0, ..f0.clone() }]),
            start: None,
            slot0: None,
            canary: None,
            max_words: 2,
        };
        let a = annotate_stack(&m, &syms, 0x7ff000, &[], req(Some(0x7ff008)));
        assert_eq!(labels_at(&a, 0x7ff008), ["ra #0 f+0x6"]);
        assert_eq!((a.words.len(), a.cut), (2, Some(0x7ff010)));
        // gdb's frame 0 has no slot: its pc is no return address of the stack.
        let a = annotate_stack(&m, &syms, 0x7ff000, &[], req(None));
        assert_eq!(labels_at(&a, 0x7ff008), ["ra f+0x6, not in the backtrace"]);
        // Without frames the own chain from `start` numbers them, frame 0 through slot0.
        let a = annotate_stack(
            &m,
            &syms,
            0x7ff000,
            &[],
            Request { frames: None, start: Some(start), slot0: Some(0x7ff008), ..req(None) },
        );
        assert_eq!(labels_at(&a, 0x7ff008), ["ra #0 f+0x6"]);
    }

    #[test]
    fn words_range_and_canary_reads() {
        assert_eq!(words_range(0x1010, Some((0x1000, 0x2000))), (0x1010, 0x2000));
        assert_eq!(words_range(0x3000, Some((0x1000, 0x2000))), (0x1000, 0x2000));
        assert_eq!(words_range(0x2000, Some((0x1000, 0x2000))), (0x1000, 0x2000));
        assert_eq!(words_range(0x1000, None), (0x1000, 0x1200));
        assert_eq!(words_range(u64::MAX - 8, None), (u64::MAX - 8, u64::MAX));
        let mut m = crate::memory::Regions::new();
        m.add_u64s(0x5028, &[0xabc]);
        m.add_u64s(0xffff_8880_0000_0028, &[0xdef, 0]);
        assert_eq!(canary_of_cpu(&m, 0x7ff000, Some(0x5000), Some(0xffff_8880_0000_0000)), Some(0xabc));
        assert_eq!(canary_of_cpu(&m, 0xffff_c900_0000_0000, Some(0x5000), Some(0xffff_8880_0000_0000)), Some(0xdef));
        assert_eq!(canary_of_cpu(&m, 0x7ff000, None, Some(0xffff_8880_0000_0000)), None);
        assert_eq!(canary_of_cpu(&m, 0x7ff000, Some(0), None), None);
        assert_eq!(canary_of_cpu(&m, 0x7ff000, Some(u64::MAX - 0x10), None), None);
        assert_eq!(canary_at(&m, 0xffff_8880_0000_0030), None, "zero: no stack protector");
        assert_eq!(canary_at(&m, u64::MAX - 3), None);
    }

    #[test]
    fn pt_regs_labels() {
        let f = Found {
            address: 0x1008,
            layout: Layout::PtRegs,
            status: Status::Live,
            regs: vec![],
            checks: vec![],
            score: 0,
            copy_of: None,
            status_reason: String::new(),
            summary: String::new(),
        };
        let l = frame_labels(&f);
        assert_eq!(l.len(), 21);
        assert_eq!(l[0], (0x1008, "pt_regs.r15".to_string()));
        assert_eq!(l[16], (0x1008 + 16 * 8, "pt_regs.ip".to_string()));
        let s = Found { layout: Layout::SigFrame, ..f };
        let l = frame_labels(&s);
        assert!(l.contains(&(0x1008 + 8 + 168, "sigframe.rip".to_string())));
        assert!(l.contains(&(0x1008 + 312, "sigframe.si_signo/si_errno".to_string())));
        assert_eq!(l[0], (0x1008, "sigframe.pretcode".to_string()));
        let u = Found { layout: Layout::Ucontext, ..s };
        assert_eq!(frame_labels(&u)[0], (0x1008, "ucontext.uc_flags".to_string()));
    }
}

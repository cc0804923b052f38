//! Labelled stack rows (data only; rendering is the Python layer's).

use super::scan::{read_runs, Found};
use super::word_at;
use crate::memory::Memory;
use crate::symbols::Symbols;

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

//! Labelled stack rows (data only; rendering is the Python layer's).

use super::scan::Found;
use super::word_at;

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

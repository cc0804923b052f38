//! Oracles for the layout engine: what the compiler (`.eh_frame`, `.debug_frame`)
//! or objtool (Linux ORC) says the CFA is at each pc, and a comparison.

pub mod cli;
pub mod compare;
pub mod eh_frame;
pub mod image;
pub mod orc;

/// An oracle's CFA rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OCfa {
    /// CFA = reg (DWARF number) + off.
    Reg { reg: u8, off: i64 },
    /// CFA = *(reg + off).
    Deref { reg: u8, off: i64 },
    /// Something the comparison does not evaluate (a DWARF expression, an ORC
    /// pt_regs entry, "undefined").
    Other(&'static str),
}

impl std::fmt::Display for OCfa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = crate::layout::state::reg_name;
        match *self {
            OCfa::Reg { reg, off } => write!(f, "{}{:+}", name(reg), off),
            OCfa::Deref { reg, off } => write!(f, "[{}{:+}]", name(reg), off),
            OCfa::Other(w) => write!(f, "other({w})"),
        }
    }
}

/// The oracle's rule for a pc range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ORow {
    pub cfa: OCfa,
    /// rbp saved at CFA + this.
    pub rbp: Option<i64>,
}

/// Rows sorted by start address, non-overlapping.
#[derive(Debug, Default, Clone)]
pub struct Table {
    rows: Vec<(u64, u64, ORow)>,
    /// The ranges the oracle claims to describe (FDE ranges: function boundaries).
    pub ranges: Vec<(u64, u64)>,
    /// (FDE start, LSDA address) for functions with exception tables.
    pub lsda: Vec<(u64, u64)>,
}

impl Table {
    pub fn from_rows(mut rows: Vec<(u64, u64, ORow)>, mut ranges: Vec<(u64, u64)>) -> Table {
        rows.sort_by_key(|r| r.0);
        ranges.sort();
        Table { rows, ranges, lsda: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn lookup(&self, pc: u64) -> Option<ORow> {
        let i = self.rows.partition_point(|r| r.0 <= pc);
        let r = self.rows.get(i.checked_sub(1)?)?;
        (pc < r.1).then_some(r.2)
    }
}

#[cfg(test)]
mod tests;

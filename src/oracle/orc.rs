//! Linux ORC tables (`.orc_unwind_ip` + `.orc_unwind`), layout of Linux 6.1:
//! `struct orc_entry { s16 sp_offset; s16 bp_offset; unsigned sp_reg:4, bp_reg:4, type:2, end:1; }`.
//! (6.3+ widened `type` to 3 bits and renumbered it; not handled.)

use super::{OCfa, ORow, Table};

const REG_UNDEFINED: u8 = 0;
const REG_PREV_SP: u8 = 1;
const TYPE_CALL: u8 = 0;

/// DWARF number of an ORC base register.
fn dwarf(orc_reg: u8) -> Option<u8> {
    Some(match orc_reg {
        2 => 1,  // dx
        3 => 5,  // di
        4 => 6,  // bp
        5 => 7,  // sp
        6 => 10, // r10
        7 => 13, // r13
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrcEntry {
    pub sp_offset: i16,
    pub bp_offset: i16,
    pub sp_reg: u8,
    pub bp_reg: u8,
    pub kind: u8,
    pub end: bool,
}

impl OrcEntry {
    pub fn parse(b: &[u8]) -> Option<OrcEntry> {
        let w = |i: usize| Some(u16::from_le_bytes([*b.get(i)?, *b.get(i + 1)?]));
        let bits = w(4)?;
        Some(OrcEntry {
            sp_offset: w(0)? as i16,
            bp_offset: w(2)? as i16,
            sp_reg: (bits & 0xf) as u8,
            bp_reg: ((bits >> 4) & 0xf) as u8,
            kind: ((bits >> 8) & 0x3) as u8,
            end: bits & 0x400 != 0,
        })
    }

    fn row(&self) -> ORow {
        let cfa = if self.sp_reg == REG_UNDEFINED {
            OCfa::Other(if self.end { "end-of-stack" } else { "undefined" })
        } else if self.kind != TYPE_CALL {
            OCfa::Other("pt_regs")
        } else {
            match (self.sp_reg, dwarf(self.sp_reg)) {
                (8, _) => OCfa::Deref { reg: 6, off: i64::from(self.sp_offset) }, // bp indirect
                (9, _) => OCfa::Other("sp-indirect"),                             // CFA = *rsp + offset (stack switch)
                (_, Some(r)) => OCfa::Reg { reg: r, off: i64::from(self.sp_offset) },
                _ => OCfa::Other("orc-reg"),
            }
        };
        let rbp = (self.bp_reg == REG_PREV_SP).then_some(i64::from(self.bp_offset));
        ORow { cfa, rbp }
    }
}

/// Rows from the two sections; `ip_addr` is where `.orc_unwind_ip` is linked.
/// Each entry covers from its ip up to the next entry's.
pub fn table(ip_sec: &[u8], ip_addr: u64, unwind: &[u8]) -> Table {
    let n = (ip_sec.len() / 4).min(unwind.len() / 6);
    let mut ips = Vec::with_capacity(n);
    for i in 0..n {
        let rel = i32::from_le_bytes([ip_sec[4 * i], ip_sec[4 * i + 1], ip_sec[4 * i + 2], ip_sec[4 * i + 3]]);
        let ip = ip_addr.wrapping_add(4 * i as u64).wrapping_add(i64::from(rel) as u64);
        if let Some(e) = OrcEntry::parse(&unwind[6 * i..]) {
            ips.push((ip, e));
        }
    }
    ips.sort_by_key(|x| x.0);
    let mut rows = Vec::with_capacity(ips.len());
    for (i, (ip, e)) in ips.iter().enumerate() {
        let end = ips.get(i + 1).map_or(ip.saturating_add(1), |n| n.0);
        if end > *ip {
            rows.push((*ip, end, e.row()));
        }
    }
    Table::from_rows(rows, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_call_entry() {
        // sp_offset 8, bp_offset 0, sp_reg SP(5), bp_reg UNDEFINED, type CALL
        let e = OrcEntry::parse(&[8, 0, 0, 0, 0x05, 0x00]).unwrap();
        assert_eq!(e.row(), ORow { cfa: OCfa::Reg { reg: 7, off: 8 }, rbp: None });
        // bp saved at prev_sp-16
        let e = OrcEntry::parse(&[16, 0, 0xf0, 0xff, 0x15, 0x00]).unwrap();
        assert_eq!(e.row(), ORow { cfa: OCfa::Reg { reg: 7, off: 16 }, rbp: Some(-16) });
        let e = OrcEntry::parse(&[0, 0, 0, 0, 0x00, 0x04]).unwrap();
        assert!(e.end);
    }
}

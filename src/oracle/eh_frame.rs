//! `.eh_frame` / `.debug_frame` rows through gimli.

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EndianSlice, LittleEndian, RegisterRule, UnwindContext,
    UnwindSection,
};

use super::{OCfa, ORow, Table};

type R<'a> = EndianSlice<'a, LittleEndian>;

/// `DW_OP_bregN sleb; DW_OP_deref` (gcc's DRAP CFA) as a Deref; other expressions are opaque.
fn deref_expr(b: &[u8]) -> OCfa {
    let Some((&op, rest)) = b.split_first() else { return OCfa::Other("expr") };
    if !(0x70..=0x7f).contains(&op) {
        return OCfa::Other("expr");
    }
    let mut v: i64 = 0;
    let mut shift = 0u32;
    let mut i = 0;
    loop {
        let Some(&byte) = rest.get(i) else { return OCfa::Other("expr") };
        i += 1;
        if shift < 64 {
            v |= i64::from(byte & 0x7f) << shift;
        }
        shift += 7;
        if byte & 0x80 == 0 {
            if shift < 64 && byte & 0x40 != 0 {
                v |= -1i64 << shift;
            }
            break;
        }
    }
    if rest.get(i..) == Some(&[0x06][..]) {
        OCfa::Deref { reg: op - 0x70, off: v }
    } else {
        OCfa::Other("expr")
    }
}

fn collect<'a, S: UnwindSection<R<'a>>>(sec: &S, bases: &BaseAddresses, raw: &'a [u8]) -> Result<Table, String> {
    let mut rows = Vec::new();
    let mut ranges = Vec::new();
    let mut lsda = Vec::new();
    let mut ctx = Box::new(UnwindContext::new());
    let mut entries = sec.entries(bases);
    loop {
        let e = match entries.next() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(e) => return Err(format!("CFI: {e}")),
        };
        let CieOrFde::Fde(partial) = e else { continue };
        let Ok(fde) = partial.parse(S::cie_from_offset) else { continue };
        ranges.push((fde.initial_address(), fde.end_address()));
        if let Some(gimli::Pointer::Direct(a)) = fde.lsda() {
            lsda.push((fde.initial_address(), a));
        }
        let Ok(mut table) = fde.rows(sec, bases, &mut ctx) else { continue };
        while let Ok(Some(row)) = table.next_row() {
            let cfa = match row.cfa() {
                CfaRule::RegisterAndOffset { register, offset } => match u8::try_from(register.0) {
                    Ok(r) if r < 16 => OCfa::Reg { reg: r, off: *offset },
                    _ => OCfa::Other("reg"),
                },
                CfaRule::Expression(x) => {
                    let start = x.offset;
                    let bytes = raw.get(start..start.saturating_add(x.length)).unwrap_or(&[]);
                    deref_expr(bytes)
                }
            };
            // An undefined return address marks the outermost frame (`_start`, thread entry):
            // its CFA is nominal.
            let cfa = match row.register(gimli::X86_64::RA) {
                Some(RegisterRule::Undefined) => OCfa::Other("ra-undefined"),
                _ => cfa,
            };
            let rbp = match row.register(gimli::X86_64::RBP) {
                Some(RegisterRule::Offset(o)) => Some(o),
                _ => None,
            };
            rows.push((row.start_address(), row.end_address(), ORow { cfa, rbp }));
        }
    }
    let mut t = Table::from_rows(rows, ranges);
    lsda.sort();
    t.lsda = lsda;
    Ok(t)
}

pub use crate::lsda::landing_pads;

/// Rows of an `.eh_frame` section loaded at `addr` (with `.text` and `.got` for pc/data-relative pointers).
pub fn eh_frame(data: &[u8], addr: u64, text: u64, got: u64) -> Result<Table, String> {
    let sec = EhFrame::new(data, LittleEndian);
    let bases = BaseAddresses::default().set_eh_frame(addr).set_text(text).set_got(got);
    collect(&sec, &bases, data)
}

pub fn debug_frame(data: &[u8]) -> Result<Table, String> {
    let mut sec = DebugFrame::new(data, LittleEndian);
    sec.set_address_size(8);
    collect(&sec, &BaseAddresses::default(), data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drap_expression() {
        assert_eq!(deref_expr(&[0x76, 0x78, 0x06]), OCfa::Deref { reg: 6, off: -8 });
        assert_eq!(deref_expr(&[0x76, 0x78]), OCfa::Other("expr"));
        assert_eq!(deref_expr(&[]), OCfa::Other("expr"));
    }
}

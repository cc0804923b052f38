//! A function's landing pads from its LSDA (`.gcc_except_table`): where a C++ catch
//! block or cleanup is entered, which no jump in the code shows.

/// Read one value of DW_EH_PE encoding `enc` (low nibble only; call-site fields are offsets).
fn read_enc(b: &[u8], pos: &mut usize, enc: u8) -> Option<u64> {
    let fixed = |n: usize, pos: &mut usize| -> Option<u64> {
        let s = b.get(*pos..pos.checked_add(n)?)?;
        *pos += n;
        let mut w = [0u8; 8];
        w[..n].copy_from_slice(s);
        Some(u64::from_le_bytes(w))
    };
    match enc & 0x0f {
        0x00 | 0x04 | 0x0c => fixed(8, pos),
        0x01 => uleb(b, pos),
        0x02 => fixed(2, pos),
        0x03 => fixed(4, pos),
        0x0a => fixed(2, pos).map(|v| v as u16 as i16 as i64 as u64),
        0x0b => fixed(4, pos).map(|v| v as u32 as i32 as i64 as u64),
        _ => None,
    }
}

fn uleb(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    let mut shift = 0u32;
    loop {
        let byte = *b.get(*pos)?;
        *pos += 1;
        if shift < 64 {
            v |= u64::from(byte & 0x7f) << shift;
        }
        shift += 7;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
}

/// Call-site table of the LSDA at `lsda` (inside `sec`, linked at `sec_addr`):
/// (range start, range end, landing pad) for entries with a pad.
pub fn landing_pads(sec: &[u8], sec_addr: u64, lsda: u64, func: u64) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    let Some(mut pos) = lsda.checked_sub(sec_addr).and_then(|o| usize::try_from(o).ok()) else { return out };
    let mut go = || -> Option<()> {
        let lp_enc = *sec.get(pos)?;
        pos += 1;
        let mut lpstart = func;
        if lp_enc != 0xff {
            lpstart = read_enc(sec, &mut pos, lp_enc)?;
        }
        let tt_enc = *sec.get(pos)?;
        pos += 1;
        if tt_enc != 0xff {
            uleb(sec, &mut pos)?;
        }
        let cs_enc = *sec.get(pos)?;
        pos += 1;
        let len = usize::try_from(uleb(sec, &mut pos)?).ok()?;
        let end = pos.checked_add(len)?;
        while pos < end && out.len() < 100_000 {
            let start = read_enc(sec, &mut pos, cs_enc)?;
            let n = read_enc(sec, &mut pos, cs_enc)?;
            let pad = read_enc(sec, &mut pos, cs_enc)?;
            uleb(sec, &mut pos)?;
            if pad != 0 {
                let lo = func.wrapping_add(start);
                out.push((lo, lo.wrapping_add(n), lpstart.wrapping_add(pad)));
            }
        }
        Some(())
    };
    let _ = go();
    out
}

//! Synthetic inputs shared by the unit tests and the fuzz harness (`fuzz/`).

/// A minimal ELF64 executable with the given sections `(name, sh_type, sh_flags, addr, offset, size)`
/// and `body` bytes after the header.
pub fn tiny_elf(sections: &[(&str, u32, u64, u64, u64, u64)], body: &[u8]) -> Vec<u8> {
    let mut shstr = vec![0u8];
    let mut names = Vec::new();
    for s in sections.iter().map(|s| s.0).chain([".shstrtab"]) {
        names.push(shstr.len() as u32);
        shstr.extend_from_slice(s.as_bytes());
        shstr.push(0);
    }
    let shstr_off = 64 + body.len();
    let shoff = (shstr_off + shstr.len() + 7) & !7;
    let n = sections.len() + 2;
    let mut f = vec![0u8; shoff + 64 * n];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2;
    f[5] = 1;
    f[6] = 1;
    f[16..18].copy_from_slice(&2u16.to_le_bytes());
    f[18..20].copy_from_slice(&62u16.to_le_bytes());
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[40..48].copy_from_slice(&(shoff as u64).to_le_bytes());
    f[52..54].copy_from_slice(&64u16.to_le_bytes());
    f[58..60].copy_from_slice(&64u16.to_le_bytes());
    f[60..62].copy_from_slice(&(n as u16).to_le_bytes());
    f[62..64].copy_from_slice(&((n - 1) as u16).to_le_bytes());
    f[64..64 + body.len()].copy_from_slice(body);
    f[shstr_off..shstr_off + shstr.len()].copy_from_slice(&shstr);
    let mut put = |i: usize, name: u32, ty: u32, flags: u64, addr: u64, off: u64, size: u64| {
        let h = &mut f[shoff + 64 * i..shoff + 64 * (i + 1)];
        h[0..4].copy_from_slice(&name.to_le_bytes());
        h[4..8].copy_from_slice(&ty.to_le_bytes());
        h[8..16].copy_from_slice(&flags.to_le_bytes());
        h[16..24].copy_from_slice(&addr.to_le_bytes());
        h[24..32].copy_from_slice(&off.to_le_bytes());
        h[32..40].copy_from_slice(&size.to_le_bytes());
        h[48..56].copy_from_slice(&1u64.to_le_bytes());
    };
    for (i, s) in sections.iter().enumerate() {
        put(i + 1, names[i], s.1, s.2, s.3, s.4, s.5);
    }
    put(n - 1, names[sections.len()], 3, 0, 0, shstr_off as u64, shstr.len() as u64);
    f
}

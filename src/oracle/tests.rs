//! The engine against gcc's own `.eh_frame` on a file of frame shapes, at many settings.

use std::path::PathBuf;
use std::process::Command;

use super::compare::check;
use super::image::Image;
use crate::synth::tiny_elf;

const CONFIGS: &[&str] = &[
    "-O0",
    "-O2",
    "-O3",
    "-Os",
    "-O0 -fno-omit-frame-pointer",
    "-O2 -fno-omit-frame-pointer",
    "-O3 -fno-omit-frame-pointer",
    "-Os -fno-omit-frame-pointer",
    "-O2 -fstack-clash-protection",
    "-O0 -fstack-clash-protection",
    "-O2 -mavx2",
    "-O0 -mavx2",
    "-O3 -mavx2 -fno-omit-frame-pointer -fstack-clash-protection",
    "-Os -mavx2 -fstack-clash-protection",
];

#[test]
fn gcc_shapes_agree_with_eh_frame() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/shapes.c");
    let dir = std::env::temp_dir().join(format!("stackproof-layout-{}", std::process::id()));
    if std::fs::create_dir_all(&dir).is_err() {
        eprintln!("skipped: no temp dir");
        return;
    }
    if Command::new("gcc").arg("--version").output().is_err() {
        eprintln!("skipped: no gcc");
        return;
    }
    let mut failures = Vec::new();
    for (i, flags) in CONFIGS.iter().enumerate() {
        let out = dir.join(format!("shapes{i}"));
        let st = Command::new("gcc").args(flags.split(' ')).arg("-w").arg(&src).arg("-o").arg(&out).status();
        if !st.is_ok_and(|s| s.success()) {
            failures.push(format!("{flags}: gcc failed"));
            continue;
        }
        let img = Image::load(&out).unwrap();
        let table = img.cfi().unwrap();
        let r = check(&img, &table, None);
        let agree = r.agree as f64 / r.answered.max(1) as f64;
        let answered = r.answered as f64 / r.covered.max(1) as f64;
        // written as gcc writes it (rsp-based unless a frame pointer or DRAP slot); gcc
        // names the DRAP register one instruction before rsp stops being exact
        let same = r.same_rule as f64 / r.answered.max(1) as f64;
        eprintln!(
            "{flags}: {} covered, {} answered, {} agree, {} same rule",
            r.covered, r.answered, r.agree, r.same_rule
        );
        if r.covered < 200 || agree < 0.999 || answered < 0.97 || same < 0.99 {
            failures.push(format!("{flags}:\n{}", r.summary()));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The kernel fixture against objtool's ORC. Slow in debug builds:
/// `cargo test --lib --release -- --ignored kernel_orc`.
#[test]
#[ignore]
fn kernel_orc_agrees() {
    let out = crate::testdata::kernel_fixture("vmlinux-text-orc").unwrap();
    let img = Image::load(&out).unwrap();
    let table = img.orc().unwrap();
    let r = check(&img, &table, None);
    eprintln!("{}", r.summary());
    assert!(r.covered > 2_000_000);
    assert!(r.answered as f64 / r.covered as f64 > 0.99);
    assert!(r.agree as f64 / r.answered as f64 > 0.999);
}

#[test]
fn section_sizes_past_the_end_of_the_file_are_not_trusted() {
    const PROGBITS: u32 = 1;
    const ALLOC_EXEC: u64 = 0x6;
    let dir = std::env::temp_dir().join(format!("stackproof-tiny-elf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, size) in
        [(".plt", 0x10_0000u64), (".plt.sec", u64::MAX / 2), (".plt.got", 0x20_0000), (".text", 1 << 40)]
    {
        let data = tiny_elf(&[(name, PROGBITS, ALLOC_EXEC, 0x401000, 64, size)], &[0; 256]);
        let path = dir.join(name.trim_start_matches('.'));
        std::fs::write(&path, &data).unwrap();
        let img = Image::load(&path).unwrap();
        // One PLT entry per 16 bytes of the file at most (a huge sh_size pushed 2 GB of them).
        assert!(img.functions(&[]).len() <= data.len() / 16, "{name}");
        assert!(!img.in_plt(0x401000 + 0x1000), "{name}");
        assert!(img.bytes(0x401000, 0x401010).is_none(), "{name}: bytes beyond the file");
    }
    // In the file: still one stub per 16 bytes.
    let data = tiny_elf(&[(".plt", PROGBITS, ALLOC_EXEC, 0x401000, 64, 64)], &[0; 256]);
    let path = dir.join("plt-ok");
    std::fs::write(&path, &data).unwrap();
    let img = Image::load(&path).unwrap();
    assert_eq!(img.functions(&[]).len(), 4);
    assert!(crate::elf::load_symbols(&path, &crate::elf::Placement::Bias(0), None).unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

//! The engine against gcc's own `.eh_frame` on a file of frame shapes, at many settings.

use std::path::PathBuf;
use std::process::Command;

use super::compare::check;
use super::image::Image;

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
        eprintln!("{flags}: {} covered, {} answered, {} agree", r.covered, r.answered, r.agree);
        if r.covered < 200 || agree < 0.999 || answered < 0.97 {
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

//! Test-only access to the committed fixtures; `.xz` files are unpacked on demand
//! into `tests/build/` (gitignored) so the repository keeps only compressed copies.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

static UNPACK: Mutex<()> = Mutex::new(());

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file under `tests/fixtures/`, as committed.
pub fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures").join(rel)
}

/// `tests/fixtures/kernel/<rel>`, decompressed from `<rel>.xz` into `tests/build/kernel/<rel>`
/// when needed; files committed uncompressed are returned in place.
pub fn kernel_fixture(rel: &str) -> Result<PathBuf, String> {
    let plain = fixture("kernel").join(rel);
    if plain.exists() {
        return Ok(plain);
    }
    let src = fixture("kernel").join(format!("{rel}.xz"));
    let out = root().join("tests/build/kernel").join(rel);
    // Tests run in parallel threads; one unpacks while the others wait.
    let _guard = UNPACK.lock().unwrap_or_else(|e| e.into_inner());
    if !fresh(&out, &src) {
        unpack(&src, &out)?;
    }
    Ok(out)
}

fn fresh(out: &Path, src: &Path) -> bool {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((m(out), m(src)), (Some(o), Some(s)) if o >= s)
}

fn unpack(src: &Path, out: &Path) -> Result<(), String> {
    let err = |what: &str, e: std::io::Error| format!("{what} for {}: {e}", out.display());
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err("mkdir", e))?;
    }
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let file = std::fs::File::create(&tmp).map_err(|e| err("create", e))?;
    let st = Command::new("xz").arg("-dc").arg(src).stdout(file).status().map_err(|e| err("xz", e))?;
    if !st.success() {
        return Err(format!("xz -dc {} failed: {st}", src.display()));
    }
    // Rename is atomic, so another test process never sees half a file.
    std::fs::rename(&tmp, out).map_err(|e| err("rename", e))
}

#[cfg(test)]
mod tests {
    #[test]
    fn unpacks_kernel_fixture() {
        let p = super::kernel_fixture("irq/minicore.elf").unwrap();
        let head = std::fs::read(&p).unwrap();
        assert_eq!(&head[..4], b"\x7fELF");
        assert!(super::kernel_fixture("irq/kaslr.txt").unwrap().ends_with("tests/fixtures/kernel/irq/kaslr.txt"));
    }
}

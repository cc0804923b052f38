//! stackproof: check backtraces and recover registers from raw x86-64 stacks.
//!
//! The core knows nothing of gdb: memory comes in through [`memory::Memory`],
//! symbols through [`symbols::Symbols`]. `python` is the thin pyo3 binding.

pub mod check;
pub mod corefile;
pub mod crashbt;
pub mod elf;
pub mod frame;
pub mod json;
pub mod kernel;
pub mod layout;
pub mod libc;
pub mod lsda;
pub mod memo;
pub mod memory;
pub mod oracle;
pub mod regs;
pub mod report;
pub mod resolve;
pub mod symbols;
#[doc(hidden)]
pub mod synth;
pub mod text;
pub mod unwind;
pub mod verify;
pub mod x86;

#[cfg(test)]
pub(crate) mod testdata;

#[cfg(feature = "python")]
mod python;

#[cfg(feature = "capi")]
pub mod capi;

pub use oracle::cli::layout_cli;

/// The message of a caught panic, for the one line a front-end prints instead of dying.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// stackproof's version: Cargo.toml's, the one place it is written (package, wheel,
/// `--version`, `help`, the JSON documents).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

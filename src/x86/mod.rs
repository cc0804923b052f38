//! x86-64 code checks: which call ends at a return address, and where a call leads.

pub mod decode;

pub use decode::{decode, format_att, Flow, Insn, Reg, Segment};

//! x86-64 code checks: which call ends at a return address, and where a call leads.

pub mod callsite;
pub mod decode;
pub mod target;

pub use callsite::{call_before, Boundary, CallCheck, CallSite, CallTarget, MemOperand};
pub use decode::{decode, format_att, Flow, Insn, Reg, Segment};
pub use target::{follow_target, Hop, Limits, TargetMatch, Unknown};

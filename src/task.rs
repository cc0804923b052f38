//! Where a sleeping kernel task resumes. `task_struct.thread.sp` points at the
//! `struct inactive_task_frame` that `__switch_to_asm` pushed (r15 r14 r13 r12
//! bx bp ret_addr): the task resumes at `ret_addr` with sp just above the frame.

use crate::memory::{Memory, ReadError};
use crate::symbols::Symbols;
use crate::unwind::Start;
use crate::verify::FrameIn;

/// Words of `struct inactive_task_frame` (x86-64, 4.9+).
pub const INACTIVE_FRAME_WORDS: u64 = 7;

/// The registers a task switched out at `saved_sp` (its thread.sp) resumes with.
pub fn switch_frame_start<M: Memory>(mem: &M, saved_sp: u64) -> Result<Start, ReadError> {
    let word = |i: u64| mem.read_u64(saved_sp.wrapping_add(8 * i)).ok();
    let pc = mem.read_u64(saved_sp.wrapping_add(8 * (INACTIVE_FRAME_WORDS - 1)))?;
    // callee_saved order: rbx rbp r12 r13 r14 r15.
    let callee_saved = [word(4), word(5), word(3), word(2), word(1), word(0)];
    Ok(Start { pc, sp: saved_sp.wrapping_add(8 * INACTIVE_FRAME_WORDS), callee_saved })
}

/// A resumed task's frame 0: `ret_addr` was pushed by `call __switch_to_asm`, so its
/// slot (the frame's last word) is checked like any return address, unless it is a
/// function's first byte (`ret_from_fork` of a task that never ran).
pub fn resume_frames<S: Symbols>(syms: &S, mut frames: Vec<FrameIn>, start: &Start) -> Vec<FrameIn> {
    let at_entry = syms.lookup(start.pc).is_some_and(|s| s.start == start.pc);
    if let Some(f) = frames.first_mut().filter(|_| !at_entry) {
        f.slot = start.sp.checked_sub(8);
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Regions;

    #[test]
    fn switch_frame_registers() {
        let mut m = Regions::new();
        m.add_u64s(0x1000, &[15, 14, 13, 12, 3, 5, 0xffffffff81000010]);
        let s = switch_frame_start(&m, 0x1000).unwrap();
        assert_eq!((s.pc, s.sp), (0xffffffff81000010, 0x1038));
        assert_eq!(s.callee_saved, [Some(3), Some(5), Some(12), Some(13), Some(14), Some(15)]);
        assert!(switch_frame_start(&m, 0x2000).is_err());
    }
}

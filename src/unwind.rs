//! An unwinder of our own, from registers alone: no debugger, no CFI.
//!
//! Each step finds where the current frame's return address is. When the
//! layout of the function is not known, the stack is scanned for the first
//! word that is a return address whose call leads to the current function
//! (trust `scan`).

use crate::memory::Memory;
use crate::symbols::Symbols;
use crate::verify::{function_of_ra, FrameIn, FrameKind, Trust};
use crate::x86::{call_before, follow_target, CallCheck, CallTarget, Limits, TargetMatch};

/// How far above a frame's sp a scan looks for its return address.
pub const SCAN_WINDOW: u64 = 16 * 1024;

/// Unwound frames and, when the chain ended early, why.
pub struct Unwound {
    pub frames: Vec<FrameIn>,
    pub stop: Option<String>,
}

/// Unwind from `pc`/`sp` (and `bp` when known) for at most `max` frames.
pub fn unwind<M: Memory, S: Symbols>(mem: &M, syms: &S, pc: u64, sp: u64, _bp: Option<u64>, max: usize) -> Unwound {
    let mut frames = vec![FrameIn {
        level: 0,
        pc,
        sp: Some(sp),
        slot: None,
        kind: FrameKind::Normal,
        name: None,
        trust: Trust::Registers,
    }];
    let mut stop = None;
    let (mut pc, mut sp, mut is_ra) = (pc, sp, false);
    while frames.len() < max {
        match scan_for_return(mem, syms, pc, sp, is_ra) {
            Ok(Some((slot, ra))) => {
                let next_sp = slot + 8;
                frames.push(FrameIn {
                    level: frames.len() as u32,
                    pc: ra,
                    sp: Some(next_sp),
                    slot: Some(slot),
                    kind: FrameKind::Normal,
                    name: None,
                    trust: Trust::Scan,
                });
                pc = ra;
                sp = next_sp;
                is_ra = true;
            }
            Ok(None) => break,
            Err(e) => {
                stop = Some(e);
                break;
            }
        }
    }
    if frames.len() >= max {
        stop = Some(format!("stopped after {max} frames"));
    }
    Unwound { frames, stop }
}

/// The first slot at or above `sp` holding a return address whose call leads to
/// the function of `pc`. `Ok(None)`: nothing found in the window (the chain ends).
fn scan_for_return<M: Memory, S: Symbols>(
    mem: &M,
    syms: &S,
    pc: u64,
    sp: u64,
    pc_is_ra: bool,
) -> Result<Option<(u64, u64)>, String> {
    let current = if pc_is_ra { function_of_ra(syms, pc) } else { syms.lookup(pc) };
    let mut slot = sp;
    let end = sp.saturating_add(SCAN_WINDOW);
    while slot < end {
        let v = match mem.read_u64(slot) {
            Ok(v) => v,
            Err(e) => return if slot == sp { Err(e.to_string()) } else { Ok(None) },
        };
        if plausible_code_address(v) {
            if let Some(f) = function_of_ra(syms, v) {
                if let Ok(CallCheck::Call { site, .. }) = call_before(mem, v, Some(f.start)) {
                    let leads_here = match (&site.target, &current) {
                        (CallTarget::Direct(t), Some(cur)) => {
                            !matches!(follow_target(mem, syms, *t, cur, &Limits::default()), TargetMatch::Mismatch { .. })
                        }
                        // An indirect call could have gone anywhere.
                        _ => true,
                    };
                    if leads_here {
                        return Ok(Some((slot, v)));
                    }
                }
            }
        }
        slot = match slot.checked_add(8) {
            Some(s) => s,
            None => break,
        };
    }
    Ok(None)
}

/// `func+off` when `v` is a return address: in a function, right after a call.
pub fn return_address_in<M: Memory, S: Symbols>(mem: &M, syms: &S, v: u64) -> Option<String> {
    if !plausible_code_address(v) {
        return None;
    }
    let f = function_of_ra(syms, v)?;
    match call_before(mem, v, Some(f.start)) {
        Ok(CallCheck::Call { .. }) => Some(f.describe(v)),
        _ => None,
    }
}

/// Canonical, not tiny: worth a symbol lookup.
fn plausible_code_address(v: u64) -> bool {
    v >= 0x1000 && (v < 0x0000_8000_0000_0000 || v >= 0xffff_8000_0000_0000)
}

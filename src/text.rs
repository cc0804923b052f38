//! A verified frame as one line of text, crash style:
//! `#N [slot] function+off [module] at ra   trust verdict reasons`, `?` before
//! a bogus frame. Written here because a deep stack has thousands of lines; the
//! rest of the output (titles, the own chain, evidence) is the gdb layer's.

use crate::verify::{FrameKind, FrameReport, Reason, Trust, Unplaced, Verdict};

const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const GREEN: &str = "\x1b[32m";
const RESET: &str = "\x1b[0m";

/// What a line shows.
struct Line<'a> {
    level: u32,
    slot: Option<u64>,
    pc: Option<u64>,
    interrupted: bool,
    name: String,
    verdict: Verdict,
    trust: Trust,
    why: &'a str,
}

fn render(l: &Line, colour: bool) -> String {
    let slot = l.slot.map(|s| format!("[{s:016x}] ")).unwrap_or_default();
    let at = l.pc.map(|pc| format!(" at {pc:016x}")).unwrap_or_default();
    let head = if l.interrupted {
        format!("     [exception RIP: {}]{at}", l.name)
    } else {
        let mark = if l.verdict == Verdict::Bogus { '?' } else { ' ' };
        format!("{mark}#{:<3} {slot}{}{at}", l.level, l.name)
    };
    let shown = match l.verdict {
        Verdict::Bogus => "BOGUS",
        v => v.as_str(),
    };
    let painted = if colour {
        let c = match l.verdict {
            Verdict::Bogus => RED,
            Verdict::Ok => GREEN,
            Verdict::Probable | Verdict::Unknown => YELLOW,
        };
        format!("{c}{shown}{RESET}")
    } else {
        shown.to_string()
    };
    let pad = " ".repeat(8usize.saturating_sub(shown.len()));
    let line = format!("{head:<72} {:<9} {painted}{pad} {}", l.trust.as_str(), l.why);
    line.trim_end().to_string()
}

/// `function+off [module]` (or gdb's name, or `??`).
pub fn frame_name(r: &FrameReport) -> String {
    with_module(r.describe(), r.function.as_ref().and_then(|s| s.module.as_deref()))
}

/// `function+off [kvm]`, as crash names a place in a module.
pub fn with_module(describe: String, module: Option<&str>) -> String {
    match module {
        Some(m) => format!("{describe} [{m}]"),
        None => describe,
    }
}

/// The reasons, with what makes them concrete (the slot's value, the call's target).
pub fn reasons(r: &FrameReport) -> String {
    let target = r.call.as_ref().and_then(|c| c.target_function.as_deref());
    let parts: Vec<String> = r
        .reasons
        .iter()
        .map(|x| match (x, r.slot_value, target) {
            (Reason::SlotMismatch, Some(v), _) => format!("slot-mismatch (slot holds {v:016x})"),
            (Reason::WrongTarget, _, Some(t)) => format!("wrong-target (call goes to {t})"),
            (Reason::CalleeBogus, _, Some(t)) => format!("callee-bogus (it calls {t})"),
            (other, _, _) => other.to_string(),
        })
        .collect();
    parts.join(", ")
}

pub fn frame_line(r: &FrameReport, colour: bool) -> String {
    let why = reasons(r);
    let line = Line {
        level: r.level,
        slot: r.slot,
        pc: Some(r.pc),
        interrupted: r.kind == FrameKind::Interrupted,
        name: frame_name(r),
        verdict: r.verdict,
        trust: r.trust,
        why: &why,
    };
    render(&line, colour)
}

/// A frame crash printed without an address.
pub fn unplaced_line(u: &Unplaced, colour: bool) -> String {
    let line = Line {
        level: u.level,
        slot: None,
        pc: None,
        interrupted: false,
        name: u.function.clone(),
        verdict: Unplaced::VERDICT,
        trust: Unplaced::TRUST,
        why: Unplaced::REASON,
    };
    render(&line, colour)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bogus_frames_are_marked_and_padded() {
        let line = Line {
            level: 0,
            slot: Some(0xffff88003e5ebce8),
            pc: Some(0xffffffff816a8f45),
            interrupted: false,
            name: "__schedule+0x245".into(),
            verdict: Verdict::Bogus,
            trust: Trust::Scan,
            why: "slot-mismatch (slot holds 0000000000000000)",
        };
        assert_eq!(
            render(&line, false),
            format!(
                "{:<72} scan      BOGUS    slot-mismatch (slot holds 0000000000000000)",
                "?#0   [ffff88003e5ebce8] __schedule+0x245 at ffffffff816a8f45"
            )
        );
        assert_eq!(
            unplaced_line(&Unplaced { level: 3, function: "f".into() }, false),
            format!("{:<72} scan      unknown  no-address", " #3   f")
        );
    }
}

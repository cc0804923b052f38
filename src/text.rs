//! A verified frame as one line of text, crash style:
//! `#N [slot] function+off [module] at ra   trust verdict reasons`, `?` before
//! a bogus frame. Written here because a deep stack has thousands of lines; the
//! rest of the output (titles, the own chain, evidence) is the gdb layer's.

use crate::verify::{FrameKind, FrameReport, Reason, Trust, Unplaced, Verdict};

const RESET: &str = "\x1b[0m";

/// Lines fit the front-end's `columns` (gdb's `set width`; 0: unlimited) when they
/// can: reasons that would not fit go on the next line, indented, and a frame part
/// wider than `columns - COLUMNS_AFTER_HEAD` (a long libc or kernel name) puts the
/// trust and verdict columns under it, still aligned.
const COLUMNS_AFTER_HEAD: usize = 20;
const WRAP_INDENT: &str = "        ";

/// The escape sequence that starts each styled part of a line (empty: plain), as
/// gdb's `set style` settings give them. The front-end builds them only when its
/// own output would be styled (gdb: styling on, a terminal, typed by the user).
#[derive(Clone, Debug, Default)]
pub struct Styles {
    pub function: String,
    pub address: String,
    /// a bogus verdict (gdb's `highlight` style)
    pub bogus: String,
    /// an unknown verdict (gdb's `metadata` style)
    pub unknown: String,
}

impl Styles {
    /// gdb's default styles: function yellow, address blue, highlight red, metadata dim.
    pub fn gdb_defaults() -> Styles {
        Styles {
            function: "\x1b[33m".into(),
            address: "\x1b[34m".into(),
            bogus: "\x1b[31m".into(),
            unknown: "\x1b[2m".into(),
        }
    }
}

/// `text` in `style` (none: as it is) onto `out`.
fn paint(out: &mut String, style: Option<&String>, text: &str) {
    match style.filter(|s| !s.is_empty()) {
        Some(s) => {
            out.push_str(s);
            out.push_str(text);
            out.push_str(RESET);
        }
        None => out.push_str(text),
    }
}

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

/// The frame part, `?#N [slot] function+off at pc` (or crash's `[exception RIP: ...]`):
/// its width and its text.
fn head(l: &Line, styles: Option<&Styles>) -> (usize, String) {
    let mut s = String::with_capacity(96);
    let mut plain = 0;
    let mut put = |s: &mut String, style: Option<&String>, text: &str| {
        plain += text.len();
        paint(s, style, text);
    };
    if l.interrupted {
        put(&mut s, None, "     [exception RIP: ");
        put(&mut s, styles.map(|x| &x.function), &l.name);
        put(&mut s, None, "]");
    } else {
        let mark = if l.verdict == Verdict::Bogus { "?" } else { " " };
        put(&mut s, None, &format!("{mark}#{:<3} ", l.level));
        if let Some(slot) = l.slot {
            put(&mut s, None, "[");
            put(&mut s, styles.map(|x| &x.address), &format!("{slot:016x}"));
            put(&mut s, None, "] ");
        }
        put(&mut s, styles.map(|x| &x.function), &l.name);
    }
    if let Some(pc) = l.pc {
        put(&mut s, None, " at ");
        put(&mut s, styles.map(|x| &x.address), &format!("{pc:016x}"));
    }
    (plain, s)
}

/// The line: the frame part padded to `width` (the widest of its thread, at most
/// what `columns` leaves, so that the columns align), trust, verdict, reasons.
fn render(l: &Line, width: usize, columns: usize, styles: Option<&Styles>) -> String {
    let columns = if columns == 0 { usize::MAX } else { columns };
    let (plain, mut line) = head(l, styles);
    let shown = match l.verdict {
        Verdict::Bogus => "BOGUS",
        v => v.as_str(),
    };
    let width = width.min(columns.saturating_sub(COLUMNS_AFTER_HEAD));
    let at = if plain > width {
        line.push('\n');
        0
    } else {
        plain
    };
    let pad = width - at;
    line.extend(std::iter::repeat_n(' ', pad));
    let trust = format!(" {:<9} ", l.trust.as_str());
    line.push_str(&trust);
    let style = styles.and_then(|x| match l.verdict {
        Verdict::Bogus => Some(&x.bogus),
        Verdict::Unknown => Some(&x.unknown),
        _ => None,
    });
    paint(&mut line, style, shown);
    if l.why.is_empty() {
        return line;
    }
    let used = at + pad + trust.len() + shown.len();
    let gap = 8usize.saturating_sub(shown.len()) + 1;
    if (used + gap).saturating_add(l.why.len()) <= columns {
        line.extend(std::iter::repeat_n(' ', gap));
    } else {
        line.push('\n');
        line.push_str(WRAP_INDENT);
    }
    line.push_str(l.why);
    line
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

fn frame_fields<'a>(r: &FrameReport, why: &'a str) -> Line<'a> {
    Line {
        level: r.level,
        slot: r.slot,
        pc: Some(r.pc),
        interrupted: r.kind == FrameKind::Interrupted,
        name: frame_name(r),
        verdict: r.verdict,
        trust: r.trust,
        why,
    }
}

/// The width of the frame's line up to its trust column.
pub fn frame_head_width(r: &FrameReport) -> usize {
    head(&frame_fields(r, ""), None).0
}

/// The frame's line, its trust column at `width` (see `frame_head_width`).
pub fn frame_line(r: &FrameReport, width: usize, columns: usize, styles: Option<&Styles>) -> String {
    let why = reasons(r);
    render(&frame_fields(r, &why), width, columns, styles)
}

/// A frame crash printed without an address.
fn unplaced_fields(u: &Unplaced) -> Line<'static> {
    Line {
        level: u.level,
        slot: None,
        pc: None,
        interrupted: false,
        name: u.function.clone(),
        verdict: Unplaced::VERDICT,
        trust: Unplaced::TRUST,
        why: Unplaced::REASON,
    }
}

pub fn unplaced_head_width(u: &Unplaced) -> usize {
    head(&unplaced_fields(u), None).0
}

pub fn unplaced_line(u: &Unplaced, width: usize, columns: usize, styles: Option<&Styles>) -> String {
    render(&unplaced_fields(u), width, columns, styles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bogus_frames_are_marked_padded_and_wrapped() {
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
        let head = "?#0   [ffff88003e5ebce8] __schedule+0x245 at ffffffff816a8f45";
        assert_eq!(
            render(&line, 64, 80, None),
            format!("{head}\n{:60} scan      BOGUS\n        slot-mismatch (slot holds 0000000000000000)", "")
        );
        assert_eq!(
            render(&line, 64, 0, None),
            format!("{head:<64} scan      BOGUS    slot-mismatch (slot holds 0000000000000000)")
        );
        let short = Line { why: "tail-call", verdict: Verdict::Probable, slot: None, ..line };
        assert_eq!(
            render(&short, 50, 80, None),
            format!("{:<50} scan      probable tail-call", " #0   __schedule+0x245 at ffffffff816a8f45")
        );
        assert_eq!(
            unplaced_line(&Unplaced { level: 3, function: "f".into() }, 10, 0, None),
            format!("{:<10} scan      unknown  no-address", " #3   f")
        );
    }

    #[test]
    fn styles_paint_names_addresses_and_verdicts_without_moving_columns() {
        let line = Line {
            level: 2,
            slot: Some(0x7ffc0),
            pc: Some(0x401000),
            interrupted: false,
            name: "main+0x5".into(),
            verdict: Verdict::Bogus,
            trust: Trust::Cfi,
            why: "",
        };
        let st = Styles { function: "<F>".into(), address: "<A>".into(), bogus: "<B>".into(), unknown: String::new() };
        let plain = render(&line, 60, 80, None);
        let styled = render(&line, 60, 80, Some(&st));
        assert_eq!(styled.replace("<F>", "").replace("<A>", "").replace("<B>", "").replace(RESET, ""), plain);
        assert!(styled.contains("<F>main+0x5\x1b[0m") && styled.contains("<A>000000000007ffc0\x1b[0m"), "{styled}");
        assert!(styled.ends_with("<B>BOGUS\x1b[0m"), "{styled}");
        assert!(!render(&line, 60, 80, Some(&Styles::default())).contains('\x1b'));
    }
}

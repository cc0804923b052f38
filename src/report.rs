//! The `verify-bt` documents: the text (frame lines, evidence, stackproof's own
//! chain, the corrected chain) and the `stackproof/verify-bt/1` JSON
//! (docs/json.md). One home for both outputs, whatever the front-end (gdb's
//! Python layer, the crash extension). Bump the schema on an incompatible change.

use std::fmt::Write;

use crate::json;
use crate::symbols::{Symbol, Symbols};
use crate::text::Styles;
use crate::verify::{function_of_ra, FrameIn, FrameKind, FrameReport, Unplaced, Verdict};

pub const VERIFY_SCHEMA: &str = "stackproof/verify-bt/1";

/// A checked frame of a backtrace.
pub enum Row {
    Frame(Box<FrameReport>),
    /// A frame crash printed without an address: nothing to check.
    Unplaced(Unplaced),
}

impl Row {
    pub fn level(&self) -> u32 {
        match self {
            Row::Frame(r) => r.level,
            Row::Unplaced(u) => u.level,
        }
    }

    pub fn verdict(&self) -> Verdict {
        match self {
            Row::Frame(r) => r.verdict,
            Row::Unplaced(_) => Unplaced::VERDICT,
        }
    }

    /// `function+off [module]`, as in the frame's line.
    pub fn name(&self) -> String {
        match self {
            Row::Frame(r) => crate::text::frame_name(r),
            Row::Unplaced(u) => u.function.clone(),
        }
    }

    /// The frame's line, its trust column at `width` (the widest `head_width` of its
    /// thread, so that the columns align).
    /// `columns`: the line width to fit (0: unlimited).
    pub fn line(&self, width: usize, columns: usize, styles: Option<&Styles>) -> String {
        match self {
            Row::Frame(r) => crate::text::frame_line(r, width, columns, styles),
            Row::Unplaced(u) => crate::text::unplaced_line(u, width, columns, styles),
        }
    }

    /// The frame's sp, when it has one.
    pub fn sp(&self) -> Option<u64> {
        match self {
            Row::Frame(r) => r.sp,
            Row::Unplaced(_) => None,
        }
    }

    pub fn head_width(&self) -> usize {
        match self {
            Row::Frame(r) => crate::text::frame_head_width(r),
            Row::Unplaced(u) => crate::text::unplaced_head_width(u),
        }
    }

    pub fn json(&self) -> String {
        match self {
            Row::Frame(r) => json::frame_report(r),
            Row::Unplaced(u) => json::unplaced_frame(u),
        }
    }

    /// The grounds of a verdict, for `-v`.
    pub fn evidence(&self) -> Vec<String> {
        let Row::Frame(fr) = self else { return Vec::new() };
        let mut out = Vec::new();
        if let Some(slot) = fr.slot {
            match fr.slot_value {
                None => out.push(format!("slot {slot:016x}: unreadable")),
                Some(v) if v == fr.pc => out.push(format!("slot {slot:016x} holds {v:016x} = return address")),
                Some(v) => out.push(format!("slot {slot:016x} holds {v:016x} != return address {:016x}", fr.pc)),
            }
        }
        if let Some(c) = &fr.call {
            let mut line = format!("call at {:016x}: {}", c.site.addr, c.site.text);
            if let Some(t) = c.target {
                let _ = write!(line, "  -> {t:016x}");
                if let Some(f) = c.target_function.as_deref().filter(|f| !f.is_empty()) {
                    let _ = write!(line, " <{f}>");
                }
            }
            out.push(line);
            out.extend(c.resolution.iter().map(|how| format!("  resolved: {how}")));
            out.extend(c.via.iter().map(|hop| format!("  via {hop}")));
        }
        if let Some(e) = fr.expected_slot {
            out.push(format!("inner frame's layout puts this slot at {e:016x}"));
        }
        out
    }
}

/// A frame of stackproof's own chain, with the function it is in.
#[derive(Clone)]
pub struct ChainRow {
    pub frame: FrameIn,
    pub function: Option<Symbol>,
    /// The return addresses the frame's pc is one of (its own was lost and its caller
    /// has several calls that fit); empty when the pc is known.
    pub candidates: Vec<u64>,
}

impl ChainRow {
    pub fn new<S: Symbols>(syms: &S, fr: &FrameIn) -> Self {
        // A caller's pc is a return address: its function is that of pc - 1.
        let is_ra = fr.level > 0 && fr.kind == FrameKind::Normal;
        let function = if is_ra { function_of_ra(syms, fr.pc) } else { syms.lookup(fr.pc) };
        ChainRow { frame: fr.clone(), function, candidates: Vec::new() }
    }

    /// The row of an own chain's frame.
    pub fn of<S: Symbols>(syms: &S, f: &crate::frame::Frame) -> Self {
        let mut row = Self::new(syms, &f.frame);
        row.candidates = f.candidates.clone();
        row
    }

    /// `f+0x10`; `f (one of 3 calls: +0x10, +0x24, +0x3c)` when the pc is one of several.
    pub fn describe(&self) -> String {
        let Some(s) = self.function.as_ref() else { return "??".to_string() };
        if self.candidates.len() < 2 {
            return s.describe(self.frame.pc);
        }
        let offs: Vec<String> = self.candidates.iter().map(|pc| format!("+{:#x}", pc.wrapping_sub(s.start))).collect();
        format!("{} (one of {} calls: {})", s.name, offs.len(), offs.join(", "))
    }

    pub fn name(&self) -> String {
        crate::text::with_module(self.describe(), self.function.as_ref().and_then(|s| s.module.as_deref()))
    }

    pub fn json(&self) -> String {
        json::chain_frame(&self.frame, self.function.as_ref(), &self.candidates)
    }
}

/// Where the backtrace and stackproof's own chain differ.
pub struct Compare<'a> {
    pub invented: Vec<u32>,
    pub lost: Vec<&'a ChainRow>,
}

impl Compare<'_> {
    pub fn agree(&self) -> bool {
        self.invented.is_empty() && self.lost.is_empty()
    }
}

/// A kernel task, as crash names it.
pub struct Task<'a> {
    pub pid: u64,
    pub task: u64,
    pub cpu: Option<u32>,
    pub command: &'a str,
}

/// One thread (or task) of a `verify-bt` document.
pub struct Thread<'a> {
    pub title: Option<&'a str>,
    /// The kernel task (crash front-end); written as `task` in the JSON only when known.
    pub task: Option<Task<'a>>,
    /// `gdb`, `registers`, `crash-bt`.
    pub source: &'a str,
    /// gdb's thread number, when there is one.
    pub thread: Option<i64>,
    pub stop: Option<&'a str>,
    pub frames: Vec<&'a Row>,
    /// stackproof's own chain (None: not built, or not kept because it agrees).
    pub chain: Option<Vec<&'a ChainRow>>,
    pub chain_stop: Option<&'a str>,
    /// Present when a backtrace was checked against stackproof's own chain.
    pub compare: Option<Compare<'a>>,
    pub reads: u64,
}

impl Thread<'_> {
    pub fn bogus(&self) -> Vec<u32> {
        self.frames.iter().filter(|f| f.verdict() == Verdict::Bogus).map(|f| f.level()).collect()
    }
}

fn levels(v: &[u32]) -> String {
    v.iter().map(|l| format!("#{l}")).collect::<Vec<_>>().join(", ")
}

/// stackproof's own chain beside the one verified, and where they differ.
fn chain_lines(t: &Thread, out: &mut Vec<String>) {
    let Some(cmp) = &t.compare else { return };
    if cmp.agree() {
        out.push("stackproof's own unwinding agrees.".into());
        return;
    }
    out.push("stackproof's own unwinding (from the registers; trust per frame):".into());
    for c in t.chain.iter().flatten() {
        let slot = c.frame.slot.map(|s| format!("[{s:016x}] ")).unwrap_or_default();
        // A pc that is one of several has no one address to show.
        let at = if c.candidates.len() > 1 { String::new() } else { format!(" at {:016x}", c.frame.pc) };
        out.push(format!("  #{:<3} {slot}{}{at}  {}", c.frame.level, c.name(), c.frame.trust.as_str()));
    }
    if let Some(s) = t.chain_stop.filter(|s| !s.is_empty()) {
        out.push(format!("  (stopped: {s})"));
    }
    if !cmp.invented.is_empty() {
        out.push(format!("Not in stackproof's chain (invented): {}", levels(&cmp.invented)));
    }
    if !cmp.lost.is_empty() {
        let lost: Vec<String> =
            cmp.lost.iter().map(|c| format!("{} (sp {:016x})", c.describe(), c.frame.sp.unwrap_or(0))).collect();
        out.push(format!("Missing from the backtrace (lost): {}", lost.join(", ")));
    }
}

/// The text of one thread: its title, a line per frame (`-v`: with the evidence),
/// stackproof's own chain where it differs, the corrected chain.
/// `columns`: the width lines fit when they can (gdb's `set width`; 0: unlimited).
pub fn thread_text(t: &Thread, verbose: bool, columns: usize, styles: Option<&Styles>) -> String {
    let mut lines = Vec::with_capacity(t.frames.len() + 4);
    if let Some(title) = t.title.filter(|s| !s.is_empty()) {
        lines.push(title.to_string());
    }
    let width = t.frames.iter().map(|f| f.head_width()).max().unwrap_or(0);
    for fr in &t.frames {
        lines.push(fr.line(width, columns, styles));
        if verbose {
            lines.extend(fr.evidence().into_iter().map(|e| format!("        {e}")));
        }
    }
    if let Some(s) = t.stop.filter(|s| !s.is_empty()) {
        lines.push(format!("  (unwinding stopped: {s})"));
    }
    chain_lines(t, &mut lines);
    if let Some(line) = corrected_chain(t) {
        lines.push(line);
    }
    lines.join("\n")
}

/// The backtrace without its bogus frames and with the frames stackproof's own chain
/// found it lacks (lost), each in its place by sp; None when there is nothing to correct.
fn corrected_chain(t: &Thread) -> Option<String> {
    let bogus = t.bogus();
    let lost: &[&ChainRow] = t.compare.as_ref().map_or(&[], |c| &c.lost[..]);
    if bogus.is_empty() && lost.is_empty() {
        return None;
    }
    let mut kept = Vec::new();
    let mut next_lost = lost.iter().peekable();
    for f in t.frames.iter().filter(|f| f.verdict() != Verdict::Bogus) {
        if let Some(sp) = f.sp() {
            while let Some(l) = next_lost.next_if(|l| l.frame.sp.is_some_and(|lsp| lsp < sp)) {
                kept.push(l.name());
            }
        }
        kept.push(f.name());
    }
    kept.extend(next_lost.map(|l| l.name()));
    // Where the backtrace stops (gdb cannot go past a damaged frame), the own chain goes on.
    let reach = t.frames.iter().filter_map(|f| f.sp()).max().unwrap_or(0);
    let beyond: Vec<_> = t.chain.iter().flatten().filter(|c| c.frame.sp.is_some_and(|sp| sp > reach)).collect();
    kept.extend(beyond.iter().map(|c| c.name()));
    let kept = if kept.is_empty() { "(empty)".to_string() } else { kept.join(" <- ") };
    let mut what = Vec::new();
    if !bogus.is_empty() {
        what.push(format!("without {}", levels(&bogus)));
    }
    if !lost.is_empty() {
        what.push(format!("with {} lost", lost.len()));
    }
    if !beyond.is_empty() {
        what.push(format!("{} more from stackproof's chain", beyond.len()));
    }
    let what = what.join(", ");
    Some(format!("Corrected chain ({what}): {kept}"))
}

fn opt_string(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => json::string(out, s),
        None => out.push_str("null"),
    }
}

fn ints(out: &mut String, v: &[u32]) {
    out.push('[');
    for (i, l) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{l}");
    }
    out.push(']');
}

fn array<'a, T: 'a>(out: &mut String, items: impl IntoIterator<Item = &'a T>, json: impl Fn(&T) -> String) {
    out.push('[');
    for (i, f) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&json(f));
    }
    out.push(']');
}

/// The `stackproof/verify-bt/1` document (docs/json.md), compact, on one line.
pub fn verify_json(threads: &[Thread]) -> String {
    let mut out = String::with_capacity(1024);
    out.push_str("{\"schema\":");
    json::string(&mut out, VERIFY_SCHEMA);
    out.push_str(",\"stackproof\":");
    json::string(&mut out, crate::VERSION);
    out.push_str(",\"threads\":[");
    for (i, t) in threads.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"thread\":");
        match t.thread {
            Some(n) => {
                let _ = write!(out, "{n}");
            }
            None => out.push_str("null"),
        }
        if let Some(k) = &t.task {
            let _ = write!(out, ",\"task\":{{\"pid\":{},\"task\":\"{:#x}\",\"cpu\":", k.pid, k.task);
            match k.cpu {
                Some(c) => {
                    let _ = write!(out, "{c}");
                }
                None => out.push_str("null"),
            }
            out.push_str(",\"command\":");
            json::string(&mut out, k.command);
            out.push('}');
        }
        out.push_str(",\"source\":");
        json::string(&mut out, t.source);
        out.push_str(",\"stop\":");
        opt_string(&mut out, t.stop);
        out.push_str(",\"frames\":");
        array(&mut out, t.frames.iter().copied(), Row::json);
        out.push_str(",\"bogus\":");
        ints(&mut out, &t.bogus());
        out.push_str(",\"chain\":");
        match &t.chain {
            Some(c) if !c.is_empty() => array(&mut out, c.iter().copied(), ChainRow::json),
            _ => out.push_str("null"),
        }
        out.push_str(",\"chain_stop\":");
        opt_string(&mut out, t.chain_stop);
        out.push_str(",\"invented\":");
        ints(&mut out, t.compare.as_ref().map_or(&[][..], |c| &c.invented));
        out.push_str(",\"lost\":");
        array(&mut out, t.compare.iter().flat_map(|c| c.lost.iter().copied()), ChainRow::json);
        out.push('}');
    }
    let reads: u64 = threads.iter().map(|t| t.reads).sum();
    let _ = write!(out, "],\"stats\":{{\"memory_reads\":{reads}}}}}");
    out
}

/// crash's frames checked (`reports`) with the frames crash printed without an
/// address (`unplaced`) where their level puts them.
pub fn crash_rows(reports: Vec<FrameReport>, unplaced: &[&crate::crashbt::CrashFrame]) -> Vec<Row> {
    let mut unplaced = unplaced.iter().peekable();
    let mut out = Vec::with_capacity(reports.len() + unplaced.len());
    let row = |f: &crate::crashbt::CrashFrame| Row::Unplaced(Unplaced { level: f.level, function: f.function.clone() });
    for r in reports {
        while let Some(f) = unplaced.next_if(|f| f.level < r.level) {
            out.push(row(f));
        }
        out.push(Row::Frame(Box::new(r)));
    }
    out.extend(unplaced.map(|f| row(f)));
    out
}

/// crash's task header: `PID: 1  TASK: ffff888003e0b000  CPU: 0  COMMAND: "init"`.
pub fn task_title(pid: u64, task: u64, cpu: Option<u32>, command: &str) -> String {
    let cpu = cpu.map_or("-".to_string(), |c| c.to_string());
    format!("PID: {pid:<7} TASK: {task:x}  CPU: {cpu}  COMMAND: \"{command}\"")
}

pub const REGS_SCHEMA: &str = "stackproof/regs-from-stack/2";

/// A register set found on the stack, as text (`regs-from-stack`).
pub fn found_text(f: &crate::regs::scan::Found) -> Vec<String> {
    let status =
        if f.status == crate::regs::Status::Live { "live".to_string() } else { f.status.name().to_uppercase() };
    let mut out = vec![format!("{} at {:016x}  {status}  {}", f.layout.name(), f.address, f.summary)];
    if f.status != crate::regs::Status::Live {
        out.push(format!("  ({})", f.status_reason));
    }
    let regs: Vec<String> = f.regs.iter().map(|(n, v)| format!("{n:>8} {v:016x}")).collect();
    for chunk in regs.chunks(3) {
        out.push(format!("  {}", chunk.join("  ")));
    }
    let named = |ok: bool| {
        f.checks
            .iter()
            .filter(|c| c.ok == ok)
            .map(|c| if c.detail.is_empty() { c.name.to_string() } else { format!("{} ({})", c.name, c.detail) })
            .collect::<Vec<_>>()
    };
    out.push(format!("  checks passed: {}", named(true).join(", ")));
    let bad = named(false);
    if !bad.is_empty() {
        out.push(format!("  checks FAILED: {}", bad.join(", ")));
    }
    out
}

/// The members every stackproof/regs-from-stack/2 document starts with.
fn regs_doc_head(live_sp: u64) -> String {
    let mut o = String::from("{\"schema\":");
    json::string(&mut o, REGS_SCHEMA);
    o.push_str(",\"stackproof\":");
    json::string(&mut o, crate::VERSION);
    o.push_str(",\"live_sp\":");
    hex_or_null(&mut o, Some(live_sp));
    o
}

fn string_or_null(out: &mut String, v: Option<&str>) {
    match v {
        Some(s) => json::string(out, s),
        None => out.push_str("null"),
    }
}

fn hex_or_null(out: &mut String, v: Option<u64>) {
    match v {
        Some(v) => {
            let _ = write!(out, "\"{v:#x}\"");
        }
        None => out.push_str("null"),
    }
}

/// A register set found on the stack, as JSON (`found[]` of stackproof/regs-from-stack/2).
pub fn found_json(f: &crate::regs::scan::Found) -> String {
    let mut o = String::with_capacity(512);
    o.push_str("{\"address\":");
    hex_or_null(&mut o, Some(f.address));
    o.push_str(",\"layout\":");
    json::string(&mut o, f.layout.name());
    o.push_str(",\"status\":");
    json::string(&mut o, f.status.name());
    o.push_str(",\"status_reason\":");
    json::string(&mut o, &f.status_reason);
    o.push_str(",\"copy_of\":");
    hex_or_null(&mut o, f.copy_of);
    o.push_str(",\"summary\":");
    json::string(&mut o, &f.summary);
    o.push_str(",\"registers\":{");
    for (i, (n, v)) in f.regs.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        json::string(&mut o, n);
        o.push(':');
        hex_or_null(&mut o, Some(*v));
    }
    o.push_str("},\"checks\":[");
    for (i, c) in f.checks.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str("{\"name\":");
        json::string(&mut o, c.name);
        let _ = write!(o, ",\"ok\":{},\"required\":{},\"detail\":", c.ok, c.required);
        json::string(&mut o, &c.detail);
        o.push('}');
    }
    o.push_str("]}");
    o
}

/// What an ADDR decode or a scan document holds (`regs-from-stack` without
/// `--frame`/`--all`): the scans (None: ADDR), the sets found, the note on the layout
/// chosen for ADDR, and with `--annotate` the labelled words.
pub struct RegsDoc<'a> {
    pub live_sp: u64,
    pub scans: Option<&'a [(crate::regs::scan::Scan, u64)]>,
    pub found: &'a [&'a crate::regs::scan::Found],
    pub layout_note: Option<&'a str>,
    pub words: Option<&'a crate::regs::annotate::Annotated>,
}

/// `--annotate`'s lines: `ADDRESS: VALUE  [label] ...`, a run of unreadable words as one
/// line, and where `--max-words` cut the range.
fn words_text(a: &crate::regs::annotate::Annotated, out: &mut Vec<String>) {
    for w in &a.words {
        match (w.value, w.unreadable_bytes) {
            (None, Some(n)) if n > 8 => out.push(format!("{:016x}: ... {n:#x} bytes unreadable ...", w.address)),
            (v, _) => {
                let v = v.map_or_else(|| "<unreadable>   ".to_string(), |v| format!("{v:016x}"));
                let labels: Vec<String> = w.labels.iter().map(|l| format!("[{l}]")).collect();
                out.push(format!("{:016x}: {v}  {}", w.address, labels.join(" ")));
            }
        }
    }
    if let Some(cut) = a.cut {
        out.push(format!("... stopped at {cut:016x} after {} words (--max-words N shows more)", a.max_words));
    }
}

/// `regs-from-stack --scan` / `--annotate` (or ADDR when `scans` is None) as text.
pub fn regs_text(d: &RegsDoc) -> String {
    let mut out = Vec::new();
    if let Some(scans) = d.scans {
        let ranges: Vec<String> = scans.iter().map(|(s, _)| format!("{:016x}..{:016x}", s.base, s.end)).collect();
        let n = d.found.len();
        out.push(format!(
            "Scanned {} (live sp {:016x}): {n} register set{}",
            ranges.join(", "),
            d.live_sp,
            if n == 1 { "" } else { "s" }
        ));
        for (a, b) in scans.iter().flat_map(|(s, _)| s.unreadable.iter()) {
            out.push(format!("  unreadable: {a:#x}..{b:#x}"));
        }
    }
    if let Some(note) = d.layout_note {
        out.push(format!("({note})"));
    }
    for f in d.found {
        out.extend(found_text(f));
    }
    if let Some(words) = d.words {
        out.push(String::new());
        words_text(words, &mut out);
    }
    out.join("\n")
}

/// One frame of `regs-from-stack --frame N` / `--all`: a backtrace's frame and the
/// frame of stackproof's own chain that is the same (None: the chain did not reach it).
pub struct FrameRegsRow<'a> {
    pub frame: &'a FrameIn,
    pub own: Option<&'a crate::unwind::Frame>,
}

/// The `--frame N` / `--all` document: each frame's callee-saved registers with where
/// each came from.
pub struct FrameRegsDoc<'a> {
    pub rows: Vec<FrameRegsRow<'a>>,
    pub live_sp: u64,
    /// Whose frames these are (`gdb's frames`, `stackproof's chain`) and why they end
    /// where they do, when they end early.
    pub stop: Option<(&'a str, &'a str)>,
    /// Why a frame the chain did not reach has no registers.
    pub unreached: String,
    /// The chain's levels as the backtrace numbers them; None: the chain's own.
    pub levels: Option<&'a std::collections::HashMap<u32, u32>>,
}

/// The text of `--frame N` / `--all`: `#N  pc  sp  function`, then one line per register.
pub fn frame_regs_text<S: Symbols>(syms: &S, d: &FrameRegsDoc) -> String {
    let mut out = Vec::new();
    for row in &d.rows {
        let f = row.frame;
        let name = row.own.map(|o| ChainRow::of(syms, o).name()).unwrap_or_default();
        out.push(format!(
            "#{}  pc {:016x}  sp {}  {}",
            f.level,
            f.pc,
            f.sp.map_or_else(|| "?".repeat(16), |v| format!("{v:016x}")),
            name
        ));
        match row.own {
            None => out.push(format!("    all unknown: {}", d.unreached)),
            Some(o) => {
                for r in crate::unwind::register_rows(&o.regs, d.levels) {
                    match r.value {
                        Some(_) => out.push(format!("    {}", r.origin)),
                        None => out.push(format!("    {:<3} unknown", r.name)),
                    }
                }
            }
        }
    }
    if let Some((whose, why)) = d.stop {
        out.push(format!("({whose}: {why})"));
    }
    out.join("\n")
}

/// The stackproof/regs-from-stack/2 document of `--frame N` / `--all`.
pub fn frame_regs_json<S: Symbols>(syms: &S, d: &FrameRegsDoc) -> String {
    let mut o = regs_doc_head(d.live_sp);
    o.push_str(
        ",\"range\":null,\"ranges\":null,\"unreadable\":null,\"truncated_at\":null,\"layout_note\":null,\"found\":null,\"words\":null,\"words_cut_at\":null,\"frames\":[",
    );
    for (k, row) in d.rows.iter().enumerate() {
        if k > 0 {
            o.push(',');
        }
        let f = row.frame;
        let _ = write!(o, "{{\"level\":{},\"pc\":", f.level);
        hex_or_null(&mut o, Some(f.pc));
        o.push_str(",\"sp\":");
        hex_or_null(&mut o, f.sp);
        o.push_str(",\"kind\":");
        json::string(&mut o, f.kind.as_str());
        let _ = write!(o, ",\"matched\":{},\"function\":", row.own.is_some());
        let chain_row = row.own.map(|own| ChainRow::of(syms, own));
        let function = chain_row.as_ref().and_then(|r| r.function.as_ref());
        string_or_null(&mut o, function.map(|sym| &*sym.name));
        o.push_str(",\"module\":");
        string_or_null(&mut o, function.and_then(|sym| sym.module.as_deref()));
        o.push_str(",\"registers\":{");
        let rows = row.own.map(|own| crate::unwind::register_rows(&own.regs, d.levels)).unwrap_or_default();
        for (i, r) in rows.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            json::string(&mut o, r.name);
            o.push_str(":{\"value\":");
            hex_or_null(&mut o, r.value);
            o.push_str(",\"origin\":");
            json::string(&mut o, &r.origin);
            o.push('}');
        }
        o.push_str("},\"unknown_reason\":");
        string_or_null(&mut o, row.own.is_none().then_some(d.unreached.as_str()));
        o.push('}');
    }
    o.push_str("],\"stop\":");
    string_or_null(&mut o, d.stop.map(|(_, why)| why));
    o.push('}');
    o
}

/// `--frame N` / `--all` of a backtrace (`frames`; `want`: just frame N of it) or, with
/// `frames` None, of stackproof's own chain from `start`; `stop`: why `frames` end early.
pub struct FrameRegsRequest {
    pub frames: Option<Vec<FrameIn>>,
    pub start: crate::unwind::Start,
    pub want: Option<usize>,
    pub stop: Option<String>,
    pub max_frames: usize,
    pub json: bool,
}

/// The `--frame N` / `--all` document (text or JSON) and how many frames it shows;
/// Err: no frame N.
pub fn frame_regs_document<M: crate::memory::Memory, S: Symbols>(
    mem: &M,
    syms: &S,
    req: FrameRegsRequest,
) -> Result<(String, usize), String> {
    let chain = crate::check::own_chain(mem, syms, &req.start, req.max_frames);
    let own: Vec<FrameIn>;
    let (frames, matched, levels, whose) = match &req.frames {
        Some(given) => {
            let (matched, levels) = crate::check::same_frames(given, &chain);
            (&given[..], matched, Some(levels), "gdb's frames")
        }
        None => {
            own = chain.frames.iter().map(|f| f.frame.clone()).collect();
            (&own[..], (0..own.len()).map(Some).collect(), None, "stackproof's chain")
        }
    };
    let (frames, matched) = match req.want {
        None => (frames, matched),
        Some(n) if n < frames.len() => (&frames[n..=n], vec![matched[n]]),
        Some(n) => {
            return Err(match req.frames {
                Some(_) => format!("no frame {n} (gdb has {})", frames.len()),
                None => format!(
                    "no frame #{n}: stackproof's chain has {} ({})",
                    frames.len(),
                    chain.stop.as_deref().unwrap_or("its end")
                ),
            })
        }
    };
    let stop_why = match (&req.frames, req.want) {
        (_, Some(_)) => None,
        (Some(_), None) => req.stop.as_deref(),
        (None, None) => chain.stop.as_deref(),
    };
    let doc = FrameRegsDoc {
        rows: frames
            .iter()
            .zip(matched)
            .map(|(frame, i)| FrameRegsRow { frame, own: i.map(|i| &chain.frames[i]) })
            .collect(),
        live_sp: req.start.sp,
        stop: stop_why.map(|why| (whose, why)),
        unreached: match &chain.stop {
            Some(why) => format!("stackproof's own unwinding did not reach this frame ({why})"),
            None => "stackproof's own unwinding did not reach this frame".to_string(),
        },
        levels: levels.as_ref(),
    };
    let text = if req.json { frame_regs_json(syms, &doc) } else { frame_regs_text(syms, &doc) };
    Ok((text, doc.rows.len()))
}

/// `words[]` of stackproof/regs-from-stack/2.
fn words_json(a: &crate::regs::annotate::Annotated, o: &mut String) {
    o.push('[');
    for (i, w) in a.words.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str("{\"address\":");
        hex_or_null(o, Some(w.address));
        o.push_str(",\"value\":");
        hex_or_null(o, w.value);
        o.push_str(",\"labels\":[");
        for (k, l) in w.labels.iter().enumerate() {
            if k > 0 {
                o.push(',');
            }
            json::string(o, l);
        }
        o.push_str("],\"unreadable_bytes\":");
        match w.unreadable_bytes {
            Some(n) => {
                let _ = write!(o, "{n}");
            }
            None => o.push_str("null"),
        }
        o.push('}');
    }
    o.push(']');
}

/// The stackproof/regs-from-stack/2 document of an ADDR decode, a scan or `--annotate`:
/// every member in every mode, null where the mode has none (docs/regs-from-stack.schema.json).
pub fn regs_json(d: &RegsDoc) -> String {
    let mut o = regs_doc_head(d.live_sp);
    match d.scans {
        Some(scans) => {
            o.push_str(",\"range\":");
            match scans.first() {
                Some((first, _)) => {
                    let _ = write!(o, "[\"{:#x}\",\"{:#x}\"]", first.base, first.end);
                }
                None => o.push_str("null"),
            }
            let ranges: Vec<String> = scans
                .iter()
                .map(|(s, sp)| format!("{{\"range\":[\"{:#x}\",\"{:#x}\"],\"live_sp\":\"{sp:#x}\"}}", s.base, s.end))
                .collect();
            let _ = write!(o, ",\"ranges\":[{}]", ranges.join(","));
            let unreadable: Vec<String> = scans
                .iter()
                .flat_map(|(s, _)| s.unreadable.iter())
                .map(|(a, b)| format!("[\"{a:#x}\",\"{b:#x}\"]"))
                .collect();
            let _ = write!(o, ",\"unreadable\":[{}]", unreadable.join(","));
            o.push_str(",\"truncated_at\":");
            hex_or_null(&mut o, scans.iter().find_map(|(s, _)| s.truncated_at));
        }
        None => o.push_str(",\"range\":null,\"ranges\":null,\"unreadable\":null,\"truncated_at\":null"),
    }
    o.push_str(",\"layout_note\":");
    string_or_null(&mut o, d.layout_note);
    o.push_str(",\"found\":[");
    o.push_str(&d.found.iter().map(|f| found_json(f)).collect::<Vec<_>>().join(","));
    o.push_str("],\"words\":");
    match d.words {
        Some(w) => {
            words_json(w, &mut o);
            o.push_str(",\"words_cut_at\":");
            hex_or_null(&mut o, w.cut);
        }
        None => o.push_str("null,\"words_cut_at\":null"),
    }
    o.push_str(",\"frames\":null,\"stop\":null}");
    o
}

/// What `regs-from-stack` is asked for, but `--frame`/`--all`/`--use`: the set at an
/// address, or the sets on some stacks, and with `annotate` their words labelled.
pub struct RegsRequest {
    pub live_sp: u64,
    /// ADDR: the set at this address in this layout (None: the one the address implies,
    /// [`crate::regs::scan::decode_chosen`]).
    pub decode: Option<(u64, Option<crate::regs::Layout>)>,
    /// Without ADDR: the stacks to scan, each `(lo, hi, its live sp)`.
    pub ranges: Vec<(u64, u64, u64)>,
    pub annotate: Option<crate::regs::annotate::Request>,
    pub json: bool,
}

/// The document of a request (text or JSON); Err: ADDR could not be read (the
/// front-end writes the line).
pub fn regs_document<M: crate::memory::Memory, S: Symbols>(
    mem: &M,
    syms: &S,
    req: RegsRequest,
) -> Result<String, crate::memory::ReadError> {
    use crate::regs::scan::{decode_chosen, scan_memory, ScanOptions};
    let opts = |sp| ScanOptions { live_sp: Some(sp), ..Default::default() };
    let mut layout_note = None;
    let (scans, found) = match req.decode {
        Some((addr, layout)) => {
            let (f, note) = decode_chosen(mem, addr, layout, syms, &opts(req.live_sp))?;
            layout_note = note;
            (None, vec![f])
        }
        None => {
            let scans: Vec<_> =
                req.ranges.iter().map(|&(lo, hi, sp)| (scan_memory(mem, lo, hi, syms, &opts(sp)), sp)).collect();
            let mut found: Vec<_> = scans.iter().flat_map(|(sc, _)| sc.found.iter().cloned()).collect();
            found.sort_by_key(|f| f.address);
            (Some(scans), found)
        }
    };
    let words = req.annotate.map(|mut a| {
        // The first stack scanned, unless a range was given.
        a.range = a.range.or_else(|| scans.as_ref()?.first().map(|(s, _)| (s.base, s.end)));
        crate::regs::annotate::annotate_stack(mem, syms, req.live_sp, &found, a)
    });
    let refs: Vec<_> = found.iter().collect();
    let d = RegsDoc {
        live_sp: req.live_sp,
        scans: scans.as_deref(),
        found: &refs,
        layout_note: layout_note.as_deref(),
        words: words.as_ref(),
    };
    Ok(if req.json { regs_json(&d) } else { regs_text(&d) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_and_unplaced_thread() {
        assert_eq!(
            verify_json(&[]),
            format!(
                "{{\"schema\":\"stackproof/verify-bt/1\",\"stackproof\":\"{}\",\"threads\":[],\"stats\":{{\"memory_reads\":0}}}}",
                crate::VERSION
            )
        );
        let row = Row::Unplaced(Unplaced { level: 2, function: "f".into() });
        let t = Thread {
            title: Some("T:"),
            task: None,
            source: "crash-bt",
            thread: None,
            stop: None,
            frames: vec![&row],
            chain: None,
            chain_stop: None,
            compare: None,
            reads: 3,
        };
        assert_eq!(thread_text(&t, true, 80, None), format!("T:\n{}", row.line(row.head_width(), 80, None)));
        let doc = verify_json(&[t]);
        assert!(
            doc.contains("\"thread\":null,\"source\":\"crash-bt\",\"stop\":null,\"frames\":[{\"level\":2"),
            "{doc}"
        );
        assert!(doc.ends_with(",\"bogus\":[],\"chain\":null,\"chain_stop\":null,\"invented\":[],\"lost\":[]}],\"stats\":{\"memory_reads\":3}}"), "{doc}");
    }

    #[test]
    fn annotate_words_as_text_and_json() {
        use crate::regs::annotate::{Annotated, Word};
        let w = |address, value, labels: &[&str], unreadable_bytes| Word {
            address,
            value,
            labels: labels.iter().map(|l| l.to_string()).collect(),
            unreadable_bytes,
        };
        let a = Annotated {
            words: vec![
                w(0x1000, Some(0x401006), &["ra #1 f+0x6", "saved rbx of #2"], None),
                w(0x1008, Some(0), &[], None),
                w(0x1010, None, &[], Some(8)),
                w(0x1018, None, &[], Some(0x20)),
            ],
            cut: Some(0x1038),
            max_words: 7,
        };
        let d = RegsDoc { live_sp: 0x1000, scans: None, found: &[], layout_note: Some("why"), words: Some(&a) };
        assert_eq!(
            regs_text(&d),
            "(why)\n\n\
             0000000000001000: 0000000000401006  [ra #1 f+0x6] [saved rbx of #2]\n\
             0000000000001008: 0000000000000000  \n\
             0000000000001010: <unreadable>     \n\
             0000000000001018: ... 0x20 bytes unreadable ...\n\
             ... stopped at 0000000000001038 after 7 words (--max-words N shows more)"
        );
        let doc = regs_json(&d);
        assert!(doc.contains(",\"layout_note\":\"why\",\"found\":[],\"words\":[{\"address\":\"0x1000\",\"value\":\"0x401006\",\"labels\":[\"ra #1 f+0x6\",\"saved rbx of #2\"],\"unreadable_bytes\":null},"), "{doc}");
        assert!(doc.ends_with("{\"address\":\"0x1018\",\"value\":null,\"labels\":[],\"unreadable_bytes\":32}],\"words_cut_at\":\"0x1038\",\"frames\":null,\"stop\":null}"), "{doc}");
    }
}

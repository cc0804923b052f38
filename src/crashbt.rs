//! Parser for the text of crash's `bt` (`bt`, `-f`, `-a`, `-c N`, `-e`, `-E`).
//!
//! The text is what an analyst pasted, so it may be abbreviated (`#3 foo, #4 bar`),
//! annotated (`0000000000000010[cs]`) or cut off (`...`). The parser never panics;
//! a line it cannot read is an error naming its line number and text.

use std::fmt;

/// One task (or one `CPU n ... STACK:` section of `bt -E`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrashTask {
    /// 1-based line of the header; 0 when the text had frames before any header.
    pub line_no: usize,
    pub pid: Option<u64>,
    pub task: Option<u64>,
    pub cpu: Option<u32>,
    pub command: Option<String>,
    /// For `bt -E` sections: `IRQ`, `NMI EXCEPTION`, ... (the words between `CPU n` and `STACK:`).
    pub stack_section: Option<String>,
    pub frames: Vec<CrashFrame>,
    pub exception_frames: Vec<CrashExceptionFrame>,
    /// crash's own remarks inside the output (`bt: WARNING: ...`), with their line.
    pub messages: Vec<(usize, String)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrashFrame {
    pub line_no: usize,
    pub level: u32,
    /// The stack slot crash says holds the return address (`[ffff...]`).
    pub slot: Option<u64>,
    pub function: String,
    /// `function+off`, when printed (`bt -s`); decimal unless written `0x`.
    pub offset: Option<u64>,
    pub ra: Option<u64>,
    pub module: Option<String>,
    /// The words `bt -f` printed after this frame line: (address, value).
    pub raw_words: Vec<(u64, u64)>,
    /// A `...` line stood for words that were left out.
    pub elided: bool,
    /// `bt -l` source line printed under the frame.
    pub source: Option<String>,
    /// The `--- <NAME> ---` separator printed just before this frame (`IRQ stack`).
    pub separator_before: Option<String>,
    /// The stack this frame is on, from the separator that closes it: crash prints
    /// `--- <IRQ stack> ---` after the last frame on the IRQ stack. None: the task's stack.
    pub stack: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionMode {
    Kernel,
    User,
}

/// A register block: after a frame line (`bt`), or `bt -e`'s `...-MODE EXCEPTION FRAME AT:`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrashExceptionFrame {
    /// First line of the block.
    pub line_no: usize,
    /// `KERNEL-MODE EXCEPTION FRAME AT: addr` (bt -e).
    pub at: Option<u64>,
    pub mode: Option<ExceptionMode>,
    /// The text of `[exception RIP: memcpy+21]`.
    pub exception_rip: Option<String>,
    /// In printed order, names as crash writes them (`RIP`, `R8`, `ORIG_RAX`, `CS`).
    pub regs: Vec<(String, u64)>,
    /// Index in `frames` of the frame line it follows; None when before the first frame.
    pub after_frame: Option<usize>,
}

impl CrashExceptionFrame {
    pub fn reg(&self, name: &str) -> Option<u64> {
        self.regs.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line_no: usize,
    pub text: String,
    pub why: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: cannot parse {:?}: {}", self.line_no, self.text, self.why)
    }
}

impl std::error::Error for ParseError {}

/// Parse the whole text; the first unreadable line is an error.
pub fn parse(text: &str) -> Result<Vec<CrashTask>, ParseError> {
    let (tasks, mut errors) = parse_lenient(text);
    if errors.is_empty() {
        Ok(tasks)
    } else {
        Err(errors.swap_remove(0))
    }
}

/// Parse what can be parsed; unreadable lines are skipped and reported.
pub fn parse_lenient(text: &str) -> (Vec<CrashTask>, Vec<ParseError>) {
    let mut p = Parser::default();
    for (i, line) in text.lines().enumerate() {
        if let Err(why) = p.line(i + 1, line) {
            // Keep error texts bounded: garbage can be one huge line.
            let shown: String = line.chars().take(200).collect();
            p.errors.push(ParseError { line_no: i + 1, text: shown, why });
        }
    }
    p.finish()
}

#[derive(Default)]
struct Parser {
    tasks: Vec<CrashTask>,
    errors: Vec<ParseError>,
    /// A register block is being read (its lines continue it).
    open_exception: bool,
    pending_separator: Option<String>,
}

type LineResult = Result<(), String>;

impl Parser {
    fn finish(mut self) -> (Vec<CrashTask>, Vec<ParseError>) {
        for t in &mut self.tasks {
            assign_stacks(t);
        }
        (self.tasks, self.errors)
    }

    fn task(&mut self) -> &mut CrashTask {
        if self.tasks.is_empty() {
            self.tasks.push(CrashTask::default());
        }
        let n = self.tasks.len() - 1;
        &mut self.tasks[n]
    }

    fn line(&mut self, line_no: usize, raw: &str) -> LineResult {
        let line = raw.trim_end();
        let t = line.trim_start();
        let was_open = std::mem::replace(&mut self.open_exception, false);
        if t.is_empty() || t.starts_with("crash>") || t.starts_with("```") {
            return Ok(());
        }
        // `(none found)`, `(no exception frames)`, `bt: WARNING: ...`: crash talking, not frames.
        if (t.starts_with('(') && t.ends_with(')')) || t.starts_with("bt: ") {
            self.task().messages.push((line_no, t.to_string()));
            return Ok(());
        }
        if t.starts_with("PID:") {
            let task = parse_header(t)?;
            self.tasks.push(CrashTask { line_no, ..task });
            self.pending_separator = None;
            return Ok(());
        }
        if let Some(section) = parse_stack_section(t) {
            self.tasks.push(CrashTask {
                line_no,
                cpu: Some(section.0),
                stack_section: Some(section.1),
                ..Default::default()
            });
            self.pending_separator = None;
            return Ok(());
        }
        if let Some(name) = t.strip_prefix("--- <").and_then(|r| r.strip_suffix("> ---")) {
            self.pending_separator = Some(name.to_string());
            return Ok(());
        }
        if t.starts_with('#') {
            return self.frame_line(line_no, t);
        }
        if t.chars().all(|c| c == '.') {
            let task = self.task();
            return match task.frames.last_mut() {
                Some(f) => {
                    f.elided = true;
                    Ok(())
                }
                None => Err("`...` before any frame".into()),
            };
        }
        if let Some((mode, rest)) = exception_at(t) {
            let at = parse_hex(rest.trim()).ok_or("bad exception frame address")?;
            self.start_exception(line_no, Some(at), Some(mode), None);
            self.open_exception = true;
            return Ok(());
        }
        if let Some(rip) = t.strip_prefix("[exception RIP:").and_then(|r| r.strip_suffix(']')) {
            // bt -e prints the `AT:` line first; the RIP line belongs to that block.
            let joins =
                was_open && self.last_exception().is_some_and(|e| e.regs.is_empty() && e.exception_rip.is_none());
            if joins {
                if let Some(e) = self.last_exception() {
                    e.exception_rip = Some(rip.trim().to_string());
                }
            } else {
                self.start_exception(line_no, None, None, Some(rip.trim().to_string()));
            }
            self.open_exception = true;
            return Ok(());
        }
        if let Some(regs) = parse_regs(t) {
            let continues = was_open
                && !(regs.iter().any(|(n, _)| n == "RIP")
                    && self.last_exception().is_some_and(|e| e.reg("RIP").is_some()));
            if !continues {
                self.start_exception(line_no, None, None, None);
            }
            if let Some(e) = self.last_exception() {
                e.regs.extend(regs);
            }
            self.open_exception = true;
            return Ok(());
        }
        if let Some(words) = parse_words(t) {
            let task = self.task();
            return match task.frames.last_mut() {
                Some(f) => {
                    f.raw_words.extend(words);
                    Ok(())
                }
                None => Err("stack words before any frame".into()),
            };
        }
        if let Some(src) = parse_source(t) {
            if let Some(f) = self.task().frames.last_mut() {
                f.source = Some(src.to_string());
                return Ok(());
            }
        }
        Err("not a crash bt line".into())
    }

    fn last_exception(&mut self) -> Option<&mut CrashExceptionFrame> {
        self.tasks.last_mut().and_then(|t| t.exception_frames.last_mut())
    }

    fn start_exception(&mut self, line_no: usize, at: Option<u64>, mode: Option<ExceptionMode>, rip: Option<String>) {
        let task = self.task();
        let after_frame = task.frames.len().checked_sub(1);
        task.exception_frames.push(CrashExceptionFrame {
            line_no,
            at,
            mode,
            exception_rip: rip,
            regs: Vec::new(),
            after_frame,
        });
    }

    /// One frame line, or several in the abbreviated `#3 foo, #4 bar` form.
    fn frame_line(&mut self, line_no: usize, t: &str) -> LineResult {
        let mut frames = Vec::new();
        for part in t.split(", #") {
            let part = part.trim().trim_end_matches(',');
            let part = part.strip_prefix('#').unwrap_or(part);
            frames.push(parse_frame(line_no, part)?);
        }
        let sep = self.pending_separator.take();
        let task = self.task();
        for (i, mut f) in frames.into_iter().enumerate() {
            if i == 0 {
                f.separator_before = sep.clone();
            }
            task.frames.push(f);
        }
        Ok(())
    }
}

/// `PID: 1  TASK: ffff888003e0c800  CPU: 0  COMMAND: "init"`.
fn parse_header(t: &str) -> Result<CrashTask, String> {
    let mut task = CrashTask::default();
    let (fields, command) = match t.split_once("COMMAND:") {
        Some((a, b)) => (a, Some(b.trim())),
        None => (t, None),
    };
    let toks: Vec<&str> = fields.split_whitespace().collect();
    for pair in toks.chunks(2) {
        let (key, val) = match pair {
            [k, v] => (*k, *v),
            [k] => return Err(format!("no value for {k}")),
            _ => continue,
        };
        match key {
            "PID:" => task.pid = Some(val.parse().map_err(|_| format!("bad PID {val:?}"))?),
            "TASK:" => task.task = Some(parse_hex(val).ok_or_else(|| format!("bad TASK {val:?}"))?),
            "CPU:" => task.cpu = val.parse().ok(), // `CPU: -` for tasks not on a CPU
            _ => return Err(format!("unknown header field {key:?}")),
        }
    }
    if let Some(c) = command {
        let c = c.strip_prefix('"').and_then(|c| c.strip_suffix('"')).unwrap_or(c);
        task.command = Some(c.to_string());
    }
    if task.pid.is_none() {
        return Err("header without PID".into());
    }
    Ok(task)
}

/// `CPU 0 IRQ STACK:` -> (0, "IRQ").
fn parse_stack_section(t: &str) -> Option<(u32, String)> {
    let rest = t.strip_prefix("CPU ")?.strip_suffix(" STACK:")?;
    let (cpu, name) = rest.split_once(' ')?;
    Some((cpu.parse().ok()?, name.trim().to_string()))
}

fn exception_at(t: &str) -> Option<(ExceptionMode, &str)> {
    if let Some(r) = t.strip_prefix("KERNEL-MODE EXCEPTION FRAME AT:") {
        return Some((ExceptionMode::Kernel, r));
    }
    t.strip_prefix("USER-MODE EXCEPTION FRAME AT:").map(|r| (ExceptionMode::User, r))
}

/// `N [slot] function[+off] at ra [module]`, or just `N function` (abbreviated notes).
fn parse_frame(line_no: usize, s: &str) -> Result<CrashFrame, String> {
    let (level, rest) = s.split_once(|c: char| c.is_whitespace()).ok_or("frame line without function")?;
    let level: u32 = level.parse().map_err(|_| format!("bad frame level {level:?}"))?;
    let mut rest = rest.trim_start();
    let mut frame = CrashFrame { line_no, level, ..Default::default() };
    if let Some(r) = rest.strip_prefix('[') {
        let (slot, r) = r.split_once(']').ok_or("unclosed stack slot")?;
        frame.slot = Some(parse_hex(slot.trim()).ok_or_else(|| format!("bad stack slot {slot:?}"))?);
        rest = r.trim_start();
    }
    let mut toks = rest.split_whitespace();
    let func = toks.next().ok_or("frame without function")?;
    let (name, off) = match func.split_once('+') {
        Some((n, o)) => (n, Some(parse_offset(o).ok_or_else(|| format!("bad offset {o:?}"))?)),
        None => (func, None),
    };
    if name.is_empty() || name.starts_with('[') {
        return Err("frame without function".into());
    }
    frame.function = name.to_string();
    frame.offset = off;
    match toks.next() {
        None => return Ok(frame),
        Some("at") => {}
        Some(x) => return Err(format!("expected `at`, found {x:?}")),
    }
    let ra = toks.next().ok_or("no address after `at`")?;
    // Analysts' notes glue labels to addresses (`ffffffffab34ba2e[ip]`).
    let ra = ra.split_once('[').map_or(ra, |(a, _)| a);
    frame.ra = Some(parse_hex(ra).ok_or_else(|| format!("bad return address {ra:?}"))?);
    if let Some(m) = toks.next() {
        let m = m.strip_prefix('[').and_then(|m| m.strip_suffix(']')).ok_or_else(|| format!("bad module {m:?}"))?;
        frame.module = Some(m.to_string());
    }
    if let Some(x) = toks.next() {
        return Err(format!("trailing {x:?}"));
    }
    Ok(frame)
}

fn parse_offset(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => parse_hex(h),
        None => s.parse().ok(),
    }
}

/// 1 to 16 hex digits, optional `0x`.
fn parse_hex(s: &str) -> Option<u64> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// `RAX: ffff...  RBX: ...`: at least one `NAME: hex` pair and nothing else.
fn parse_regs(t: &str) -> Option<Vec<(String, u64)>> {
    let toks: Vec<&str> = t.split_whitespace().collect();
    if toks.is_empty() || !toks.len().is_multiple_of(2) {
        return None;
    }
    let mut out = Vec::with_capacity(toks.len() / 2);
    for pair in toks.chunks(2) {
        let name = pair.first()?.strip_suffix(':')?;
        let first = name.chars().next()?;
        if !first.is_ascii_uppercase()
            || !name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            return None;
        }
        out.push((name.to_string(), parse_hex(pair.get(1)?)?));
    }
    Some(out)
}

/// `ffffc90000013b88: 0000000000000008 ffffc90000013c08` (labels like `[bp]` dropped).
fn parse_words(t: &str) -> Option<Vec<(u64, u64)>> {
    let (addr, rest) = t.split_once(':')?;
    let mut a = parse_hex(addr.trim())?;
    let mut out = Vec::new();
    for w in rest.split_whitespace() {
        let w = w.split_once('[').map_or(w, |(v, _)| v);
        out.push((a, parse_hex(w)?));
        a = a.wrapping_add(8);
    }
    (!out.is_empty()).then_some(out)
}

/// `bt -l`: `/usr/src/linux/kernel/sched/core.c: 3456`.
fn parse_source(t: &str) -> Option<&str> {
    let (path, line) = t.rsplit_once(": ")?;
    (path.contains('/') && line.trim().parse::<u64>().is_ok()).then_some(t)
}

/// Frames before a `--- <X> ---` separator were on stack X (crash prints it when
/// leaving that stack); frames after the last separator are on the task stack.
fn assign_stacks(task: &mut CrashTask) {
    let mut current: Option<String> = None;
    for f in task.frames.iter_mut().rev() {
        f.stack = current.clone();
        if let Some(sep) = &f.separator_before {
            current = Some(sep.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::kernel_fixture;

    fn read(rel: &str) -> String {
        std::fs::read_to_string(kernel_fixture(rel).unwrap()).unwrap()
    }

    fn frame(t: &CrashTask, level: u32) -> &CrashFrame {
        t.frames.iter().find(|f| f.level == level).unwrap()
    }

    #[test]
    fn panic_bt_f_a() {
        let tasks = parse(&read("panic/expected-crash-8.0.6-bt-f-a.txt")).unwrap();
        assert_eq!(tasks.len(), 2);
        let (init, cat) = (&tasks[0], &tasks[1]);
        assert_eq!((init.pid, init.task, init.cpu), (Some(1), Some(0xffff888003e0c800), Some(0)));
        assert_eq!(init.command.as_deref(), Some("init"));
        assert_eq!(init.frames.len(), 9);
        let f1 = frame(init, 1);
        assert_eq!(f1.slot, Some(0xffffc90000013c00));
        assert_eq!(f1.function, "sysrq_handle_crash");
        assert_eq!(f1.ra, Some(0xffffffff816a4c76));
        assert_eq!(f1.module, None);
        assert_eq!(f1.raw_words, vec![(0xffffc90000013c08, 0xffffffff819ec9a8)]);
        let f0 = frame(init, 0);
        // crash prints the words up to and including the next frame's slot.
        assert_eq!(f0.raw_words.len(), 16);
        assert_eq!(f0.raw_words[0], (0xffffc90000013b88, 8));
        assert_eq!(f0.raw_words[15], (0xffffc90000013c00, 0xffffffff816a4c76));
        assert_eq!(frame(init, 2).function, "__handle_sysrq.cold");
        // The user-mode register block after entry_SYSCALL_64_after_hwframe.
        assert_eq!(init.exception_frames.len(), 1);
        let e = &init.exception_frames[0];
        assert_eq!(e.after_frame, Some(8));
        assert_eq!(e.regs.len(), 21);
        assert_eq!(e.reg("RIP"), Some(0x47b7a0));
        assert_eq!(e.reg("ORIG_RAX"), Some(1));
        assert_eq!(e.reg("SS"), Some(0x2b));
        assert!(init.frames.iter().all(|f| f.stack.is_none()));

        assert_eq!(cat.frames.len(), 11);
        assert_eq!(cat.exception_frames.len(), 2);
        let irq = &cat.exception_frames[0];
        assert_eq!(irq.exception_rip.as_deref(), Some("s_next+28"));
        assert_eq!(irq.after_frame, Some(3));
        assert_eq!(irq.reg("RIP"), Some(0xffffffff81162a1c));
        assert_eq!(irq.reg("CS"), Some(0x10));
        // Frames #0-#2 ran on the IRQ stack; the separator precedes #3.
        for l in 0..3 {
            assert_eq!(frame(cat, l).stack.as_deref(), Some("IRQ stack"), "#{l}");
        }
        assert_eq!(frame(cat, 3).separator_before.as_deref(), Some("IRQ stack"));
        assert_eq!(frame(cat, 3).stack, None);
        // #3's words come after its register block.
        assert_eq!(frame(cat, 3).raw_words.len(), 22);
        assert_eq!(frame(cat, 10).level, 10);
        assert_eq!(frame(cat, 10).slot, Some(0xffffc90000473f50));
        let words: usize = tasks.iter().flat_map(|t| &t.frames).map(|f| f.raw_words.len()).sum();
        assert_eq!(words, 300);
    }

    #[test]
    fn all_fixture_texts_parse() {
        // (scenario, file, tasks, frames per task, exception blocks per task)
        type Case<'a> = (&'a str, &'a str, usize, &'a [usize], &'a [usize]);
        let cases: &[Case] = &[
            ("panic", "bt-a", 2, &[9, 11], &[1, 2]),
            ("panic", "bt-f-a", 2, &[9, 11], &[1, 2]),
            ("panic", "bt-e-a", 2, &[0, 0], &[1, 2]),
            ("panic", "bt-E", 8, &[0; 8], &[0; 8]),
            ("irq", "bt-a", 2, &[4, 17], &[2, 3]),
            ("irq", "bt-f-a", 2, &[4, 17], &[2, 3]),
            ("irq", "bt-e-a", 2, &[0, 0], &[1, 2]),
            ("busy", "bt-a", 2, &[10, 4], &[2, 1]),
            ("busy", "bt-f-a", 2, &[10, 4], &[2, 1]),
            ("busy", "bt-e-a", 2, &[0, 0], &[2, 1]),
        ];
        for (scen, file, ntasks, frames, exc) in cases {
            let path = format!("{scen}/expected-crash-8.0.6-{file}.txt");
            let tasks = parse(&read(&path)).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(tasks.len(), *ntasks, "{path}");
            let nf: Vec<usize> = tasks.iter().map(|t| t.frames.len()).collect();
            let ne: Vec<usize> = tasks.iter().map(|t| t.exception_frames.len()).collect();
            assert_eq!(&nf[..], *frames, "{path} frames");
            assert_eq!(&ne[..], *exc, "{path} exception blocks");
            for t in &tasks {
                for (i, f) in t.frames.iter().enumerate() {
                    assert_eq!(f.level as usize, i, "{path} line {}", f.line_no);
                    assert!(f.slot.is_some() && f.ra.is_some(), "{path} line {}", f.line_no);
                }
                for e in &t.exception_frames {
                    assert!(e.reg("RIP").is_some() && e.reg("SS").is_some(), "{path} line {}", e.line_no);
                }
            }
        }
    }

    #[test]
    fn irq_exception_frames() {
        let tasks = parse(&read("irq/expected-crash-8.0.6-bt-a.txt")).unwrap();
        let cat = &tasks[1];
        assert_eq!((cat.pid, cat.cpu, cat.command.as_deref()), (Some(125), Some(1), Some("cat")));
        // The block before #0 is the CPU's own interrupted state.
        let first = &cat.exception_frames[0];
        assert_eq!(first.after_frame, None);
        assert_eq!(first.exception_rip.as_deref(), Some("update_process_times"));
        assert_eq!(first.reg("ORIG_RAX"), None);
        let mid = &cat.exception_frames[1];
        assert_eq!(mid.exception_rip.as_deref(), Some("memcpy+21"));
        assert_eq!(mid.after_frame, Some(6));
        assert_eq!(mid.reg("RSP"), Some(0xffffc9000043bb08));
        assert_eq!(mid.reg("R8"), Some(0xffffffff822f342d));
        assert_eq!(mid.reg("ORIG_RAX"), Some(u64::MAX));
        assert_eq!(frame(cat, 5).stack.as_deref(), Some("IRQ stack"));
        assert_eq!(frame(cat, 6).function, "asm_sysvec_apic_timer_interrupt");
        assert_eq!(frame(cat, 6).slot, Some(0xffffc9000043ba58));
        assert_eq!(frame(cat, 16).line_no, 56);

        let e = parse(&read("irq/expected-crash-8.0.6-bt-e-a.txt")).unwrap();
        let k = &e[1].exception_frames[0];
        assert_eq!((k.mode, k.at), (Some(ExceptionMode::Kernel), Some(0xffffc9000043ba58)));
        assert_eq!(k.exception_rip.as_deref(), Some("memcpy+21"));
        assert_eq!(k.regs.len(), 21);
        assert_eq!(e[1].exception_frames[1].mode, Some(ExceptionMode::User));
        assert_eq!(e[1].exception_frames[1].at, Some(0xffffc9000043bf58));

        let big = parse(&read("irq/expected-crash-8.0.6-bt-E.txt")).unwrap();
        assert_eq!(big[3].cpu, Some(0));
        assert_eq!(big[3].stack_section.as_deref(), Some("NMI EXCEPTION"));
    }

    #[test]
    fn busy_kaslr_addresses() {
        let tasks = parse(&read("busy/expected-crash-8.0.6-bt-a.txt")).unwrap();
        let f = frame(&tasks[0], 0);
        assert_eq!(
            (f.slot, f.function.as_str(), f.ra),
            (Some(0xffffcfd90046ba78), "vsnprintf", Some(0xffffffffa19b632d))
        );
        let e = parse(&read("busy/expected-crash-8.0.6-bt-e-a.txt")).unwrap();
        assert_eq!(e[0].exception_frames[0].at, Some(0xffffcfd90046b798));
        assert_eq!(e[0].exception_frames[0].exception_rip.as_deref(), Some("number+658"));
    }

    #[test]
    fn seed000_crash_bt() {
        let text = std::fs::read_to_string(crate::testdata::fixture("seed000/crash-bt.txt")).unwrap();
        let tasks = parse(&text).unwrap();
        assert_eq!(tasks.len(), 1);
        let t = &tasks[0];
        assert_eq!(
            (t.pid, t.task, t.cpu, t.command.as_deref()),
            (Some(2757), Some(0xffff8803e0e40000), Some(1), Some("qemu-kvm"))
        );
        assert_eq!(t.frames.len(), 8);
        let f0 = frame(t, 0);
        assert_eq!(
            (f0.slot, f0.function.as_str(), f0.ra, f0.module.as_deref()),
            (Some(0xffff88003e5ebce8), "__schedule", Some(0xffffffff816a8f45), None)
        );
        assert_eq!(
            f0.raw_words,
            vec![
                (0xffff88003e5ebcf0, 0xffff88043ea73280),
                (0xffff88003e5ebcf8, 0),
                (0xffff88003e5ebd00, 0xffff88003e5ebd48),
                (0xffff88003e5ebd08, 0xffffffffc09a9833)
            ]
        );
        let f1 = frame(t, 1);
        assert_eq!(
            (f1.slot, f1.function.as_str(), f1.ra, f1.module.as_deref()),
            (Some(0xffff88003e5ebd08), "kvm_mmu_load", Some(0xffffffffc09a9833), Some("kvm"))
        );
        assert_eq!(f1.raw_words.len(), 9);
        assert_eq!(frame(t, 2).raw_words.len(), 16);
        assert!(frame(t, 3).elided && frame(t, 7).elided);
        assert_eq!(frame(t, 7).function, "system_call_fastpath");
    }

    #[test]
    fn seed_notes_abbreviated_and_annotated() {
        // The abbreviated form from the seeds' README.
        let text = " #0 [ffff88003e5ebce8] __schedule at ffffffff816a8f45\n #1 [ffff88003e5ebd08] kvm_mmu_load at ffffffffc09a9833 [kvm]\n #2 [ffff88003e5ebd50] vcpu_enter_guest at ffffffffc09920fb [kvm]\n #3 kvm_arch_vcpu_ioctl_run, #4 kvm_vcpu_ioctl, #5 do_vfs_ioctl, #6 sys_ioctl, #7 system_call_fastpath\n";
        let tasks = parse(text).unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].pid, None);
        let names: Vec<&str> = tasks[0].frames.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(
            names,
            [
                "__schedule",
                "kvm_mmu_load",
                "vcpu_enter_guest",
                "kvm_arch_vcpu_ioctl_run",
                "kvm_vcpu_ioctl",
                "do_vfs_ioctl",
                "sys_ioctl",
                "system_call_fastpath"
            ]
        );
        let f6 = frame(&tasks[0], 6);
        assert_eq!((f6.level, f6.slot, f6.ra, f6.line_no), (6, None, None, 4));

        // Seed 002: labels glued to words and addresses.
        let text = " #6 [ffffadd8a8a27af8] smp_call_function_single at ffffffffab34ba2e[ip]\n    ffffadd8a8a27b00: 0000000000000010[cs] 0000000000000202[rflags]\n    ffffadd8a8a27b10: ffffadd8a8a27b20[sp] 0000000000000018[ss]\n";
        let t = parse(text).unwrap();
        let f = &t[0].frames[0];
        assert_eq!(f.ra, Some(0xffffffffab34ba2e));
        assert_eq!(f.raw_words[3], (0xffffadd8a8a27b18, 0x18));
    }

    #[test]
    fn seed_note_files() {
        // The notes are prose around fenced blocks: the bt lines parse, prose lines are errors.
        for name in ["000_2269998cf613ceb0.txt", "002_befffc58f8ea7878.txt"] {
            let text = std::fs::read_to_string(crate::testdata::fixture("seed-notes").join(name)).unwrap();
            let (tasks, errors) = parse_lenient(&text);
            assert!(!tasks.is_empty() && !errors.is_empty(), "{name}");
            for e in &errors {
                assert!(e.to_string().starts_with(&format!("line {}: cannot parse ", e.line_no)));
            }
        }
    }

    #[test]
    fn slotless_frames_source_lines_and_messages() {
        let text = "PID: 0  TASK: ffffffff82a13840  CPU: 0  COMMAND: \"swapper/0\"\n #0 native_safe_halt at ffffffff8106a0a6\n    /usr/src/debug/linux/arch/x86/include/asm/irqflags.h: 48\n #1 [ffffffff82a03e98] default_idle at ffffffff8106a0b3\nbt: WARNING: possibly bogus exception frame\n(no exception frames found)\n";
        let t = parse(text).unwrap();
        assert_eq!(t[0].command.as_deref(), Some("swapper/0"));
        let f0 = &t[0].frames[0];
        assert_eq!((f0.slot, f0.function.as_str(), f0.ra), (None, "native_safe_halt", Some(0xffffffff8106a0a6)));
        assert_eq!(f0.source.as_deref(), Some("/usr/src/debug/linux/arch/x86/include/asm/irqflags.h: 48"));
        assert_eq!(t[0].frames[1].slot, Some(0xffffffff82a03e98));
        assert_eq!(t[0].messages.len(), 2);
        assert_eq!(t[0].messages[0], (5, "bt: WARNING: possibly bogus exception frame".to_string()));
    }

    #[test]
    fn offsets_and_errors() {
        let t = parse(" #2 [ffffc90000013c08] __handle_sysrq+0x1c at ffffffff819ec9a8\n #3 [ffffc90000013c10] foo+28 at ffffffff819ec9a9\n").unwrap();
        assert_eq!(t[0].frames[0].offset, Some(0x1c));
        assert_eq!(t[0].frames[1].offset, Some(28));
        let e =
            parse("PID: 1  TASK: ffff888003e0c800  CPU: 0  COMMAND: \"init\"\n #0 [zzzz] panic at ffffffff819c5141\n")
                .unwrap_err();
        assert_eq!(e.line_no, 2);
        assert!(e.to_string().starts_with("line 2: cannot parse \" #0 [zzzz] panic at ffffffff819c5141\""), "{e}");
        let e = parse("hello world").unwrap_err();
        assert_eq!(e.to_string(), "line 1: cannot parse \"hello world\": not a crash bt line");
        assert!(parse("    ffff0000: 1234\n").is_err(), "words before a frame");
        assert!(parse("PID: x\n").is_err());
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic xorshift; no rand dependency.
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let alphabet: Vec<char> = "#[]:+-<>()\"., \t\n0123456789abcdefxPIDTASKCPURIPSat ...é中\u{0}".chars().collect();
        let real = read("irq/expected-crash-8.0.6-bt-f-a.txt");
        for round in 0..400 {
            let text: String = if round % 2 == 0 {
                (0..(next() % 400)).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect()
            } else {
                // Real text with random bytes replaced (char-safe) and lines cut.
                real.chars()
                    .map(|c| if next() % 50 == 0 { alphabet[(next() % alphabet.len() as u64) as usize] } else { c })
                    .collect()
            };
            let _ = parse_lenient(&text);
            let _ = parse(&text);
        }
        for s in [
            "#",
            "# ",
            "#x",
            "#1",
            "#1 [",
            "#1 []",
            "#1 [ffff] f at",
            "#1 f at zz",
            "#1 f+ at 1",
            "PID:",
            "--- <",
            ":",
            "A:",
            "A: 1 B:",
            ", #",
            "#1 a, #",
            "CPU  STACK:",
        ] {
            let _ = parse_lenient(s);
        }
    }
}

/// The chain of one task as frames to verify, innermost first: crash's numbered
/// frames (each a return address at its slot) and, where crash printed
/// `[exception RIP: ...]`, the interrupted pc as a frame of its own. Frames that
/// crash printed without an address cannot be checked; their lines are returned apart.
pub fn task_chain(task: &CrashTask) -> (Vec<crate::verify::FrameIn>, Vec<&CrashFrame>) {
    use crate::verify::{FrameIn, FrameKind, Trust};
    let mut out = Vec::new();
    let mut unplaced = Vec::new();
    let interrupted = |e: &CrashExceptionFrame, level: u32| -> Option<FrameIn> {
        e.exception_rip.as_ref()?;
        Some(FrameIn {
            level,
            pc: e.reg("RIP")?,
            sp: e.reg("RSP"),
            slot: None,
            bp: e.reg("RBP"),
            kind: FrameKind::Interrupted,
            name: e.exception_rip.clone(),
            trust: Trust::Registers,
        })
    };
    for e in task.exception_frames.iter().filter(|e| e.after_frame.is_none()) {
        out.extend(interrupted(e, 0));
    }
    for (i, f) in task.frames.iter().enumerate() {
        // Before an exception block crash prints the pt_regs address as the frame's
        // slot; the return address into the entry code is the word below it.
        let entry = task.exception_frames.iter().any(|e| e.after_frame == Some(i) && e.exception_rip.is_some());
        let slot = if entry { f.slot.and_then(|s| s.checked_sub(8)) } else { f.slot };
        match f.ra {
            Some(ra) => out.push(FrameIn {
                level: f.level,
                pc: ra,
                sp: slot.and_then(|s| s.checked_add(8)),
                slot,
                bp: None,
                kind: FrameKind::Normal,
                name: Some(f.function.clone()),
                trust: Trust::Scan,
            }),
            None => unplaced.push(f),
        }
        for e in task.exception_frames.iter().filter(|e| e.after_frame == Some(i)) {
            out.extend(interrupted(e, f.level));
        }
    }
    (out, unplaced)
}

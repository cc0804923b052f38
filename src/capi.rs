//! The C ABI for the crash extension (crash/stackproof.c): the glue passes crash's
//! memory, symbols, tasks and registers in through callbacks; everything decided
//! and printed comes from here. No panic crosses the boundary.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use crate::check::{check, check_crash_task, compare, LiveCpu};
use crate::corefile::USER_REGS;
use crate::crashbt::{self, CrashTask};
use crate::elf::Placement;
use crate::memory::{BlockCache, Memory, ReadError};
use crate::report::{self, ChainRow, Compare, Row, Thread};
use crate::symbols::{Symbol, SymbolTable, Symbols};
use crate::unwind::Start;
use crate::unwind::DEFAULT_MAX_FRAMES;
use crate::verify::Verdict;

/// A symbol as the glue reports it (strings valid until the next call).
#[repr(C)]
pub struct SpSym {
    pub name: *const c_char,
    pub start: u64,
    pub size: u64,
    /// NULL for the kernel image.
    pub module: *const c_char,
}

type ReadFn = unsafe extern "C" fn(*mut c_void, u64, *mut u8, usize) -> c_int;
type SymbolFn = unsafe extern "C" fn(*mut c_void, u64, *mut SpSym) -> c_int;
type AddressFn = unsafe extern "C" fn(*mut c_void, *const c_char, *mut u64) -> c_int;
type WriteFn = unsafe extern "C" fn(*mut c_void, *const c_char);

/// The host session. Each callback returns 1 on success.
#[repr(C)]
pub struct SpHost {
    pub ctx: *mut c_void,
    pub read: Option<ReadFn>,
    pub symbol: Option<SymbolFn>,
    pub address_of: Option<AddressFn>,
    /// Print one piece of text (the glue adds the newline).
    pub write: Option<WriteFn>,
    /// The vmlinux crash loaded (its ELF symbols have sizes; crash's do not), or NULL.
    pub vmlinux: *const c_char,
}

/// Words of `pr_reg` (NT_PRSTATUS): `struct user_regs_struct`.
pub const PR_REG_WORDS: usize = USER_REGS.len();

/// A register of `pr_reg` by its name in [`USER_REGS`].
fn pr_reg(r: &[u64; PR_REG_WORDS], name: &str) -> u64 {
    USER_REGS.iter().position(|n| *n == name).map_or(0, |i| r[i])
}

/// One task to check.
#[repr(C)]
pub struct SpTask {
    pub pid: u64,
    pub task: u64,
    /// -1 when not running on a CPU.
    pub cpu: c_int,
    pub comm: *const c_char,
    /// `regs` holds the CPU's saved registers (NT_PRSTATUS).
    pub has_regs: c_int,
    pub regs: [u64; PR_REG_WORDS],
    /// thread.sp of a sleeping task, 0 when unknown.
    pub saved_sp: u64,
    /// crash's own `bt` of the task, or NULL when not run.
    pub crash_bt: *const c_char,
    /// Why crash's `bt` failed, or NULL.
    pub crash_bt_error: *const c_char,
    /// `task_struct.stack` and `task_struct.stack_canary` offsets from crash's debug
    /// info, -1 when crash has none.
    pub stack_offset: i64,
    pub canary_offset: i64,
}

#[repr(C)]
pub struct SpOptions {
    pub verbose: c_int,
    pub json: c_int,
    pub all_tasks: c_int,
    pub colour: c_int,
    pub max_frames: c_int,
    /// Write the JSON document here too, or NULL.
    pub output: *const c_char,
}

/// What a command found, for the glue's exit-status and `--strict` handling.
#[repr(C)]
#[derive(Default)]
pub struct SpResult {
    pub tasks: u32,
    pub frames: u32,
    pub bogus: u32,
    pub lost: u32,
    /// 0: done; 1: an error line was written.
    pub error: c_int,
}

struct HostMemory<'a> {
    host: &'a SpHost,
    /// The kernel's text, `[_stext, _etext)`: its pages are kept for the whole session.
    text: Option<(u64, u64)>,
}

/// Kernel text pages read so far in this crash process (one dump per process; the
/// text does not change under it): each page is decompressed by crash once, not once
/// per command. None: the page is unreadable.
static TEXT_PAGES: Mutex<Option<HashMap<u64, Option<Arc<[u8]>>>>> = Mutex::new(None);
const PAGE: u64 = 4096;
const TEXT_PAGES_MAX: usize = 16384;

impl HostMemory<'_> {
    fn host_read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let f = self.host.read.ok_or(ReadError { addr })?;
        // SAFETY: the glue reads at most buf.len() bytes into buf.
        match unsafe { f(self.host.ctx, addr, buf.as_mut_ptr(), buf.len()) } {
            1 => Ok(()),
            _ => Err(ReadError { addr }),
        }
    }

    fn text_page(&self, page: u64) -> Option<Arc<[u8]>> {
        let mut cache = TEXT_PAGES.lock().ok()?;
        let map = cache.get_or_insert_with(HashMap::new);
        if let Some(p) = map.get(&page) {
            return p.clone();
        }
        let mut b = vec![0u8; PAGE as usize];
        let p: Option<Arc<[u8]>> = self.host_read(page, &mut b).ok().map(|_| b.into());
        if map.len() < TEXT_PAGES_MAX {
            map.insert(page, p.clone());
        }
        p
    }
}

impl Memory for HostMemory<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let end = addr.checked_add(buf.len() as u64).ok_or(ReadError { addr })?;
        if buf.is_empty() || !self.text.is_some_and(|(lo, hi)| addr >= lo && end <= hi) {
            return self.host_read(addr, buf);
        }
        let mut at = addr;
        let mut done = 0usize;
        while at < end {
            let page = at & !(PAGE - 1);
            let Some(p) = self.text_page(page) else { return Err(ReadError { addr: at }) };
            let off = (at - page) as usize;
            let n = ((page + PAGE).min(end) - at) as usize;
            buf[done..done + n].copy_from_slice(&p[off..off + n]);
            done += n;
            at += n as u64;
        }
        Ok(())
    }
}

/// The kernel's function symbols, from the vmlinux's ELF table (sized, as gdb has
/// them) moved to where crash placed the kernel (KASLR): loaded once per session.
fn kernel_table(host: &SpHost, ask: &HostSymbols) -> Option<Arc<SymbolTable>> {
    static CACHE: Mutex<Option<(String, Option<Arc<SymbolTable>>)>> = Mutex::new(None);
    // SAFETY: a NUL-terminated path from the glue.
    let path = unsafe { text(host.vmlinux) }?;
    let mut cache = CACHE.lock().ok()?;
    if let Some((p, t)) = cache.as_ref() {
        if *p == path {
            return t.clone();
        }
    }
    let load = || -> Option<Arc<SymbolTable>> {
        let syms = crate::elf::load_symbols(std::path::Path::new(&path), &Placement::Bias(0), None).ok()?;
        let linked = SymbolTable::new(syms.clone()).address_of("_stext")?;
        let bias = ask.host_address_of("_stext")?.wrapping_sub(linked);
        let moved = syms.into_iter().map(|mut s| {
            s.start = s.start.wrapping_add(bias);
            s
        });
        Some(Arc::new(SymbolTable::new(moved.collect())))
    };
    let table = load();
    *cache = Some((path, table.clone()));
    table
}

/// crash's symbols (modules, or all when the vmlinux cannot be read), each asked once per command.
struct HostSymbols<'a> {
    host: &'a SpHost,
    kernel: Option<Arc<SymbolTable>>,
    by_start: RefCell<BTreeMap<u64, Symbol>>,
    misses: RefCell<HashMap<u64, ()>>,
    names: RefCell<HashMap<String, Option<u64>>>,
}

unsafe fn text(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: the glue passes NUL-terminated strings.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

impl HostSymbols<'_> {
    fn host_address_of(&self, name: &str) -> Option<u64> {
        if let Some(v) = self.names.borrow().get(name) {
            return *v;
        }
        let f = self.host.address_of?;
        let c = CString::new(name).ok()?;
        let mut v = 0u64;
        // SAFETY: c is NUL-terminated, v a valid out pointer.
        let found = (unsafe { f(self.host.ctx, c.as_ptr(), &mut v) } == 1).then_some(v);
        self.names.borrow_mut().insert(name.to_string(), found);
        found
    }
}

impl Symbols for HostSymbols<'_> {
    fn lookup(&self, addr: u64) -> Option<Symbol> {
        if let Some(s) = self.kernel.as_ref().and_then(|k| k.lookup(addr)) {
            return Some(s);
        }
        if let Some((_, s)) = self.by_start.borrow().range(..=addr).next_back() {
            if s.contains(addr) {
                return Some(s.clone());
            }
        }
        // crash names data too: an address outside the kernel's code needs no question.
        if addr < crate::kernel::CODE_START || self.misses.borrow().contains_key(&addr) {
            return None;
        }
        let f = self.host.symbol?;
        let mut out = SpSym { name: std::ptr::null(), start: 0, size: 0, module: std::ptr::null() };
        // SAFETY: out is a valid SpSym; strings are copied before the next call.
        let found = unsafe { f(self.host.ctx, addr, &mut out) } == 1;
        let sym = if found {
            // SAFETY: as above.
            unsafe { text(out.name) }.map(|name| Symbol {
                name: name.into(),
                start: out.start,
                size: out.size,
                module: unsafe { text(out.module) }.map(Into::into),
            })
        } else {
            None
        };
        match &sym {
            Some(s) if s.contains(addr) && s.size > 0 => {
                self.by_start.borrow_mut().insert(s.start, s.clone());
            }
            _ => {
                let mut m = self.misses.borrow_mut();
                if m.len() < 1 << 16 {
                    m.insert(addr, ());
                }
            }
        }
        sym.filter(|s| s.contains(addr))
    }

    /// What the analyses learn of the kernel's code is kept for the crash session
    /// (the extension's lifetime), as the kernel's table and text pages are.
    fn store(&self) -> Option<&crate::memo::Store> {
        static SESSION: once_cell::sync::Lazy<crate::memo::Store> = once_cell::sync::Lazy::new(Default::default);
        Some(&SESSION)
    }

    fn address_of(&self, name: &str) -> Option<u64> {
        self.host_address_of(name)
    }
}

/// crash reads (and for kdump-compressed files decompresses) each page on its own:
/// reading only the pages asked for is cheaper than gdb's 64 KiB blocks.
const CRASH_BLOCK: u64 = crate::memory::PAGE;

struct Session<'a> {
    host: &'a SpHost,
    mem: BlockCache<HostMemory<'a>>,
    syms: HostSymbols<'a>,
}

impl<'a> Session<'a> {
    fn new(host: &'a SpHost) -> Self {
        let mut syms = HostSymbols {
            host,
            kernel: None,
            by_start: Default::default(),
            misses: Default::default(),
            names: Default::default(),
        };
        syms.kernel = kernel_table(host, &syms);
        let text = syms.host_address_of("_stext").zip(syms.host_address_of("_etext")).filter(|(a, b)| a < b);
        Session { host, mem: BlockCache::new(HostMemory { host, text }, CRASH_BLOCK), syms }
    }

    fn write(&self, s: &str) {
        let Some(f) = self.host.write else { return };
        let c = CString::new(s.replace('\0', "\\0")).unwrap_or_default();
        // SAFETY: c is NUL-terminated and outlives the call.
        unsafe { f(self.host.ctx, c.as_ptr()) }
    }
}

/// Run `f`, turning a panic into one line.
fn guarded<T: Default>(host: *const SpHost, what: &str, f: impl FnOnce(&SpHost) -> T) -> T {
    // SAFETY: the glue passes a valid host or NULL.
    let Some(host) = (unsafe { host.as_ref() }) else { return T::default() };
    match catch_unwind(AssertUnwindSafe(|| f(host))) {
        Ok(v) => v,
        Err(payload) => {
            let line = format!("{what}: internal error: {}", crate::panic_text(&*payload));
            if let (Some(w), Ok(c)) = (host.write, CString::new(line)) {
                // SAFETY: as in Session::write.
                unsafe { w(host.ctx, c.as_ptr()) }
            }
            T::default()
        }
    }
}

/// Silence the default panic hook (it would print a Rust backtrace into the session).
/// Called once by the glue when it is loaded.
#[no_mangle]
pub extern "C" fn stackproof_init() {
    std::panic::set_hook(Box::new(|_| {}));
}

/// One task's checked document, owned.
struct Checked {
    title: String,
    pid: u64,
    task: u64,
    cpu: Option<u32>,
    comm: String,
    source: &'static str,
    /// Printed before the document (crash's `bt` failed, no context).
    notes: Vec<String>,
    stop: Option<String>,
    rows: Vec<Row>,
    chain: Option<Vec<ChainRow>>,
    chain_stop: Option<String>,
    compare: Option<(Vec<u32>, Vec<usize>)>,
    reads: u64,
}

impl Checked {
    fn thread(&self) -> Thread<'_> {
        let chain = self.chain.as_ref();
        Thread {
            title: Some(&self.title),
            task: Some(report::Task { pid: self.pid, task: self.task, cpu: self.cpu, command: &self.comm }),
            source: self.source,
            thread: None,
            stop: self.stop.as_deref(),
            frames: self.rows.iter().collect(),
            chain: chain.map(|c| c.iter().collect()),
            chain_stop: self.chain_stop.as_deref(),
            compare: self.compare.as_ref().map(|(invented, lost)| Compare {
                invented: invented.clone(),
                lost: lost.iter().filter_map(|&i| chain?.get(i)).collect(),
            }),
            reads: self.reads,
        }
    }

    fn count(&self, v: Verdict) -> u32 {
        self.rows.iter().filter(|r| r.verdict() == v).count() as u32
    }

    fn lost(&self) -> u32 {
        self.compare.as_ref().map_or(0, |c| c.1.len() as u32)
    }
}

/// Where a task starts: a running task from its CPU's registers (with them as the live
/// CPU), a sleeping one from its switch frame (with frame 0's return-address slot).
type Started = (Start, Option<LiveCpu>, Option<u64>);

fn task_start(s: &Session, t: &SpTask) -> Result<Started, String> {
    if t.has_regs != 0 {
        let r = |n| pr_reg(&t.regs, n);
        // The other general-purpose registers explain a NULL call at frame 0.
        let scratch = USER_REGS
            .iter()
            .filter(|n| !crate::layout::CALLEE_SAVED_NAMES.contains(n))
            .filter_map(|n| Some((crate::x86::Reg::from_name(n)?, r(n))))
            .filter(|(reg, _)| *reg != crate::x86::Reg::Rsp)
            .collect();
        let start = Start {
            pc: r("rip"),
            sp: r("rsp"),
            callee_saved: crate::layout::CALLEE_SAVED_NAMES.map(|n| Some(r(n))),
            scratch,
        };
        let user_mode = crate::kernel::user_mode(r("cs"), r("rip"));
        return Ok((start.clone(), Some(LiveCpu { start, user_mode }), None));
    }
    if t.saved_sp == 0 {
        return Err("no registers and no saved thread.sp".into());
    }
    let q = crate::kernel::task::TaskQuery {
        task: t.task,
        task_expr: format!("{:#x}", t.task),
        stack_offset: u64::try_from(t.stack_offset).ok(),
        thread_sp_offset: None,
        saved_sp: Some(t.saved_sp),
        cpus: Vec::new(),
        current_task_offset: None,
    };
    let ts = crate::kernel::task::task_start(&s.mem, &s.syms, &q)?;
    let reg = |n: &str| ts.regs.iter().find(|(r, _)| *r == n).map(|(_, v)| *v);
    let start =
        Start { pc: ts.pc, sp: ts.sp, callee_saved: crate::layout::CALLEE_SAVED_NAMES.map(reg), scratch: Vec::new() };
    Ok((start, None, ts.slot))
}

fn check_task(s: &Session, t: &SpTask, max: usize, with_crash_bt: bool) -> Checked {
    // SAFETY: NUL-terminated strings from the glue.
    let comm = unsafe { text(t.comm) }.unwrap_or_default();
    let cpu = u32::try_from(t.cpu).ok();
    let title = report::task_title(t.pid, t.task, cpu, &comm);
    let reads_before = s.mem.requests();
    let out = Checked {
        title,
        pid: t.pid,
        task: t.task,
        cpu,
        comm: comm.clone(),
        source: "registers",
        notes: Vec::new(),
        stop: None,
        rows: Vec::new(),
        chain: None,
        chain_stop: None,
        compare: None,
        reads: 0,
    };
    let started = task_start(s, t);
    // One memo for the task: its crash bt check and its own chain decode the same calls.
    let mut out = crate::memory::scoped(&s.mem, |mem| check_task_in(s, mem, t, started, max, with_crash_bt, out));
    out.reads = s.mem.requests() - reads_before;
    out
}

fn check_task_in<M: Memory>(
    s: &Session,
    mem: &M,
    t: &SpTask,
    started: Result<Started, String>,
    max: usize,
    with_crash_bt: bool,
    mut out: Checked,
) -> Checked {
    let crash_task: Option<CrashTask> = if with_crash_bt {
        // SAFETY: as above.
        let (bt, err) = unsafe { (text(t.crash_bt), text(t.crash_bt_error)) };
        match (bt, err) {
            (_, Some(e)) => {
                out.notes.push(format!("crash's bt failed: {e}; checking stackproof's own chain"));
                None
            }
            (Some(bt), None) => match crashbt::parse(&bt) {
                Ok(tasks) => {
                    // The text's task of this task (a --crash-bt file may hold several); a text
                    // without task headers is this task's.
                    let has_frames = |c: &CrashTask| !c.frames.is_empty() || !c.exception_frames.is_empty();
                    let found = match tasks.iter().any(|c| c.task.is_some()) {
                        true => tasks.into_iter().find(|c| c.task == Some(t.task) && has_frames(c)),
                        false => tasks.into_iter().find(has_frames),
                    };
                    if found.is_none() {
                        out.notes.push("crash's bt has no frames of this task; checking stackproof's own chain".into());
                    }
                    found
                }
                Err(e) => {
                    out.notes.push(format!("crash's bt output not understood ({e}); checking stackproof's own chain"));
                    None
                }
            },
            (None, None) => None,
        }
    } else {
        None
    };
    match (crash_task, started) {
        (Some(ct), started) => {
            out.source = "crash-bt";
            let (start, live) = match started {
                Ok((st, live, _)) => (Some(st), live),
                Err(e) => {
                    out.notes.push(format!("no own chain: {e}"));
                    (None, None)
                }
            };
            let reports = check_crash_task(mem, &s.syms, &ct, live.as_ref(), max);
            let (frames, unplaced) = crashbt::task_chain(&ct);
            out.rows = report::crash_rows(reports, &unplaced);
            if let Some(start) = start {
                let own = crate::check::own_chain(mem, &s.syms, &start, max);
                out.compare = Some(compare(&frames, &own));
                out.chain = Some(own.frames.iter().map(|f| ChainRow::of(&s.syms, f)).collect());
                out.chain_stop = own.stop;
            }
        }
        (None, Ok((start, live, slot))) => {
            let c = if live.is_some() {
                check(mem, &s.syms, None, Some(&start), max)
            } else {
                // A sleeping task: its own chain, frame 0 checked at the switch frame's slot.
                crate::check::check_own(mem, &s.syms, &start, slot, max)
            };
            out.stop = c.chain.as_ref().and_then(|u| u.stop.clone());
            out.rows = c.reports.into_iter().map(|r| Row::Frame(Box::new(r))).collect();
        }
        (None, Err(e)) => out.notes.push(format!("cannot check it: {e}")),
    }
    out
}

fn counts_line(c: &Checked) -> String {
    format!(
        "{} ok, {} probable, {} unknown, {} bogus, {} lost",
        c.count(Verdict::Ok),
        c.count(Verdict::Probable),
        c.count(Verdict::Unknown),
        c.count(Verdict::Bogus),
        c.lost()
    )
}

/// `verify-bt`: check `n` tasks and print their documents (text or JSON); with
/// `all_tasks`, one line per task, the details of tasks with a bogus or lost frame
/// and a total.
///
/// # Safety
/// `host`, `tasks` (`n` of them) and `opts` are valid for the call.
#[no_mangle]
pub unsafe extern "C" fn stackproof_verify(
    host: *const SpHost,
    tasks: *const SpTask,
    n: usize,
    opts: *const SpOptions,
    result: *mut SpResult,
) {
    let r = guarded(host, "verify-bt", |host| {
        // SAFETY: the caller's contract.
        let (tasks, opts) =
            unsafe { (if tasks.is_null() { &[][..] } else { std::slice::from_raw_parts(tasks, n) }, opts.as_ref()) };
        let Some(opts) = opts else { return SpResult { error: 1, ..Default::default() } };
        verify(&Session::new(host), tasks, opts)
    });
    // SAFETY: the caller's contract.
    if let Some(out) = unsafe { result.as_mut() } {
        *out = r;
    }
}

fn verify(s: &Session, tasks: &[SpTask], opts: &SpOptions) -> SpResult {
    let max = usize::try_from(opts.max_frames).ok().filter(|&m| m > 0).unwrap_or(DEFAULT_MAX_FRAMES);
    let all = opts.all_tasks != 0;
    // crash styles nothing; 0 columns: crash's output is not wrapped.
    let styles = (opts.colour != 0).then(crate::text::Styles::gdb_defaults);
    let mut res = SpResult::default();
    let mut done = Vec::with_capacity(tasks.len());
    for t in tasks {
        let c = check_task(s, t, max, !all);
        res.tasks += 1;
        res.frames += c.rows.len() as u32;
        res.bogus += c.count(Verdict::Bogus);
        res.lost += c.lost();
        if all && opts.json == 0 {
            let note = c.notes.first().map(|n| format!("  ({n})")).unwrap_or_default();
            s.write(&format!(
                "{:>7}  {:x}  {:>3}  {:<16} {:>3} frames: {}{note}",
                t.pid,
                t.task,
                u32::try_from(t.cpu).map_or("-".to_string(), |c| c.to_string()),
                c.comm,
                c.rows.len(),
                counts_line(&c)
            ));
        }
        done.push(c);
    }
    let doc = || report::verify_json(&done.iter().map(Checked::thread).collect::<Vec<_>>());
    if opts.json != 0 {
        for c in &done {
            for n in &c.notes {
                s.write(&format!("verify-bt: {}: {n}", c.title));
            }
        }
        s.write(&doc());
    } else if all {
        for c in done.iter().filter(|c| c.count(Verdict::Bogus) > 0 || c.lost() > 0) {
            s.write("");
            s.write(&report::thread_text(&c.thread(), opts.verbose != 0, 0, styles.as_ref()));
        }
        let flagged = done.iter().filter(|c| c.count(Verdict::Bogus) > 0 || c.lost() > 0).count();
        s.write(&format!(
            "{} tasks, {} frames: {} bogus, {} lost; {flagged} task{} with a bogus or lost frame",
            res.tasks,
            res.frames,
            res.bogus,
            res.lost,
            if flagged == 1 { "" } else { "s" }
        ));
    } else {
        for c in &done {
            for n in &c.notes {
                s.write(&format!("verify-bt: {n}"));
            }
            s.write(&report::thread_text(&c.thread(), opts.verbose != 0, 0, styles.as_ref()));
        }
    }
    // SAFETY: NUL-terminated path from the glue.
    if let Some(path) = unsafe { text(opts.output) } {
        if let Err(e) = std::fs::write(&path, doc() + "\n") {
            s.write(&format!("verify-bt: cannot write {path}: {e}"));
            res.error = 1;
        }
    }
    res
}

/// `regs-from-stack` options.
#[repr(C)]
pub struct SpRegsOptions {
    pub address: u64,
    pub has_address: c_int,
    pub scan: c_int,
    pub annotate: c_int,
    pub json: c_int,
    /// `pt_regs` (the kernel's only layout).
    pub layout: *const c_char,
    /// `--frame N` (`frame` >= 0) or `--all` (`frame` < 0): each frame's callee-saved registers.
    pub frames: c_int,
    pub frame: i64,
    /// `--from LO --to HI` (`has_range`): the range scanned and annotated.
    pub has_range: c_int,
    pub lo: u64,
    pub hi: u64,
    /// `--annotate` shows at most this many words (0: the default).
    pub max_words: u64,
}

/// `regs-from-stack`: decode the set at ADDR, or scan the stacks of a task.
///
/// # Safety
/// `host`, `task` and `opts` are valid for the call.
#[no_mangle]
pub unsafe extern "C" fn stackproof_regs(
    host: *const SpHost,
    task: *const SpTask,
    opts: *const SpRegsOptions,
    result: *mut SpResult,
) {
    let r = guarded(host, "regs-from-stack", |host| {
        // SAFETY: the caller's contract.
        let (Some(t), Some(o)) = (unsafe { task.as_ref() }, unsafe { opts.as_ref() }) else {
            return SpResult { error: 1, ..Default::default() };
        };
        regs(&Session::new(host), t, o)
    });
    // SAFETY: the caller's contract.
    if let Some(out) = unsafe { result.as_mut() } {
        *out = r;
    }
}

fn regs(s: &Session, t: &SpTask, o: &SpRegsOptions) -> SpResult {
    use crate::regs::Layout;
    let fail = |line: String| {
        s.write(&format!("regs-from-stack: {line}"));
        SpResult { error: 1, ..Default::default() }
    };
    let (start, _, slot0) = match task_start(s, t) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let live_sp = start.sp;
    // SAFETY: NUL-terminated from the glue.
    let layout = match unsafe { text(o.layout) }.as_deref().map(Layout::from_name).transpose() {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    if o.frames != 0 {
        let req = report::FrameRegsRequest {
            frames: None,
            start,
            want: usize::try_from(o.frame).ok(),
            stop: None,
            max_frames: DEFAULT_MAX_FRAMES,
            json: o.json != 0,
        };
        return match report::frame_regs_document(&s.mem, &s.syms, req) {
            Ok((doc, shown)) => {
                s.write(&doc);
                SpResult { tasks: 1, frames: shown as u32, ..Default::default() }
            }
            Err(e) => fail(e),
        };
    }
    let range = (o.has_range != 0).then_some((o.lo, o.hi));
    if let Some((lo, hi)) = range.filter(|(lo, hi)| hi <= lo) {
        return fail(format!("empty range {lo:#x}..{hi:#x}"));
    }
    let ranges = match range {
        _ if o.has_address != 0 => Vec::new(),
        Some((lo, hi)) => vec![(lo, hi, live_sp)],
        // A CPU in user mode: its user stack (crash has no backtrace or mappings to add).
        None => crate::regs::ranges::scan_ranges(&s.mem, &s.syms, &start, live_sp, &[], &[])
            .into_iter()
            .map(|r| (r.lo, r.hi, r.live_sp))
            .collect(),
    };
    let annotate = (o.annotate != 0).then(|| crate::regs::annotate::Request {
        range,
        // crash's frame numbers are stackproof's own chain's (as `verify-bt` and `--all` print it).
        frames: None,
        start: Some(start.clone()),
        slot0,
        // The task's own canary (a running task's is also its CPU's %gs:0x28). Without
        // crash's task_struct.stack_canary none is labelled: kdump's NT_PRSTATUS gs_base
        // is the user one, not the kernel's per-CPU base.
        canary: u64::try_from(t.canary_offset)
            .ok()
            .and_then(|off| crate::regs::annotate::canary_at(&s.mem, t.task.checked_add(off)?)),
        max_words: if o.max_words == 0 { crate::regs::annotate::MAX_WORDS } else { o.max_words },
    });
    let req = report::RegsRequest {
        live_sp,
        decode: (o.has_address != 0).then_some((o.address, layout)),
        ranges,
        annotate,
        json: o.json != 0,
    };
    match report::regs_document(&s.mem, &s.syms, req) {
        Ok(doc) => s.write(&doc),
        Err(e) => return fail(format!("{:#x}: {e}", o.address)),
    }
    SpResult { tasks: 1, ..Default::default() }
}

#[cfg(test)]
mod tests {
    //! The C ABI with a host written here: what crash's glue would answer.
    use super::*;

    /// A kernel module's two functions (crash names them with `[kvm]`), a stack.
    struct FakeHost {
        mem: Vec<(u64, Vec<u8>)>,
        syms: Vec<(CString, u64, u64)>,
        module: CString,
        out: RefCell<String>,
    }

    const CALLER: u64 = 0xffff_ffff_c0a0_0000;
    const CALLEE: u64 = 0xffff_ffff_c0a0_1000;
    const SP: u64 = 0xffff_c900_0001_0f00;

    unsafe extern "C" fn read(ctx: *mut c_void, addr: u64, buf: *mut u8, n: usize) -> c_int {
        // SAFETY: ctx is the FakeHost; buf holds n bytes.
        let h = unsafe { &*(ctx as *const FakeHost) };
        for (base, bytes) in &h.mem {
            if addr >= *base && addr - base + n as u64 <= bytes.len() as u64 {
                let off = (addr - base) as usize;
                unsafe { std::ptr::copy_nonoverlapping(bytes[off..].as_ptr(), buf, n) };
                return 1;
            }
        }
        0
    }

    unsafe extern "C" fn symbol(ctx: *mut c_void, addr: u64, out: *mut SpSym) -> c_int {
        // SAFETY: as above; out is valid.
        let h = unsafe { &*(ctx as *const FakeHost) };
        for (name, start, size) in &h.syms {
            if *start <= addr && addr < start + size {
                unsafe {
                    *out = SpSym { name: name.as_ptr(), start: *start, size: *size, module: h.module.as_ptr() };
                }
                return 1;
            }
        }
        0
    }

    unsafe extern "C" fn write(ctx: *mut c_void, text: *const c_char) {
        // SAFETY: as above; text is NUL-terminated.
        let h = unsafe { &*(ctx as *const FakeHost) };
        let t = unsafe { CStr::from_ptr(text) }.to_string_lossy();
        h.out.borrow_mut().push_str(&format!("{t}\n"));
    }

    #[test]
    fn module_frames_are_named_as_crash_names_them() {
        // kvm_vcpu_ioctl: 11 nops, `call kvm_arch_vcpu_ioctl_run`, ret; the callee: push rbp, ud2.
        let mut caller = vec![0x90u8; 11];
        caller.push(0xe8);
        caller.extend_from_slice(&((CALLEE as i64 - (CALLER as i64 + 16)) as i32).to_le_bytes());
        caller.push(0xc3);
        caller.resize(0x40, 0xcc);
        let mut callee = vec![0x55u8, 0x0f, 0x0b];
        callee.resize(0x40, 0xcc);
        let mut stack = vec![0u8; 0x100];
        // At the callee's first instruction: sp holds the return address.
        stack[..8].copy_from_slice(&(CALLER + 16).to_le_bytes());
        let host_state = FakeHost {
            mem: vec![(CALLER, caller), (CALLEE, callee), (SP, stack)],
            syms: vec![
                (CString::new("kvm_vcpu_ioctl").unwrap(), CALLER, 0x40),
                (CString::new("kvm_arch_vcpu_ioctl_run").unwrap(), CALLEE, 0x40),
            ],
            module: CString::new("kvm").unwrap(),
            out: RefCell::new(String::new()),
        };
        let host = SpHost {
            ctx: &host_state as *const FakeHost as *mut c_void,
            read: Some(read),
            symbol: Some(symbol),
            address_of: None,
            write: Some(write),
            vmlinux: std::ptr::null(),
        };
        let comm = CString::new("qemu-kvm").unwrap();
        let mut regs = [0u64; PR_REG_WORDS];
        let set = |r: &mut [u64; PR_REG_WORDS], n: &str, v: u64| r[USER_REGS.iter().position(|x| *x == n).unwrap()] = v;
        set(&mut regs, "rip", CALLEE);
        set(&mut regs, "rsp", SP);
        set(&mut regs, "cs", 0x10);
        let task = SpTask {
            pid: 4242,
            task: 0xffff_8880_0400_0000,
            cpu: 0,
            comm: comm.as_ptr(),
            has_regs: 1,
            regs,
            saved_sp: 0,
            crash_bt: std::ptr::null(),
            crash_bt_error: std::ptr::null(),
            stack_offset: -1,
            canary_offset: -1,
        };
        let opts = SpOptions { verbose: 0, json: 0, all_tasks: 0, colour: 0, max_frames: 8, output: std::ptr::null() };
        let mut res = SpResult::default();
        // SAFETY: all pointers are valid for the call.
        unsafe { stackproof_verify(&host, &task, 1, &opts, &mut res) };
        let out = host_state.out.borrow();
        assert!(out.contains("kvm_arch_vcpu_ioctl_run [kvm]"), "{out}");
        assert!(out.contains("kvm_vcpu_ioctl+0x10 [kvm]"), "{out}");
        assert_eq!(res.bogus, 0, "{out}");
    }
}

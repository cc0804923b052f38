//! Where a sleeping kernel task's stack resumes, found from its task_struct alone.

use super::{is_kernel, THREAD_SIZE};
use crate::memory::Memory;
use crate::symbols::Symbols;

/// `task_struct.stack` without debug info (x86-64, 6.x: just after thread_info).
pub const TASK_STACK_OFFSET: u64 = 0x20;
/// How far into a task_struct `thread.sp` is looked for.
const TASK_SCAN_LIMIT: u64 = 0x4000;
/// `struct inactive_task_frame`: r15 r14 r13 r12 bx bp ret_addr.
const INACTIVE_FRAME: [&str; 6] = ["r15", "r14", "r13", "r12", "rbx", "rbp"];
const INACTIVE_FRAME_WORDS: u64 = 7;

/// A CPU of the dump (a debugger thread): its number, stack pointer and GS base.
#[derive(Debug, Clone)]
pub struct Cpu {
    pub thread: u32,
    pub sp: Option<u64>,
    pub gs_base: u64,
}

/// What is known of the task to start from.
#[derive(Debug, Clone)]
pub struct TaskQuery {
    pub task: u64,
    /// How the user named it (for messages).
    pub task_expr: String,
    /// Offsets from the kernel's debug info, when it is loaded.
    pub stack_offset: Option<u64>,
    pub thread_sp_offset: Option<u64>,
    /// `thread.sp` given by the user.
    pub saved_sp: Option<u64>,
    pub cpus: Vec<Cpu>,
    /// Offset of the per-CPU `current_task` from the GS base, when known.
    pub current_task_offset: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct TaskStart {
    pub pc: u64,
    pub sp: u64,
    pub regs: Vec<(&'static str, u64)>,
    /// The task's stack block `[stack, stack + THREAD_SIZE)`.
    pub stack: (u64, u64),
    /// Frame 0's return-address slot: `ret_addr` was pushed by `call __switch_to_asm`,
    /// unless it is a function's first byte (`ret_from_fork` of a task that never ran).
    pub slot: Option<u64>,
    pub notes: Vec<String>,
}

/// `task_struct.thread.sp` points at the `struct inactive_task_frame` that
/// `__switch_to_asm` pushed; the task resumes at `ret_addr` with sp just above the frame.
/// Without debug info the offset of `thread.sp` is found as the one word of the
/// task_struct that points into the task's own stack at a frame whose last word is where
/// a task resumes. A task running on a CPU is refused (its thread.sp is stale).
pub fn task_start<M: Memory, S: Symbols>(mem: &M, syms: &S, q: &TaskQuery) -> Result<TaskStart, String> {
    let task = q.task;
    if !is_kernel(task) {
        return Err(format!(
            "--task {}: a PID needs the kernel's debug info (the layout of struct task_struct); \
             give the task_struct address instead (crash's TASK: column)",
            q.task_expr
        ));
    }
    // Words past the top of the address space are unreadable, never wrapped around.
    let at = |base: u64, off: u64| base.checked_add(off).filter(|a| *a <= u64::MAX - 7);
    let u64_at = |a: Option<u64>| mem.read_u64(a?).ok();
    let mut notes = Vec::new();
    let stack = u64_at(at(task, q.stack_offset.unwrap_or(TASK_STACK_OFFSET)))
        .ok_or_else(|| format!("--task {task:#x}: task_struct not readable"))?;
    if !is_kernel(stack) || stack % THREAD_SIZE != 0 {
        return Err(format!(
            "--task {task:#x}: task_struct.stack is {stack:#x}, not a kernel stack: not a task_struct?"
        ));
    }
    let end = stack.saturating_add(THREAD_SIZE);
    for cpu in &q.cpus {
        let current = match q.current_task_offset {
            Some(off) if is_kernel(cpu.gs_base) => u64_at(at(cpu.gs_base, off)),
            _ => None,
        };
        let on_its_stack = current.is_none() && cpu.sp.is_some_and(|sp| (stack..end).contains(&sp));
        if current == Some(task) || on_its_stack {
            let n = cpu.thread;
            return Err(format!(
                "--task {task:#x} is running on a CPU (gdb thread {n}): use `thread {n}` instead \
                 (its registers are live; its thread.sp is stale)"
            ));
        }
    }
    let saved_sp = match (q.saved_sp, q.thread_sp_offset) {
        (Some(sp), _) => {
            notes.push(format!("thread.sp {sp:#x} given with --sp"));
            Some(sp)
        }
        (None, Some(off)) => {
            notes.push(format!("thread.sp at task+{off:#x} (debug info)"));
            u64_at(at(task, off))
        }
        (None, None) => {
            let mut found = Vec::new();
            let mut o = TASK_STACK_OFFSET + 8;
            while o < TASK_SCAN_LIMIT {
                let Some(v) = u64_at(at(task, o)) else { break };
                if stack < v && v < end && v % 8 == 0 && resumes_in_code(mem, syms, v) {
                    found.push((o, v));
                }
                o += 8;
            }
            if found.is_empty() && (0..THREAD_SIZE).step_by(0x1000).all(|a| u64_at(at(stack, a)).is_none()) {
                return Err(format!("--task {task:#x}: its stack {stack:#x}..{end:#x} is not in the dump"));
            }
            let [(off, v)] = found[..] else {
                return Err(format!(
                    "--task {task:#x}: cannot tell which word of the task_struct is thread.sp \
                     ({} candidates pointing into its stack {stack:#x}); give it with --sp",
                    found.len()
                ));
            };
            notes.push(format!(
                "thread.sp at task+{off:#x} (the one word pointing at a switch frame in the task's stack)"
            ));
            Some(v)
        }
    };
    let saved_sp = saved_sp.ok_or_else(|| format!("--task {task:#x}: thread.sp not readable"))?;
    let word = |i: u64| u64_at(at(saved_sp, 8 * i));
    let unreadable = || format!("--task {task:#x}: inactive_task_frame at {saved_sp:#x} not readable");
    let ret = word(INACTIVE_FRAME_WORDS - 1).ok_or_else(unreadable)?;
    let sp = saved_sp.checked_add(8 * INACTIVE_FRAME_WORDS).ok_or_else(unreadable)?;
    let regs = INACTIVE_FRAME.iter().zip(0u64..).filter_map(|(n, i)| Some((*n, word(i)?))).collect();
    notes.push(format!("inactive_task_frame at {saved_sp:#x}: ret_addr {ret:#x}"));
    let entry = syms.lookup(ret).is_some_and(|s| s.start == ret);
    Ok(TaskStart { pc: ret, sp, regs, stack: (stack, end), slot: (!entry).then(|| sp - 8), notes })
}

/// Does the inactive_task_frame at `frame` end with a place a task resumes at: a return
/// address right after a call (into `__schedule`), or a function's entry (`ret_from_fork`)?
fn resumes_in_code<M: Memory, S: Symbols>(mem: &M, syms: &S, frame: u64) -> bool {
    let Some(Ok(ret)) = frame.checked_add(8 * (INACTIVE_FRAME_WORDS - 1)).map(|a| mem.read_u64(a)) else {
        return false;
    };
    if crate::unwind::return_address_in(mem, syms, ret).is_some() {
        return true;
    }
    is_kernel(ret) && syms.lookup(ret).is_some_and(|s| s.start == ret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::{load_symbols, Placement};
    use crate::memory::Regions;
    use crate::symbols::SymbolTable;
    use crate::testdata::kernel_fixture;
    use object::{Object, ObjectSegment};

    fn panic_core() -> (Regions, SymbolTable) {
        let data = std::fs::read(kernel_fixture("panic/minicore.elf").unwrap()).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let mut mem = Regions::new();
        for seg in file.segments() {
            mem.add(seg.address(), seg.data().unwrap().to_vec());
        }
        let syms = load_symbols(&kernel_fixture("vmlinux.sym").unwrap(), &Placement::Bias(0), None).unwrap();
        (mem, SymbolTable::new(syms))
    }

    fn query(task: u64) -> TaskQuery {
        TaskQuery {
            task,
            task_expr: format!("{task:#x}"),
            stack_offset: None,
            thread_sp_offset: None,
            saved_sp: None,
            cpus: vec![],
            current_task_offset: None,
        }
    }

    /// panic's nc (pid 106, tests/fixtures/kernel manifest): its stack ffffc90000440000,
    /// thread.sp at task+0x14d8 = ffffc90000443b30 (the e2e --sp test), resuming in __schedule.
    #[test]
    fn sleeping_task_from_its_task_struct() {
        let (mem, syms) = panic_core();
        let t = task_start(&mem, &syms, &query(0xffff8880046fe000)).unwrap();
        assert_eq!(t.stack, (0xffffc90000440000, 0xffffc90000444000));
        assert_eq!((t.sp, t.slot), (0xffffc90000443b68, Some(0xffffc90000443b60)));
        assert_eq!(&*syms.lookup(t.pc - 1).unwrap().name, "__schedule");
        assert!(t.notes[0].starts_with("thread.sp at task+0x14d8 "), "{:?}", t.notes);
        // The CPU whose current_task it is refuses it; so does a CPU whose sp is on its stack.
        let mut q = query(0xffff8880046fe000);
        q.cpus = vec![Cpu { thread: 2, sp: Some(0xffffc90000443000), gs_base: 0 }];
        assert!(task_start(&mem, &syms, &q).unwrap_err().contains("running on a CPU (gdb thread 2)"));
        let e = task_start(&mem, &syms, &query(106)).unwrap_err();
        assert!(e.starts_with("--task 0x6a: a PID needs"), "{e}");
        let e = task_start(&mem, &syms, &query(u64::MAX - 3)).unwrap_err();
        assert!(e.ends_with("task_struct not readable"), "{e}");
    }
}

use super::*;

const BASE: u64 = 0x1000;

/// Concatenate instructions; returns the code and each instruction's address.
fn asm(parts: &[&[u8]]) -> (Vec<u8>, Vec<u64>) {
    let mut code = Vec::new();
    let mut addrs = Vec::new();
    for p in parts {
        addrs.push(BASE + code.len() as u64);
        code.extend_from_slice(p);
    }
    (code, addrs)
}

fn cfas(parts: &[&[u8]]) -> Vec<String> {
    let (code, addrs) = asm(parts);
    let l = analyze_with(&code, BASE, &Options::default());
    addrs.iter().map(|a| l.rule_at(*a).map_or("-".to_string(), |r| r.cfa.to_string())).collect()
}

const PUSH_RBP: &[u8] = &[0x55];
const MOV_RSP_RBP: &[u8] = &[0x48, 0x89, 0xe5];
const PUSH_RBX: &[u8] = &[0x53];
const PUSH_R12: &[u8] = &[0x41, 0x54];
const POP_RBX: &[u8] = &[0x5b];
const POP_RBP: &[u8] = &[0x5d];
const POP_R12: &[u8] = &[0x41, 0x5c];
const SUB_10: &[u8] = &[0x48, 0x83, 0xec, 0x10];
const ADD_10: &[u8] = &[0x48, 0x83, 0xc4, 0x10];
const RET: &[u8] = &[0xc3];
const LEAVE: &[u8] = &[0xc9];
const NOP: &[u8] = &[0x90];
const AND_32: &[u8] = &[0x48, 0x83, 0xe4, 0xe0];
const SUB_40: &[u8] = &[0x48, 0x83, 0xec, 0x40];
const TEST_EDI: &[u8] = &[0x85, 0xff];
const XOR_EAX: &[u8] = &[0x31, 0xc0];
const MOV_RDI_RBX: &[u8] = &[0x48, 0x89, 0xfb];

#[test]
fn push_sub_frame() {
    let c = cfas(&[PUSH_RBX, PUSH_R12, SUB_10, NOP, ADD_10, POP_R12, POP_RBX, RET]);
    assert_eq!(c, ["rsp+8", "rsp+16", "rsp+24", "rsp+40", "rsp+40", "rsp+24", "rsp+16", "rsp+8"].map(String::from));
    let (code, a) = asm(&[PUSH_RBX, PUSH_R12, SUB_10, NOP, ADD_10, POP_R12, POP_RBX, RET]);
    let l = analyze_with(&code, BASE, &Options::default());
    let r = l.rule_at(a[3]).unwrap();
    assert_eq!(r.saved[0], Saved::At(-16));
    assert_eq!(r.saved[2], Saved::At(-24));
    assert_eq!(r.describe(), "cfa=rsp+40 rbx=cfa-16 r12=cfa-24");
    assert_eq!(l.rule_at(a[7]).unwrap().saved, [Saved::Same; 6], "pops restore the caller's values");
}

#[test]
fn rbp_frame_with_leave() {
    let c = cfas(&[PUSH_RBP, MOV_RSP_RBP, SUB_10, MOV_RDI_RBX, LEAVE, RET]);
    assert_eq!(c, ["rsp+8", "rsp+16", "rbp+16", "rbp+16", "rbp+16", "rsp+8"].map(String::from));
    // epilogue with pop instead of leave
    let c = cfas(&[PUSH_RBP, MOV_RSP_RBP, POP_RBP, RET]);
    assert_eq!(c, ["rsp+8", "rsp+16", "rbp+16", "rsp+8"].map(String::from));
}

#[test]
fn enter_and_pushf() {
    let enter: &[u8] = &[0xc8, 0x20, 0x00, 0x00];
    let c = cfas(&[enter, &[0x9c], &[0x9d], LEAVE, RET]);
    assert_eq!(c, ["rsp+8", "rbp+16", "rbp+16", "rbp+16", "rsp+8"].map(String::from));
    let c = cfas(&[&[0x9c], &[0x9d], RET]);
    assert_eq!(c, ["rsp+8", "rsp+16", "rsp+8"].map(String::from));
}

#[test]
fn realigned_rbp_frame_stays_rbp_based() {
    // seed 002: push %rbp; mov %rsp,%rbp; and $-32,%rsp; sub $0x40,%rsp
    let c = cfas(&[PUSH_RBP, MOV_RSP_RBP, AND_32, SUB_40, NOP, LEAVE, RET]);
    assert_eq!(c, ["rsp+8", "rsp+16", "rbp+16", "rbp+16", "rbp+16", "rbp+16", "rsp+8"].map(String::from));
    // without a frame pointer the CFA is lost, and says why
    let c = cfas(&[AND_32, NOP, RET]);
    assert_eq!(c[1], "unknown(realigned)");
}

#[test]
fn drap_frame() {
    let lea_r10: &[u8] = &[0x4c, 0x8d, 0x54, 0x24, 0x08];
    let push_m8_r10: &[u8] = &[0x41, 0xff, 0x72, 0xf8];
    let push_r10: &[u8] = &[0x41, 0x52];
    let call: &[u8] = &[0xe8, 0, 0x10, 0, 0]; // clobbers r10
    let mov_r10: &[u8] = &[0x4c, 0x8b, 0x55, 0xf8];
    let lea_rsp: &[u8] = &[0x49, 0x8d, 0x62, 0xf8];
    let c =
        cfas(&[lea_r10, AND_32, push_m8_r10, PUSH_RBP, MOV_RSP_RBP, push_r10, call, NOP, mov_r10, LEAVE, lea_rsp, RET]);
    assert_eq!(
        c,
        [
            // as gcc's .eh_frame: the slot from the spill (`push %r10`) to the reload
            "rsp+8", "rsp+8", "r10+0", "r10+0", "r10+0", "r10+0", "[rbp-8]", "[rbp-8]", "[rbp-8]", "r10+0", "r10+0",
            "rsp+8"
        ]
        .map(String::from)
    );
}

#[test]
fn rsp_preferred_when_rbp_is_no_frame_pointer() {
    // libc's realpath: push %rbp; push %rbx; sub $0x1000,%rsp; lea 0x60(%rsp),%rbp
    let push_rbx: &[u8] = PUSH_RBX;
    let sub_1000: &[u8] = &[0x48, 0x81, 0xec, 0x00, 0x10, 0x00, 0x00];
    let lea_rbp: &[u8] = &[0x48, 0x8d, 0x6c, 0x24, 0x60];
    let c = cfas(&[PUSH_RBP, push_rbx, sub_1000, lea_rbp, NOP, RET]);
    assert_eq!(c[4], "rsp+4120", "rbp is a pointer into the frame, not a frame pointer");
    // a frame pointer stays rbp-based although rsp is known (as gcc's CFI)
    let c = cfas(&[PUSH_RBP, MOV_RSP_RBP, SUB_40, NOP, LEAVE, RET]);
    assert_eq!(c[3], "rbp+16");
}

/// The rule at instruction `n` of `parts`.
fn rule_n(parts: &[&[u8]], n: usize) -> Rule {
    let code: Vec<u8> = parts.concat();
    let l = analyze_with(&code, 0x1000, &Options::default());
    l.instructions()[n].rule.clone()
}

#[test]
fn cfa_and_saved_registers_of_a_drap_frame() {
    let lea_r10: &[u8] = &[0x4c, 0x8d, 0x54, 0x24, 0x08];
    let push_m8_r10: &[u8] = &[0x41, 0xff, 0x72, 0xf8];
    let push_r10: &[u8] = &[0x41, 0x52];
    let parts = [lea_r10, AND_32, push_m8_r10, PUSH_RBP, MOV_RSP_RBP, push_r10, PUSH_RBX, NOP, RET];
    // CFA 0x7000; the and leaves rsp at 0x6fe0: ra copy 0x6fd8, rbp 0x6fd0 (= rbp), r10 0x6fc8, rbx 0x6fc0.
    let r = rule_n(&parts, 7);
    let regs = |d: u8| match d {
        6 => Some(0x6fd0),
        7 => Some(0x6fc0),
        _ => None,
    };
    let read = |a: u64| (a == 0x6fc8).then_some(0x7000);
    assert_eq!(r.cfa_from(&regs, &read), Some(0x7000));
    assert_eq!(r.saved_addr(1, 0x7000, &regs), Some(0x6fd0), "rbp saved at rbp+0");
    assert_eq!(r.saved_addr(0, 0x7000, &regs), Some(0x6fc0), "rbx saved below the DRAP slot");
    // only rbp known (an outer frame's recovered rbp): the same through the anchor
    let only_rbp = |d: u8| (d == 6).then_some(0x6fd0);
    assert_eq!(r.cfa_from(&only_rbp, &read), Some(0x7000));
    // at the `and`: r10 (frame 0) or rsp
    let r = rule_n(&parts, 1);
    assert_eq!(r.cfa_from(&|d| (d == 10).then_some(0x7000), &|_| None), Some(0x7000));
    assert_eq!(r.cfa_from(&|d| (d == 7).then_some(0x6ff8), &|_| None), Some(0x7000));
    // frame size after the push of rbx: 0x28 when the entry rsp was already aligned,
    // up to 0x40 (here: 0x6ff8 aligned down to 0x6fe0)
    assert_eq!(rule_n(&parts, 7).cfa_bounds(), Some((0x28, 0x40)));
    assert_eq!(rule_n(&parts, 0).cfa_bounds(), Some((8, 8)));
}

#[test]
fn alloca_forces_rbp() {
    let sub_rax: &[u8] = &[0x48, 0x29, 0xc4];
    let lea_rsp: &[u8] = &[0x48, 0x8d, 0x65, 0xf8]; // lea -0x8(%rbp),%rsp
    let c = cfas(&[PUSH_RBP, MOV_RSP_RBP, PUSH_RBX, sub_rax, NOP, lea_rsp, POP_RBX, POP_RBP, RET]);
    assert_eq!(
        c,
        ["rsp+8", "rsp+16", "rbp+16", "rbp+16", "rbp+16", "rbp+16", "rbp+16", "rbp+16", "rsp+8"].map(String::from)
    );
    let c = cfas(&[sub_rax, NOP]);
    assert_eq!(c[1], "unknown(alloca)");
}

#[test]
fn stack_clash_probe_loop() {
    let lea_r11: &[u8] = &[0x4c, 0x8d, 0x9c, 0x24, 0x00, 0xd0, 0xff, 0xff];
    let sub_1000: &[u8] = &[0x48, 0x81, 0xec, 0x00, 0x10, 0x00, 0x00];
    let orq: &[u8] = &[0x48, 0x83, 0x0c, 0x24, 0x00];
    let cmp: &[u8] = &[0x4c, 0x39, 0xdc];
    let jne: &[u8] = &[0x75, 0xf0]; // back to sub (7+5+3+2 = 17 bytes back = -0x11)... fixed below
    let _ = jne;
    let jne: &[u8] = &[0x75, 0xef];
    let c = cfas(&[lea_r11, sub_1000, orq, cmp, jne, NOP, RET]);
    assert_eq!(c[1], "r11+12296");
    assert_eq!(c[5], "rsp+12296", "after the loop rsp equals r11");
}

#[test]
fn shrink_wrapped_prologue() {
    // test %edi,%edi; je out; push %rbx; mov %rdi,%rbx; pop %rbx; out: ret
    let je: &[u8] = &[0x74, 0x05];
    let c = cfas(&[TEST_EDI, je, PUSH_RBX, MOV_RDI_RBX, POP_RBX, RET]);
    assert_eq!(c, ["rsp+8", "rsp+8", "rsp+8", "rsp+16", "rsp+16", "rsp+8"].map(String::from));
}

#[test]
fn mid_function_ret_then_more_code() {
    // push %rbx; test; je L; pop %rbx; ret; L: xor; pop %rbx; ret
    let je: &[u8] = &[0x74, 0x02];
    let c = cfas(&[PUSH_RBX, TEST_EDI, je, POP_RBX, RET, XOR_EAX, POP_RBX, RET]);
    assert_eq!(c, ["rsp+8", "rsp+16", "rsp+16", "rsp+16", "rsp+8", "rsp+16", "rsp+16", "rsp+8"].map(String::from));
}

#[test]
fn merge_conflict_is_unknown() {
    // test; je L; push %rbx; L: nop; ret   -> at L one path pushed, one did not
    let je: &[u8] = &[0x74, 0x01];
    let c = cfas(&[TEST_EDI, je, PUSH_RBX, NOP, RET]);
    assert_eq!(c[3], "unknown(merge-conflict)");
    assert_eq!(c[4], "unknown(merge-conflict)");
}

#[test]
fn noreturn_calls_end_paths() {
    // push %rbx; test; je L; call abort; L: pop %rbx; ret
    let call: &[u8] = &[0xe8, 0x00, 0x01, 0x00, 0x00];
    let je: &[u8] = &[0x74, 0x05];
    let (code, a) = asm(&[PUSH_RBX, TEST_EDI, je, call, POP_RBX, RET]);
    let abort = a[4] + 0x100;
    let nr = |t: u64| t == abort;
    let l = analyze_with(&code, BASE, &Options { noreturn: Some(&nr), ..Options::default() });
    assert_eq!(l.rule_at(a[4]).unwrap().cfa, Cfa::Rsp(16));
    // without knowing abort is noreturn, the fallthrough still agrees here
    let l = analyze_with(&code, BASE, &Options::default());
    assert_eq!(l.rule_at(a[5]).unwrap().cfa, Cfa::Rsp(8));
}

#[test]
fn ud2_int3_and_tail_jump_end_paths() {
    let ud2: &[u8] = &[0x0f, 0x0b];
    let jmp_out: &[u8] = &[0xe9, 0x00, 0x10, 0x00, 0x00];
    let c = cfas(&[PUSH_RBX, ud2, NOP]);
    assert_eq!(c[2], "-");
    let c = cfas(&[&[0xcc], NOP]);
    assert_eq!(c[1], "-");
    let c = cfas(&[jmp_out, NOP]);
    assert_eq!(c[1], "-");
}

#[test]
fn jump_table_targets_get_the_dispatch_state() {
    // push %rbx; jmp *%rax; (unreached) pop %rbx; ret
    let jmp_rax: &[u8] = &[0xff, 0xe0];
    let c = cfas(&[PUSH_RBX, jmp_rax, POP_RBX, RET]);
    assert_eq!(c, ["rsp+8", "rsp+16", "rsp+16", "rsp+8"].map(String::from));
    // a tail jump through a register does not seed anything
    let c = cfas(&[jmp_rax, POP_RBX, RET]);
    assert_eq!(c[1], "-");
}

#[test]
fn saves_by_mov_and_restore() {
    let mov_st: &[u8] = &[0x48, 0x89, 0x5c, 0x24, 0x08]; // mov %rbx,0x8(%rsp)
    let mov_ld: &[u8] = &[0x48, 0x8b, 0x5c, 0x24, 0x08];
    let (code, a) = asm(&[SUB_10, mov_st, MOV_RDI_RBX, mov_ld, ADD_10, RET]);
    let l = analyze_with(&code, BASE, &Options::default());
    assert_eq!(l.rule_at(a[2]).unwrap().saved[0], Saved::At(-16));
    assert_eq!(l.rule_at(a[3]).unwrap().saved[0], Saved::At(-16));
    assert_eq!(l.rule_at(a[4]).unwrap().saved[0], Saved::Same);
    // clobbered without a save: lost
    let (code, a) = asm(&[MOV_RDI_RBX, RET]);
    let l = analyze_with(&code, BASE, &Options::default());
    assert_eq!(l.rule_at(a[1]).unwrap().saved[0], Saved::Lost);
}

#[test]
fn bounded_work_on_loops_and_huge_input() {
    // an infinite loop of pushes converges to unknown and stops
    let jmp_back: &[u8] = &[0xeb, 0xfd];
    let c = cfas(&[PUSH_RBX, PUSH_RBX, jmp_back]);
    assert_eq!(c[1], "unknown(merge-conflict)");
    // a megabyte of nops hits the instruction cap and says so
    let code = vec![0x90u8; 1 << 20];
    let lim = Limits { max_insns: 10_000, ..Limits::default() };
    let l = analyze_with(&code, BASE, &Options { limits: lim, ..Options::default() });
    assert!(l.truncated);
    assert!(l.instructions().len() <= 10_000);
}

#[test]
fn garbage_bytes_do_not_panic() {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for len in [0usize, 1, 2, 15, 100, 5000] {
        let code: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let l = analyze_with(&code, BASE, &Options::default());
        for i in l.instructions() {
            let _ = i.rule.describe();
        }
        let l = analyze_with(&code, u64::MAX - 3, &Options::default());
        let _ = l.instructions().len();
    }
}

#[test]
fn landing_pads_enter_in_the_post_call_state() {
    // push %rbx; call f; pop %rbx; ret; pad: mov %rax,%rbx... (reached only by unwinding)
    let call: &[u8] = &[0xe8, 0x00, 0x01, 0x00, 0x00];
    let mov_rax_rdi: &[u8] = &[0x48, 0x89, 0xc7];
    let (code, a) = asm(&[PUSH_RBX, call, POP_RBX, RET, mov_rax_rdi, POP_RBX, RET]);
    let l = analyze_with(&code, BASE, &Options::default());
    assert!(l.rule_at(a[4]).is_none(), "no path reaches the pad");
    let opts = Options { landing_pads: vec![(a[1], a[2], a[4])], ..Options::default() };
    let l = analyze_with(&code, BASE, &opts);
    assert_eq!(l.rule_at(a[4]).unwrap().cfa, Cfa::Rsp(16));
    assert_eq!(l.rule_at(a[5]).unwrap().saved[0], Saved::At(-16));
}

#[test]
fn jumps_out_in_a_frame_are_exits_and_seed_parts() {
    // push %rbx; test; jne cold(+0x100); pop %rbx; ret
    let jne_far: &[u8] = &[0x0f, 0x85, 0x00, 0x01, 0x00, 0x00];
    let (code, a) = asm(&[PUSH_RBX, TEST_EDI, jne_far, POP_RBX, RET]);
    let l = analyze_with(&code, BASE, &Options::default());
    let cold = a[3] + 0x100;
    assert_eq!(l.exits.len(), 1);
    assert_eq!(l.exits[0].0, cold);
    assert_eq!(l.entries_into(cold, cold + 3).len(), 1);
    assert!(l.entries_into(cold + 1, cold + 3).is_empty());
    // the cold part, analyzed from that state: CFA stays the parent's
    let (ccode, _) = asm(&[NOP, POP_RBX, RET]);
    let opts = Options { entries: vec![(BASE, l.exits[0].1.clone())], ..Options::default() };
    let c = analyze_with(&ccode, BASE, &opts);
    assert_eq!(c.rule_at(BASE).unwrap().cfa, Cfa::Rsp(16));
    assert_eq!(c.rule_at(BASE + 2).unwrap().cfa, Cfa::Rsp(8));
    assert!(!c.contradicted);
    // from a function entry instead, the pop reads the return address: contradicted
    let c = analyze_with(&ccode, BASE, &Options::default());
    assert!(c.contradicted);
}

#[test]
fn kernel_warn_ud2_continues() {
    let ud2: &[u8] = &[0x0f, 0x0b];
    let (code, a) = asm(&[PUSH_RBX, ud2, POP_RBX, RET]);
    let l = analyze_with(&code, BASE, &Options { ud2_continues: true, ..Options::default() });
    assert_eq!(l.rule_at(a[2]).unwrap().cfa, Cfa::Rsp(16));
}

#[test]
fn call_to_next_instruction_pushes() {
    // call 1f; 1: pop %rax; ret  (pc-relative idiom)
    let call0: &[u8] = &[0xe8, 0, 0, 0, 0];
    let pop_rax: &[u8] = &[0x58];
    let c = cfas(&[call0, pop_rax, RET]);
    assert_eq!(c, ["rsp+8", "rsp+16", "rsp+8"].map(String::from));
}

#[test]
fn jump_to_return_thunk_is_a_return() {
    // push %rbx; pop %rbx; jmp __x86_return_thunk  /  pop; pop; jmp thunk (wrong: contradicted)
    let jmp_thunk: &[u8] = &[0xe9, 0x00, 0x10, 0x00, 0x00];
    let (code, a) = asm(&[PUSH_RBX, POP_RBX, jmp_thunk]);
    let thunk = a[2] + 5 + 0x1000;
    let opts = Options { return_thunks: vec![thunk], ..Options::default() };
    let l = analyze_with(&code, BASE, &opts);
    assert!(!l.contradicted && l.tails.is_empty());
    let (code, a) = asm(&[POP_RBX, jmp_thunk]);
    let thunk = a[1] + 5 + 0x1000;
    let opts = Options { return_thunks: vec![thunk], ..Options::default() };
    assert!(analyze_with(&code, BASE, &opts).contradicted);
}

#[test]
fn split_part_names_without_a_parent_end() {
    // `.cold`, `.cold.1`, `..cold`, `.text.cold`: sized assembly functions named like
    // split-off parts; `.cold`'s parent was itself and the analysis recursed until the
    // stack overflowed. They are functions of their own.
    use crate::memory::Regions;
    use crate::symbols::{Symbol, SymbolTable};
    let (code, a) = asm(&[PUSH_RBX, TEST_EDI, POP_RBX, RET]);
    let len = code.len() as u64;
    let names = [".cold", ".cold.1", "..cold", ".text.cold", ".text", "f.cold", "f"];
    let mut mem = Regions::new();
    let mut syms = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let start = BASE + 0x100 * i as u64;
        mem.add(start, code.clone());
        syms.push(Symbol::new(*n, start, len));
    }
    // A parent whose address a cold part's name wins (`a.cold` over `hhhhhhh`): still one step.
    let (p1, p2) = (BASE + 0x1000, BASE + 0x1100);
    mem.add(p1, code.clone()).add(p2, code.clone());
    syms.extend([
        Symbol::new("hhhhhhh.cold", p1, len),
        Symbol::new("hhhhhhh", p2, len),
        Symbol::new("a.cold", p2, len),
    ]);
    let syms = SymbolTable::new(syms);
    for scoped in [false, true] {
        for (i, n) in names.iter().enumerate() {
            let pc = a[2] + 0x100 * i as u64;
            let run = |m: &dyn crate::memory::Memory| {
                at_pc::rule_at(&m, &syms, pc).map(|(s, _, r)| (s.name.to_string(), r.cfa))
            };
            let got = if scoped { crate::memory::scoped(&mem, |m| run(m)) } else { run(&mem) };
            match *n {
                // a function entry: the push is seen
                ".cold" | ".cold.1" | "..cold" | ".text.cold" | ".text" | "f" => {
                    assert_eq!(got, Ok((n.to_string(), Cfa::Rsp(16))), "{n}")
                }
                // parts whose parent never jumps into them: unknown, not a guess
                _ => assert!(got.is_err(), "{n}: {got:?}"),
            }
        }
        let run = |m: &dyn crate::memory::Memory| {
            at_pc::rule_at(&m, &syms, p1 + 2).map(|(s, _, r)| (s.name.to_string(), r.cfa))
        };
        let got = if scoped { crate::memory::scoped(&mem, |m| run(m)) } else { run(&mem) };
        assert!(got.is_err(), "{got:?}");
    }
}

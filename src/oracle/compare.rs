//! Instruction-by-instruction comparison of the layout engine with an oracle.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use iced_x86::{Formatter, GasFormatter, Instruction, Mnemonic};

use super::image::{Func, Image};
use super::{OCfa, Table};
use crate::layout::{analyze_with, Cfa, FunctionLayout, Limits, Options, Rule, Saved, State, Val};

/// Examples kept per report (`STACKPROOF_EXAMPLES` overrides, for chasing classes).
fn max_examples() -> usize {
    std::env::var("STACKPROOF_EXAMPLES").ok().and_then(|v| v.parse().ok()).unwrap_or(25)
}

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub functions: usize,
    pub truncated_functions: usize,
    /// Instructions the engine reached.
    pub instructions: usize,
    /// Reached instructions with an oracle rule the comparison evaluates.
    pub covered: usize,
    /// Covered instructions where the engine gives a CFA.
    pub answered: usize,
    pub agree: usize,
    /// Agreeing instructions where the engine also writes the rule as the oracle does
    /// (same base register and offset: `rsp+8` is not `rbp+16`).
    pub same_rule: usize,
    pub disagree: usize,
    /// Covered, engine says unknown, by reason.
    pub unknown: BTreeMap<&'static str, usize>,
    /// Oracle rules not compared (expressions, ORC pt_regs/undefined, engine vs DRAP deref).
    pub not_comparable: BTreeMap<String, usize>,
    /// Reached instructions outside any oracle row.
    pub no_oracle: usize,
    pub rbp_compared: usize,
    pub rbp_disagree: usize,
    pub classes: HashMap<String, usize>,
    pub examples: Vec<String>,
}

impl Report {
    fn add(&mut self, o: Report) {
        self.functions += o.functions;
        self.truncated_functions += o.truncated_functions;
        self.instructions += o.instructions;
        self.covered += o.covered;
        self.answered += o.answered;
        self.agree += o.agree;
        self.same_rule += o.same_rule;
        self.disagree += o.disagree;
        self.no_oracle += o.no_oracle;
        self.rbp_compared += o.rbp_compared;
        self.rbp_disagree += o.rbp_disagree;
        for (k, v) in o.unknown {
            *self.unknown.entry(k).or_default() += v;
        }
        for (k, v) in o.not_comparable {
            *self.not_comparable.entry(k).or_default() += v;
        }
        for (k, v) in o.classes {
            *self.classes.entry(k).or_default() += v;
        }
        for e in o.examples {
            if self.examples.len() < max_examples() {
                self.examples.push(e);
            }
        }
    }

    pub fn summary(&self) -> String {
        let pct = |a: usize, b: usize| if b == 0 { 100.0 } else { 100.0 * a as f64 / b as f64 };
        let mut s = String::new();
        let _ = writeln!(s, "functions:        {} ({} truncated)", self.functions, self.truncated_functions);
        let _ = writeln!(s, "instructions:     {} reached, {} without oracle row", self.instructions, self.no_oracle);
        let _ = writeln!(s, "covered:          {}", self.covered);
        let _ =
            writeln!(s, "answered:         {} ({:.3}% of covered)", self.answered, pct(self.answered, self.covered));
        let _ = writeln!(s, "agree:            {} ({:.4}% of answered)", self.agree, pct(self.agree, self.answered));
        let _ = writeln!(
            s,
            "same rule:        {} ({:.4}% of answered: same base register and offset)",
            self.same_rule,
            pct(self.same_rule, self.answered)
        );
        let _ = writeln!(s, "disagree:         {}", self.disagree);
        let _ = writeln!(s, "rbp slot:         {} compared, {} disagree", self.rbp_compared, self.rbp_disagree);
        for (k, v) in &self.unknown {
            let _ = writeln!(s, "unknown:          {v:>8}  {k}");
        }
        for (k, v) in &self.not_comparable {
            let _ = writeln!(s, "not compared:     {v:>8}  {k}");
        }
        let mut classes: Vec<_> = self.classes.iter().collect();
        classes.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (k, v) in classes.iter().take(20) {
            let _ = writeln!(s, "class:            {v:>8}  {k}");
        }
        for e in &self.examples {
            let _ = writeln!(s, "example:          {e}");
        }
        s
    }
}

pub fn formatter() -> GasFormatter {
    let mut f = GasFormatter::new();
    let o = f.options_mut();
    o.set_uppercase_hex(false);
    o.set_hex_prefix("0x");
    o.set_hex_suffix("");
    o.set_show_branch_size(false);
    o.set_rip_relative_addresses(true);
    o.set_branch_leading_zeros(false);
    f
}

pub fn disasm(f: &mut GasFormatter, ins: &Instruction) -> String {
    let mut s = String::new();
    f.format(ins, &mut s);
    s
}

fn kind(c: &Cfa) -> String {
    match c {
        Cfa::Rsp(_) => "rsp".into(),
        Cfa::Rbp(_) => "rbp".into(),
        Cfa::Reg { reg, .. } => crate::layout::state::reg_name(*reg).into(),
        Cfa::Deref { .. } => "deref".into(),
        Cfa::Unknown(w) => format!("unknown({w})"),
    }
}

fn okind(c: &OCfa) -> String {
    match c {
        OCfa::Reg { reg, .. } => crate::layout::state::reg_name(*reg).into(),
        OCfa::Deref { .. } => "deref".into(),
        OCfa::Other(w) => (*w).into(),
    }
}

/// Does the engine write the CFA rule as the oracle does (not only an equal value)?
fn same_rule(c: &Cfa, o: &OCfa) -> bool {
    match (*c, *o) {
        (Cfa::Rsp(n), OCfa::Reg { reg: 7, off }) | (Cfa::Rbp(n), OCfa::Reg { reg: 6, off }) => n == off,
        (Cfa::Reg { reg, off }, OCfa::Reg { reg: r, off: o }) => reg == r && off == o,
        (Cfa::Deref { reg, off }, OCfa::Deref { reg: r, off: o }) => reg == r && off == o,
        _ => false,
    }
}

/// Some(agree) when the oracle rule can be checked against the engine's knowledge.
fn verdict(rule: &Rule, o: &OCfa) -> Result<bool, String> {
    match *o {
        OCfa::Reg { reg, off } => {
            let want = i32::try_from(off.checked_neg().unwrap_or(i64::MAX)).ok().map(Val::Cfa);
            Ok(want.is_some_and(|w| rule.value(reg) == w))
        }
        OCfa::Deref { reg, off } => {
            if rule.cfa == (Cfa::Deref { reg, off }) || rule.cfa_stored_at(reg, off) {
                Ok(true)
            } else if matches!(rule.cfa, Cfa::Deref { .. }) {
                Ok(false)
            } else {
                if std::env::var_os("STACKPROOF_DEBUG").is_some() {
                    eprintln!("deref-untracked {} {:?}", rule.describe(), o);
                }
                Err("oracle deref, engine does not track that slot".into())
            }
        }
        OCfa::Other(w) => Err(format!("oracle {w}")),
    }
}

/// Compare one analyzed function.
pub fn compare_layout(l: &FunctionLayout, table: &Table, name: &str, f: &mut GasFormatter) -> Report {
    let mut r = Report { functions: 1, truncated_functions: usize::from(l.truncated), ..Report::default() };
    let mut prev: Option<Mnemonic> = None;
    for insn in l.instructions() {
        r.instructions += 1;
        let p = prev.replace(insn.ins.mnemonic());
        let Some(row) = table.lookup(insn.addr) else {
            r.no_oracle += 1;
            continue;
        };
        match verdict(&insn.rule, &row.cfa) {
            Err(why) => {
                *r.not_comparable.entry(why).or_default() += 1;
                continue;
            }
            Ok(ok) => {
                r.covered += 1;
                if let Cfa::Unknown(w) = insn.rule.cfa {
                    if r.unknown.is_empty() && std::env::var_os("STACKPROOF_DEBUG").is_some() {
                        eprintln!(
                            "unknown {w} {:#x} {}+{:#x} {}",
                            insn.addr,
                            name,
                            insn.addr - l.start,
                            disasm(f, &insn.ins)
                        );
                    }
                    *r.unknown.entry(w).or_default() += 1;
                    continue;
                }
                r.answered += 1;
                if ok {
                    r.agree += 1;
                    r.same_rule += usize::from(same_rule(&insn.rule.cfa, &row.cfa));
                } else {
                    r.disagree += 1;
                    let key = format!("after {:?}: engine {} vs oracle {}", p, kind(&insn.rule.cfa), okind(&row.cfa));
                    *r.classes.entry(key).or_default() += 1;
                    if r.examples.len() < 3 {
                        r.examples.push(format!(
                            "{:#x} {}+{:#x}  {}  engine cfa={} oracle cfa={}",
                            insn.addr,
                            name,
                            insn.addr - l.start,
                            disasm(f, &insn.ins),
                            insn.rule.cfa,
                            row.cfa
                        ));
                    }
                }
            }
        }
        if let (Some(o), Saved::At(e)) = (row.rbp, insn.rule.saved[1]) {
            r.rbp_compared += 1;
            if o != i64::from(e) {
                r.rbp_disagree += 1;
                *r.classes.entry("rbp save slot".into()).or_default() += 1;
                if r.examples.len() < 3 {
                    r.examples.push(format!(
                        "{:#x} {}+{:#x}  {}  engine rbp=cfa{:+} oracle rbp=cfa{:+}",
                        insn.addr,
                        name,
                        insn.addr - l.start,
                        disasm(f, &insn.ins),
                        e,
                        o
                    ));
                }
            }
        }
    }
    r
}

pub fn run_one(img: &Image, table: &Table, func: &Func, entries: Vec<(u64, State)>) -> Option<FunctionLayout> {
    run_with(img, table, func, entries, &HashSet::new())
}

/// `run_one` with more noreturn functions (inferred from their code).
fn run_with(
    img: &Image,
    table: &Table,
    func: &Func,
    mut entries: Vec<(u64, State)>,
    noreturn: &HashSet<u64>,
) -> Option<FunctionLayout> {
    let code = img.bytes(func.start, func.end)?;
    // Lazy binding: a PLT stub's GOT slot first points back at the stub's `push $index`.
    if entries.is_empty() && func.name.starts_with(".plt") {
        let mut d = iced_x86::Decoder::with_ip(64, code, func.start, iced_x86::DecoderOptions::NONE);
        let first = d.decode();
        if first.flow_control() == iced_x86::FlowControl::IndirectBranch {
            entries = vec![(func.start, State::entry()), (first.next_ip(), State::entry())];
        }
    }
    let nr = |t: u64| {
        let local = img.plt_local.get(&t).copied();
        img.noreturn.contains(&t) || noreturn.contains(&t) || local.is_some_and(|l| noreturn.contains(&l))
    };
    let landing_pads = img.landing_pads(table, func.start);
    if std::env::var_os("STACKPROOF_DEBUG_PADS").is_some() {
        for p in &landing_pads {
            eprintln!("pad {} {:#x}..{:#x} -> {:#x}", func.name, p.0, p.1, p.2);
        }
    }
    let opts = Options {
        limits: Limits::default(),
        noreturn: Some(&nr),
        entries,
        landing_pads,
        ud2_continues: img.is_kernel,
        return_thunks: img.return_thunks.clone(),
    };
    Some(analyze_with(code, func.start, &opts))
}

/// Does the code begin like a function (endbr64, a push of a callee-saved register,
/// or a stack allocation)? A split-off part begins in the middle of a frame.
fn starts_with_prologue(img: &Image, func: &Func) -> bool {
    let Some(code) = img.bytes(func.start, func.end.min(func.start.saturating_add(16))) else { return false };
    let mut d = iced_x86::Decoder::with_ip(64, code, func.start, iced_x86::DecoderOptions::NONE);
    let ins = d.decode();
    match ins.mnemonic() {
        Mnemonic::Endbr64 => true,
        Mnemonic::Push => {
            ins.op0_kind() == iced_x86::OpKind::Register
                && matches!(
                    ins.op0_register(),
                    iced_x86::Register::RBP
                        | iced_x86::Register::RBX
                        | iced_x86::Register::R12
                        | iced_x86::Register::R13
                        | iced_x86::Register::R14
                        | iced_x86::Register::R15
                )
        }
        Mnemonic::Sub => ins.op0_kind() == iced_x86::OpKind::Register && ins.op0_register() == iced_x86::Register::RSP,
        _ => false,
    }
}

/// The whole image analyzed once: how each function is entered, learnt from
/// what all the others do (calls, tail calls, jumps into `.cold` parts).
pub struct Program<'a> {
    img: &'a Image,
    table: &'a Table,
    pub funcs: Vec<Func>,
    exits: BTreeMap<u64, Vec<State>>,
    entries_known: HashSet<u64>,
    /// Code pointers in data, tail-jump targets of split-off parts.
    weak_entries: HashSet<u64>,
    contradicted: Vec<bool>,
    /// Functions found not to return.
    pub noreturn: HashSet<u64>,
}

fn is_part(name: &str) -> bool {
    name.starts_with("fde_") || name.contains(".cold") || name.starts_with(".plt")
}

impl<'a> Program<'a> {
    /// First pass: every function from its entry; `seen` gets each layout.
    pub fn new(img: &'a Image, table: &'a Table, seen: &mut dyn FnMut(usize, &Func, &FunctionLayout)) -> Program<'a> {
        let funcs = img.functions(&table.ranges);
        let mut exits: BTreeMap<u64, Vec<State>> = BTreeMap::new();
        // Addresses known to be entered as functions: named symbols, direct call
        // targets, tail-jump targets, code pointers in data.
        let mut entries_known: HashSet<u64> =
            img.symbols.iter().filter(|s| !s.name.contains(".cold")).map(|s| s.start).collect();
        entries_known.extend(img.call_targets(&funcs));
        let mut starts: HashSet<u64> = funcs.iter().map(|f| f.start).collect();
        starts.extend(img.labels.iter().copied());
        // Noreturn functions inferred from their code (no path returns), a few rounds
        // deep (die -> vdie -> longjmp); calls to them end paths like calls to abort.
        let mut noreturn: HashSet<u64> = HashSet::new();
        for _ in 0..3 {
            let mut more = Vec::new();
            for func in &funcs {
                if noreturn.contains(&func.start) || func.name.contains(".cold") {
                    continue;
                }
                if let Some(l) = run_with(img, table, func, Vec::new(), &noreturn) {
                    if !l.may_return {
                        more.push(func.start);
                    }
                }
            }
            if more.is_empty() {
                break;
            }
            noreturn.extend(more);
        }
        let mut contradicted = vec![false; funcs.len()];
        let mut weak_entries = img.code_pointers();
        for (i, func) in funcs.iter().enumerate() {
            let Some(l) = run_with(img, table, func, Vec::new(), &noreturn) else { continue };
            entries_known.extend(l.callees.iter().copied());
            // A "tail call" into the middle of other code means the entry state was wrong;
            // otherwise tail-jump targets are function entries.
            contradicted[i] = l.contradicted || l.tails.iter().any(|t| !starts.contains(t) && !img.in_plt(*t));
            if !contradicted[i] {
                // Tail calls from code whose own entry is only assumed are weak evidence.
                if is_part(&func.name) {
                    weak_entries.extend(l.tails.iter().copied());
                } else {
                    entries_known.extend(l.tails.iter().copied());
                }
                // Jumps out of code analyzed from a wrong entry state seed nothing; a
                // frame continuing in a `.cold` part has rsp (or rbp) known below the CFA.
                for (t, s) in &l.exits {
                    let rsp = s.reg(crate::layout::state::RSP);
                    let rsp_ok = matches!(rsp, Val::Cfa(k) if k <= -8);
                    let frame_ok = !matches!(rsp, Val::Cfa(_))
                        && matches!(s.cfa(), crate::layout::Cfa::Rbp(_) | crate::layout::Cfa::Deref { .. });
                    if rsp_ok || frame_ok {
                        exits.entry(*t).or_default().push(s.clone());
                    }
                }
            }
            seen(i, func, &l);
        }
        Program { img, table, funcs, exits, entries_known, weak_entries, contradicted, noreturn }
    }

    /// Entry states for a second analysis of function `i`; None when the first one stands.
    pub fn entries(&self, i: usize) -> Option<Vec<(u64, State)>> {
        let func = self.funcs.get(i)?;
        // A named function's entry is a real entry; only split-off parts (`.cold`,
        // unnamed FDE ranges, PLT0) take their start state from the jumps into them.
        let part = is_part(&func.name);
        // Calls and tail calls are strong evidence of an entry; a code pointer or a
        // prologue-like start is weaker than a jump into the start in a frame.
        let seeded_start = self.exits.contains_key(&func.start);
        let known = self.entries_known.contains(&func.start)
            || (!self.contradicted[i]
                && !seeded_start
                && (self.weak_entries.contains(&func.start) || starts_with_prologue(self.img, func)));
        let entry_is_real = !part || known;
        let mut seeds: Vec<(u64, State)> = self
            .exits
            .range(func.start..func.end)
            .filter(|(t, _)| !entry_is_real || **t != func.start)
            .flat_map(|(t, v)| v.iter().map(move |s| (*t, s.clone())))
            .collect();
        let unknown_entry = part && !known && !seeds.iter().any(|e| e.0 == func.start);
        if unknown_entry && seeds.is_empty() {
            if std::env::var_os("STACKPROOF_DEBUG").is_some() {
                eprintln!(
                    "no-known-entry {} {:#x} len={} contradicted={}",
                    func.name,
                    func.start,
                    func.end - func.start,
                    self.contradicted[i]
                );
            }
            // Nothing tells how this part is entered: say so rather than guess.
            // (With seeds the start is left to be reached from them, or not at all,
            // so an unknown start cannot poison the seeded paths.)
            seeds.push((func.start, State::unknown("no-known-entry")));
        }
        if seeds.is_empty() {
            return None;
        }
        if !unknown_entry && !seeds.iter().any(|e| e.0 == func.start) {
            seeds.push((func.start, State::entry()));
        }
        Some(seeds)
    }

    /// The final layout of function `i`.
    pub fn layout(&self, i: usize) -> Option<FunctionLayout> {
        let func = self.funcs.get(i)?;
        run_with(self.img, self.table, func, self.entries(i).unwrap_or_default(), &self.noreturn)
    }
}

/// Analyze every function of the image, compare those named `only` (or all) with `table`.
pub fn check(img: &Image, table: &Table, only: Option<&str>) -> Report {
    let mut f = formatter();
    let mut reports: HashMap<usize, Report> = HashMap::new();
    let program = Program::new(img, table, &mut |i, func, l| {
        if only.is_none_or(|n| n == func.name) {
            reports.insert(i, compare_layout(l, table, &func.name, &mut f));
        }
    });
    for (i, func) in program.funcs.iter().enumerate() {
        if only.is_some_and(|n| n != func.name) {
            continue;
        }
        if let Some(entries) = program.entries(i) {
            if let Some(l) = run_with(img, table, func, entries, &program.noreturn) {
                reports.insert(i, compare_layout(&l, table, &func.name, &mut f));
            }
        }
    }
    let mut keys: Vec<usize> = reports.keys().copied().collect();
    keys.sort_unstable();
    let mut total = Report::default();
    for k in keys {
        if let Some(r) = reports.remove(&k) {
            if std::env::var_os("STACKPROOF_DEBUG").is_some() && r.disagree + r.rbp_disagree > 0 {
                eprintln!("disagree {} {} {}", program.funcs[k].name, r.disagree, r.rbp_disagree);
            }
            total.add(r);
        }
    }
    total
}

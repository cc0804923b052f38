//! stackproof-fuzz: a seeded random driver over the core's public entry points.
//!
//!   cargo run --profile fuzz -p stackproof-fuzz -- [--cases N] [--seed S] [--only NAME]
//!                                                 [--jobs J] [--budget SECS] [--smoke] [--list]
//!
//! Each entry point runs in a worker process (this program with `--worker`), so a
//! stack overflow or an abort is a finding too, not the end of the campaign. Every
//! case is under `catch_unwind`, timed (over 1 s is a finding) and checked against
//! the ground truth of its input (a value reported as read equals memory, a range
//! reported unreadable is unreadable, ...). Case `i` of entry point `e` is
//! reproducible: `--only e --seed S --from i --cases 1`.
//! Exit status: 0 when nothing was found, 1 otherwise. `STACKPROOF_FUZZ_SHOW=1` with
//! `--worker --only unwind --from i --cases 1` prints the frames of an unwind case.

mod gen;
mod targets;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use targets::{Corpus, TARGETS};

const SLOW: Duration = Duration::from_secs(1);

thread_local! {
    static PANIC_AT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

struct Args {
    cases: u64,
    from: u64,
    seed: u64,
    only: Vec<String>,
    jobs: usize,
    /// Seconds per entry point (per job) at most; the cases run are counted exactly.
    budget: Option<u64>,
    worker: bool,
    repo: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        cases: 10_000,
        from: 0,
        seed: 1,
        only: Vec::new(),
        jobs: 1,
        budget: None,
        worker: false,
        repo: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
    };
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, what: &str| -> Result<u64, String> {
        let v = v.ok_or(format!("{what} needs a number"))?;
        let v = v.replace('_', "");
        if let Some(h) = v.strip_prefix("0x") {
            u64::from_str_radix(h, 16).map_err(|e| format!("{what}: {e}"))
        } else {
            v.parse().map_err(|e| format!("{what}: {e}"))
        }
    };
    while let Some(x) = it.next() {
        match x.as_str() {
            "--cases" => a.cases = num(it.next(), "--cases")?,
            "--from" => a.from = num(it.next(), "--from")?,
            "--seed" => a.seed = num(it.next(), "--seed")?,
            "--jobs" => a.jobs = num(it.next(), "--jobs")?.max(1) as usize,
            "--budget" => a.budget = Some(num(it.next(), "--budget")?),
            "--only" => a.only.extend(it.next().ok_or("--only needs a name")?.split(',').map(String::from)),
            "--smoke" => a.cases = 200,
            "--repo" => a.repo = PathBuf::from(it.next().ok_or("--repo needs a directory")?),
            "--worker" => a.worker = true,
            "--list" => {
                for (n, _) in TARGETS {
                    println!("{n}");
                }
                std::process::exit(0);
            }
            "-h" | "--help" => {
                println!("usage: stackproof-fuzz [--cases N] [--seed S] [--only A,B] [--jobs J] [--budget SECS] [--smoke] [--list]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    for o in &a.only {
        if !TARGETS.iter().any(|(n, _)| n == o) {
            return Err(format!("no entry point {o:?} (see --list)"));
        }
    }
    Ok(a)
}

/// The seed of one case: the campaign's seed, the entry point, the case number.
fn case_seed(seed: u64, name: &str, i: u64) -> u64 {
    let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn corpus(repo: &Path) -> Corpus {
    let mut c = Corpus::default();
    let mut stack = vec![repo.join("tests/fixtures")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "txt") {
                let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                if name.contains("bt") || name.contains("crash") {
                    if let Ok(t) = std::fs::read_to_string(&p) {
                        if t.len() < (4 << 20) {
                            c.texts.push(t);
                        }
                    }
                }
            }
        }
    }
    // Small real executables: the test programs once built, and the system's own.
    let mut elves: Vec<PathBuf> = ["/bin/true", "/bin/sleep", "/usr/bin/env"].iter().map(PathBuf::from).collect();
    if let Ok(rd) = std::fs::read_dir(repo.join("tests/build/bin")) {
        let mut more: Vec<PathBuf> =
            rd.flatten().map(|e| e.path()).filter(|p| !p.to_string_lossy().contains("tmp")).collect();
        more.sort();
        elves.extend(more.into_iter().take(6));
    }
    for p in elves {
        if let Ok(d) = std::fs::read(&p) {
            if d.len() < (2 << 20) && d.starts_with(b"\x7fELF") {
                if let Some(eh) = eh_frame_of(&d) {
                    c.eh_frames.push(eh);
                }
                c.elves.push(d);
            }
        }
    }
    c
}

fn eh_frame_of(d: &[u8]) -> Option<(Vec<u8>, u64)> {
    use object::{Object, ObjectSection};
    let f = object::File::parse(d).ok()?;
    let s = f.section_by_name(".eh_frame")?;
    Some((s.data().ok()?.to_vec(), s.address()))
}

/// Run cases `[from, from + cases)` of one entry point, reporting on stdout:
/// `S i` before case i, `F i kind message` for a finding, `E n nanos` at the end.
fn worker(a: &Args) {
    // The panic's place, for the report (the payload has only the message).
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        PANIC_AT.with(|p| *p.borrow_mut() = at);
    }));
    let c = corpus(&a.repo);
    let name = a.only.first().cloned().unwrap_or_default();
    let Some(&(_, target)) = TARGETS.iter().find(|(n, _)| *n == name) else { return };
    let out = std::io::stdout();
    let mut out = out.lock();
    let t0 = Instant::now();
    let budget = a.budget.map(Duration::from_secs);
    let mut done = 0u64;
    for i in a.from..a.from.saturating_add(a.cases) {
        if budget.is_some_and(|b| t0.elapsed() > b) {
            break;
        }
        done += 1;
        let _ = writeln!(out, "S {i}");
        let _ = out.flush();
        let mut rng = gen::Rng::new(case_seed(a.seed, &name, i));
        let t = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&mut rng, &c)));
        let took = t.elapsed();
        match r {
            Ok(findings) => {
                for f in findings.iter().take(3) {
                    let _ = writeln!(out, "F {i} check {}", f.replace('\n', " "));
                }
            }
            Err(p) => {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "?".into());
                let at = PANIC_AT.with(|p| p.borrow().clone());
                let _ = writeln!(out, "F {i} panic {} at {at}", msg.replace('\n', " "));
            }
        }
        if took > SLOW {
            // Wall time on a shared machine: slow only if it is slow again.
            let again = Instant::now();
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                target(&mut gen::Rng::new(case_seed(a.seed, &name, i)), &c)
            }));
            if again.elapsed() > SLOW {
                let _ =
                    writeln!(out, "F {i} slow {:.2}s, again {:.2}s", took.as_secs_f64(), again.elapsed().as_secs_f64());
            }
        }
    }
    let _ = writeln!(out, "E {done} {}", t0.elapsed().as_nanos());
}

#[derive(Default)]
struct Tally {
    cases: u64,
    nanos: u128,
    panics: u64,
    aborts: u64,
    slow: u64,
    checks: u64,
    examples: Vec<String>,
}

impl Tally {
    fn absorb(&mut self, x: Tally) {
        self.cases += x.cases;
        self.nanos += x.nanos;
        self.panics += x.panics;
        self.aborts += x.aborts;
        self.slow += x.slow;
        self.checks += x.checks;
        self.examples.extend(x.examples);
    }

    /// `name  N cases  R cases/s  ...` (rate over the wall time).
    fn line(&self, name: &str, wall: f64) -> String {
        format!(
            "{name:<13} {:>9} cases {:>6.0}s {:>9.0} cases/s  findings {}: panics {}  aborts {}  slow(>1s) {}  check failures {}",
            self.cases,
            wall,
            self.cases as f64 / wall.max(1e-9),
            self.findings(),
            self.panics,
            self.aborts,
            self.slow,
            self.checks
        )
    }

    fn findings(&self) -> u64 {
        self.panics + self.aborts + self.slow + self.checks
    }
}

/// One entry point over `[from, to)`, in worker processes restarted past any case that kills them.
fn drive(a: &Args, name: &str, from: u64, to: u64) -> Tally {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("stackproof-fuzz"));
    let mut t = Tally::default();
    let mut next = from;
    let started = Instant::now();
    while next < to && a.budget.is_none_or(|b| started.elapsed().as_secs() < b) {
        let child = Command::new(&exe)
            .args(["--worker", "--only", name, "--seed", &a.seed.to_string()])
            .args(["--from", &next.to_string(), "--cases", &(to - next).to_string()])
            .args(
                a.budget
                    .map(|b| vec!["--budget".to_string(), b.saturating_sub(started.elapsed().as_secs()).to_string()])
                    .unwrap_or_default(),
            )
            .arg("--repo")
            .arg(&a.repo)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let Ok(mut child) = child else {
            t.examples.push(format!("{name}: cannot start a worker"));
            t.aborts += 1;
            return t;
        };
        let mut last = None;
        let mut finished = false;
        if let Some(so) = child.stdout.take() {
            for line in BufReader::new(so).lines().map_while(Result::ok) {
                let mut f = line.splitn(4, ' ');
                match (f.next(), f.next(), f.next(), f.next()) {
                    (Some("S"), Some(i), _, _) => last = i.parse::<u64>().ok(),
                    (Some("F"), Some(i), Some(kind), msg) => {
                        match kind {
                            "panic" => t.panics += 1,
                            "slow" => t.slow += 1,
                            _ => t.checks += 1,
                        }
                        if t.examples.len() < 20 {
                            t.examples.push(format!("{name} case {i}: {kind}: {}", msg.unwrap_or("")));
                        }
                    }
                    (Some("E"), Some(n), Some(ns), _) => {
                        t.cases += n.parse::<u64>().unwrap_or(0);
                        t.nanos += ns.parse::<u128>().unwrap_or(0);
                        finished = true;
                    }
                    _ => {}
                }
            }
        }
        let status = child.wait();
        if finished {
            break;
        }
        // The worker died inside case `last`: count it and go on after it.
        let i = last.unwrap_or(next);
        t.aborts += 1;
        t.cases += i + 1 - next;
        if t.examples.len() < 20 {
            t.examples.push(format!("{name} case {i}: abort: worker ended with {status:?}"));
        }
        next = i + 1;
    }
    t
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("stackproof-fuzz: {e}");
            std::process::exit(2);
        }
    };
    if a.worker {
        worker(&a);
        return;
    }
    let names: Vec<&str> =
        TARGETS.iter().map(|(n, _)| *n).filter(|n| a.only.is_empty() || a.only.iter().any(|o| o == n)).collect();
    let c = corpus(&a.repo);
    println!(
        "stackproof-fuzz: seed {}, {} cases per entry point, {} job(s); corpus: {} crash texts, {} ELF files",
        a.seed,
        a.cases,
        a.jobs,
        c.texts.len(),
        c.elves.len()
    );
    drop(c);
    let t0 = Instant::now();
    let mut total = Tally::default();
    let mut bad = false;
    for name in names {
        let started = Instant::now();
        // The cases of one entry point split over `jobs` workers.
        let per = a.cases.div_ceil(a.jobs as u64);
        let tallies: Vec<Tally> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..a.jobs as u64)
                .map(|j| {
                    let lo = a.from + j * per;
                    let hi = (lo + per).min(a.from + a.cases);
                    let a = &a;
                    s.spawn(move || if lo < hi { drive(a, name, lo, hi) } else { Tally::default() })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or_default()).collect()
        });
        let mut t = Tally::default();
        for x in tallies {
            t.absorb(x);
        }
        println!("{}", t.line(name, started.elapsed().as_secs_f64()));
        for e in t.examples.iter().take(5) {
            println!("    {e}");
        }
        bad |= t.findings() > 0;
        t.examples.clear();
        total.absorb(t);
    }
    println!("{}", total.line("total", t0.elapsed().as_secs_f64()));
    std::process::exit(i32::from(bad));
}

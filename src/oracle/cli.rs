//! `layout FILE [--function NAME] [--json] [--check eh_frame|orc]`.

use std::fmt::Write as _;
use std::path::Path;

use super::compare::{check, disasm, formatter, Program};
use super::image::Image;
use crate::layout::{Cfa, Saved, CALLEE_SAVED_NAMES};

const USAGE: &str = "usage: layout FILE [--function NAME] [--json] [--check eh_frame|orc]\n";

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Run the command line; returns (output, exit status).
pub fn layout_cli(args: &[String]) -> (String, i32) {
    let mut args = args.iter().map(String::as_str).peekable();
    if args.peek() == Some(&"layout") {
        args.next();
    }
    let (mut file, mut function, mut json, mut check_with) = (None, None, false, None);
    while let Some(a) = args.next() {
        match a {
            "--function" => function = args.next(),
            "--json" => json = true,
            "--check" => check_with = args.next(),
            "-h" | "--help" => return (USAGE.into(), 0),
            _ if file.is_none() && !a.starts_with("--") => file = Some(a),
            _ => return (format!("layout: unexpected argument {a:?}\n{USAGE}"), 2),
        }
    }
    let Some(file) = file else { return (USAGE.into(), 2) };
    let img = match Image::load(Path::new(file)) {
        Ok(i) => i,
        Err(e) => return (format!("layout: {e}\n"), 1),
    };
    if let Some(which) = check_with {
        let t0 = std::time::Instant::now();
        let table = match which {
            "eh_frame" | "cfi" | "debug_frame" => img.cfi(),
            "orc" => img.orc(),
            _ => return (format!("layout: unknown oracle {which:?}\n{USAGE}"), 2),
        };
        let table = match table {
            Ok(t) => t,
            Err(e) => return (format!("layout: {e}\n"), 1),
        };
        let r = check(&img, &table, function);
        let secs = t0.elapsed().as_secs_f64();
        let mut out = format!("oracle:           {which} ({} rows)\n", table.len());
        out.push_str(&r.summary());
        let _ = writeln!(out, "time:             {secs:.2}s");
        return (out, 0);
    }
    let table = img.cfi().unwrap_or_default();
    // The whole image is analyzed first so `.cold` parts get their entry states.
    let program = Program::new(&img, &table, &mut |_, _, _| {});
    let picked: Vec<usize> =
        (0..program.funcs.len()).filter(|i| function.is_none_or(|n| program.funcs[*i].name == n)).collect();
    if picked.is_empty() {
        return (format!("layout: no function {:?} in {file}\n", function.unwrap_or("")), 1);
    }
    let mut fmt = formatter();
    let mut out = String::new();
    let mut first = true;
    if json {
        out.push_str("[\n");
    }
    for &k in &picked {
        let func = &program.funcs[k];
        let Some(l) = program.layout(k) else { continue };
        if !json {
            let _ = writeln!(out, "{}:{}", func.name, if l.truncated { " (truncated)" } else { "" });
        }
        for i in l.instructions() {
            let d = disasm(&mut fmt, &i.ins);
            if !json {
                let _ = writeln!(out, "{:#x}  {:<40} {}", i.addr, d, i.rule.describe());
                continue;
            }
            if !first {
                out.push_str(",\n");
            }
            first = false;
            let cfa = match i.rule.cfa {
                Cfa::Unknown(_) => "null".to_string(),
                c => json_str(&c.to_string()),
            };
            let _ = write!(
                out,
                "{{\"function\":{},\"address\":{},\"insn\":{},\"cfa\":{}",
                json_str(&func.name),
                i.addr,
                json_str(&d),
                cfa
            );
            if let Cfa::Unknown(w) = i.rule.cfa {
                let _ = write!(out, ",\"unknown\":{}", json_str(w));
            }
            for (k, s) in i.rule.saved.iter().enumerate() {
                let v = match s {
                    Saved::Same => "null".to_string(),
                    Saved::At(o) => o.to_string(),
                    Saved::AtAnc(_) | Saved::Lost => "\"?\"".to_string(),
                };
                let _ = write!(out, ",\"{}\":{}", CALLEE_SAVED_NAMES[k], v);
            }
            out.push('}');
        }
    }
    if json {
        out.push_str("\n]\n");
    }
    (out, 0)
}

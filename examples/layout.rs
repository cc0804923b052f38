//! `cargo run --release --example layout -- FILE [--function NAME] [--json] [--check eh_frame|orc]`
use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, code) = stackproof::layout_cli(&args);
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::stdout().write_all(out.as_bytes());
    std::process::exit(code);
}

//! `cargo run --release --example layout -- FILE [--function NAME] [--json] [--check eh_frame|orc]`
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, code) = stackproof::layout_cli(&args);
    print!("{out}");
    std::process::exit(code);
}

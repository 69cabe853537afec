//! The `origin` binary: parse the command line and hand over. No logic here.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(origin::cli::run(&args));
}

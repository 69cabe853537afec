//! The `origin` binary: parse the command line and hand over. No logic here.

/// mimalloc: per-thread free lists, and memory freed by another thread (a span, handed to the
/// trace exporter) goes back to its page without a lock on the allocating thread's arena.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(origin::cli::run(&args));
}

/// mimalloc: the request path allocates many small, short-lived values on several threads
/// (tokio workers, the SQLite driver's threads); glibc malloc spent ~15% of a benchmark run
/// in its own bookkeeping and arena-lock contention (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    allot::cli::main()
}

//! `prospeo`: the command-line front door of datafusion-prospeo.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc, as datafusion-cli uses: a job allocates and frees a string for nearly every field
/// of every answer, on several threads, and glibc's allocator spends a tenth of the job's CPU
/// on it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay`, by its place in mimalloc's `mi_option_e` (fixed for the ABI).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

unsafe extern "C" {
    /// mimalloc's `mi_option_set` (in the library the `mimalloc` crate links).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

fn main() -> ExitCode {
    // Freed memory goes back to the system after 10 ms, not mimalloc 3's 1 s: a job's peak is
    // about 100 MB lower, at the same CPU (`cargo bench --bench memory`).
    // SAFETY: sets one of mimalloc's options; any value is valid, at any time.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 10) };
    let args = cli::Cli::parse();
    cli::init_logging(&args.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(cli::EXIT_FAILURE);
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

//! `prospeo`: the command-line front door of datafusion-prospeo.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc, as datafusion-cli uses: a job allocates and frees a string for nearly every field
/// of every answer, on several threads, and glibc's allocator spends a tenth of the job's CPU
/// on it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    datafusion_prospeo::configure_mimalloc();
    no_huge_pages();
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

/// Asks Linux for no transparent huge pages in this process, whatever the system's setting
/// (`always` on some distributions): a 2 MiB page stays resident while any of it is in use, so
/// memory freed during a job would not go back to the system (mimalloc, built with `no_thp`,
/// no longer asks for them itself). It applies to pages touched from now on; a failure (an old
/// kernel) only leaves the system's setting.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: `prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)` takes plain integers and sets a flag of
    // this process; it touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

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
/// (`always` on some distributions): touching any byte of an aligned 2 MiB range makes all of it
/// resident, and a huge page partly freed is only split and given back under memory pressure, so
/// memory freed during a job stayed counted (mimalloc, built with `no_thp`, no longer asks for
/// them itself). It applies to pages touched from now on, and to processes this one starts; a
/// failure (an old kernel) only leaves the system's setting.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: `prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)` takes plain integers and sets a flag of
    // this process; it touches no memory of ours.
    unsafe {
        // prctl reads its arguments as unsigned longs.
        let (on, unused): (libc::c_ulong, libc::c_ulong) = (1, 0);
        libc::prctl(libc::PR_SET_THP_DISABLE, on, unused, unused, unused);
    }
}

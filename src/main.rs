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

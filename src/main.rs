//! Entry point. Works both as `cargo eterna-port …` (cargo passes `eterna-port` as the
//! first argument) and as `cargo-eterna-port …`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "eterna-port") {
        args.remove(1);
    }
    let cli = match cargo_eterna_port::cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors.
            return if e.use_stderr() {
                ExitCode::from(cargo_eterna_port::app::EXIT_ERROR)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    ExitCode::from(cargo_eterna_port::app::run(cli))
}

// The scan allocates many small token trees; mimalloc handles that markedly faster
// than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

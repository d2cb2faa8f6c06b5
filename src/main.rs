use std::os::unix::process::CommandExt;

use clap::Parser;
use vaultfs::cli::errors;

fn main() {
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let argv = match vaultfs::cli::prepare_args(raw.clone()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vaultfs: {e:#}");
            if errors::json_requested(&raw) {
                errors::print_error_json("usage", &format!("{e:#}"));
            }
            std::process::exit(errors::EXIT_USAGE);
        }
    };
    let json = errors::json_requested(&argv);
    let cli = match vaultfs::cli::Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => errors::exit_for_clap(e, json),
    };
    init_logging(cli.global.log_format);
    vaultfs::cli::set_quiet(cli.global.quiet);
    if matches!(cli.command, vaultfs::cli::Command::Mount(_)) {
        one_malloc_arena();
    }
    match vaultfs::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => std::process::exit(errors::report(&e, json)),
    }
}

/// Logs on stderr, filtered by RUST_LOG (default: warnings and errors).
fn init_logging(format: vaultfs::cli::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // One JSON object a line, with the spans (FUSE operation, task) it happened in.
        vaultfs::cli::LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
        // Colours only for a person at a terminal: a log file or a pipe gets plain text.
        vaultfs::cli::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// The mount daemon runs with a single glibc malloc arena: chunk buffers are allocated by
/// fetch threads and freed by whichever thread evicts them, and one arena per thread then
/// keeps tens of MiB the daemon no longer uses (measured with a 32 MiB chunk cache: 115
/// MiB RSS with an arena per thread, 60 MiB with one, same throughput). glibc reads the
/// setting only at start, so the process re-executes itself once with it (same pid, same
/// arguments); where that fails it goes on as it is.
fn one_malloc_arena() {
    const VAR: &str = "MALLOC_ARENA_MAX";
    if std::env::var_os(VAR).is_some() {
        return;
    }
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| "vaultfs".into());
    let err = std::process::Command::new("/proc/self/exe")
        .arg0(argv0)
        .args(args)
        .env(VAR, "1")
        .exec();
    tracing::debug!("re-executing with {VAR}=1 failed ({err}); going on with the default");
}

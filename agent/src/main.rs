//! The `hostlens` daemon.
use std::process::ExitCode;

use hostlens::cli::{self, CliExit, EX_USAGE};

fn main() -> ExitCode {
    let cfg = match cli::parse(std::env::args_os()).and_then(|f| f.config()) {
        Ok(cfg) => cfg,
        Err(CliExit::Info(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(CliExit::Usage(msg)) => {
            eprintln!("hostlens: {}", msg.trim_end());
            return ExitCode::from(EX_USAGE);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(match cfg.log.level {
            hostlens::config::LogLevel::Debug => tracing::Level::DEBUG,
            hostlens::config::LogLevel::Info => tracing::Level::INFO,
            hostlens::config::LogLevel::Warn => tracing::Level::WARN,
            hostlens::config::LogLevel::Error => tracing::Level::ERROR,
        })
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hostlens: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    ExitCode::from(runtime.block_on(hostlens::app::run(cfg)))
}

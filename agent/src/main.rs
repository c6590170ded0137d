//! The `hostlens` daemon.
use std::process::ExitCode;

use hostlens::cli::{self, CliExit, EX_USAGE};

fn main() -> ExitCode {
    limit_malloc_arenas();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cfg = match cli::parse(args.clone()).and_then(|f| f.config()) {
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
    // A broken web config is a usage error, like a broken config file.
    let web = match hostlens::reload::load_web(&cfg) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("hostlens: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    // Until the reload handler is installed, a SIGHUP (default: terminate) is ignored.
    // SAFETY: setting a signal disposition while the process has a single thread.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    // Attach the probes while the process has one thread, then drop every capability that
    // scraping does not need: threads created later inherit the reduced sets.
    hostlens::probes::http::configure(cfg.http.clone(), cfg.paths.procfs.clone());
    let probes = hostlens::probes::Probes::load(&cfg);
    // Loading parsed the kernel's BTF (several MB) and the object; give that heap back.
    trim_heap();
    match hostlens::caps::drop_to_scrape_set() {
        Ok(kept) => {
            tracing::info!(kept = %kept.join(","), "capabilities dropped after attaching the probes")
        }
        Err(e) => tracing::warn!(error = %e, "could not drop capabilities"),
    }
    let reload: hostlens::reload::ReloadFn =
        Box::new(
            move || match cli::parse(args.clone()).and_then(|f| f.config()) {
                Ok(c) => Ok(c),
                Err(CliExit::Usage(m) | CliExit::Info(m)) => Err(m.trim_end().to_string()),
            },
        );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Every scrape may hold a blocking thread for as long as a collector is stuck:
        // leave room beyond them for the remote-write gather, bcrypt and DNS.
        .max_blocking_threads(cfg.web.max_requests.clamp(16, 1000) + 16)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hostlens: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    ExitCode::from(runtime.block_on(hostlens::app::run_with(
        cfg,
        web,
        Some(probes),
        Some(reload),
    )))
}

/// glibc gives each thread that allocates under contention its own arena (up to 8 per core)
/// and keeps what is freed in it: with concurrent scrapes on several runtime threads the
/// resident memory grew by ~10 MB of mostly free arena space (8 scrapers, measured). Two
/// arenas keep it near the single-threaded figure at no measurable CPU cost; an
/// operator's `MALLOC_ARENA_MAX` still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes allocator parameters; called before any thread exists.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    }
}

/// Returns free heap memory to the kernel (glibc keeps it otherwise).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it has no other effect.
    unsafe {
        libc::malloc_trim(0);
    }
}

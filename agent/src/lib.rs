//! hostlens: an eBPF host and process agent. The binary is `src/main.rs`; everything else lives
//! in this library so that tests can reach it.
pub mod app;
pub mod caps;
pub mod cli;
pub mod clock;
pub mod collectors;
pub mod config;
pub mod emit;
pub mod exposition;
pub mod faults;
pub mod paths;
pub mod probes;
pub mod procnames;
pub mod reload;
pub mod remote_write;
pub mod sdnotify;
pub mod selfmetrics;
pub mod server;
pub mod status;
pub mod textparse;
pub mod webconfig;

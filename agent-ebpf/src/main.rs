//! hostlens kernel programs, main object (`agent-ebpf`): the `tcp` and `http` probes. The
//! `syscalls` probe is its own object (`agent-ebpf-syscalls`, `syscalls_main.rs`) because its
//! task-local storage map needs Linux 5.11+, and a map the kernel cannot create fails the whole
//! object. Each module's programs are loaded and attached on their own by the matching
//! `agent/src/probes/<name>.rs`.
#![no_std]
#![no_main]

mod http;
mod rt;
mod tcp;

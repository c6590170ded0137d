//! hostlens kernel programs, main object (`agent-ebpf`): the `tcp` probe. The `syscalls` and
//! `http` probes are objects of their own (`syscalls_main.rs`, `http_main.rs`) because their
//! local storage maps need kernel BTF (and Linux 5.11+), and a map the kernel cannot create
//! fails the whole object. Each module's programs are loaded and attached on their own by the
//! matching `agent/src/probes/<name>.rs`.
#![no_std]
#![no_main]

mod rt;
mod tcp;

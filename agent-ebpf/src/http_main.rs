//! hostlens kernel programs, `http` probe object (`agent-ebpf-http`): kept apart from the main
//! object because its socket-local storage map needs kernel BTF; without it only this probe
//! fails.
#![no_std]
#![no_main]

mod http;
mod local_storage;
mod rt;

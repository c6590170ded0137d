//! hostlens kernel programs, `syscalls` probe object (`agent-ebpf-syscalls`): kept apart from
//! the main object because its task-local storage map needs Linux 5.11+; on an older kernel
//! only this probe fails.
#![no_std]
#![no_main]

mod local_storage;
mod rt;
mod syscalls;

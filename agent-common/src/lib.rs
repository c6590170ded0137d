//! Types, map names and limits shared by the kernel programs (`agent-ebpf`) and the agent.
//!
//! Everything here is `#[repr(C)]` with explicit widths and no implicit padding, because the
//! kernel side writes these bytes into maps and the user side reads them back.
#![no_std]

pub mod http;
pub mod syscalls;
pub mod tcp;

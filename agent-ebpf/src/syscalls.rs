//! `syscalls` probe, kernel half.
//!
//! Hook: `raw_tracepoint/sys_enter` (args: `struct pt_regs *regs, long id`; see
//! include/trace/events/syscalls.h). Produces: per-CPU counters indexed by syscall number in
//! `SYSCALL_COUNTS`, read by `agent/src/probes/syscalls.rs`. O(1) per event, no userspace work.
use agent_common::syscalls::{MAX_SYSCALLS, OVERFLOW_SLOT, SyscallCounts};
use aya_ebpf::{
    macros::{map, raw_tracepoint},
    maps::PerCpuArray,
    programs::RawTracePointContext,
};
use aya_log_ebpf::debug;

#[map(name = "SYSCALL_COUNTS")]
static SYSCALL_COUNTS: PerCpuArray<SyscallCounts> = PerCpuArray::with_max_entries(1, 0);

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn syscalls_sys_enter(ctx: RawTracePointContext) -> i32 {
    match try_sys_enter(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

#[inline(always)]
fn try_sys_enter(ctx: &RawTracePointContext) -> Result<i32, i32> {
    let id: i64 = ctx.arg(1);
    // Negative ids (ptrace-cancelled syscalls) and unknown future numbers share one slot so
    // they are counted, not lost.
    let slot = if id >= 0 && (id as usize) < OVERFLOW_SLOT {
        id as usize
    } else {
        // Rare by nature; written only when the agent runs at debug level (AYA_LOG_LEVEL).
        debug!(ctx, "syscall id {} is outside the syscall table", id);
        OVERFLOW_SLOT
    };
    let counts = SYSCALL_COUNTS.get_ptr_mut(0).ok_or(0)?;
    // SAFETY: the map value lives for the program's run and is only touched by this CPU;
    // `slot < MAX_SYSCALLS` keeps the access in bounds (the verifier checks it again).
    unsafe {
        if slot < MAX_SYSCALLS {
            (*counts).count[slot] += 1;
        }
    }
    Ok(0)
}

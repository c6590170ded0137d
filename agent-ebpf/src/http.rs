//! `http` probe, kernel half: one program at the exit of the syscalls below, on one of three
//! hooks (the agent takes the first that loads, or the one `http.hook` names):
//! `tp_btf/sys_exit`, the `syscalls:sys_exit_*` tracepoints, `raw_tracepoint/sys_exit`.
//!
//! At a syscall's exit the user registers still hold its arguments (x86_64 `pt_regs`: `di`,
//! `si`, `dx`; `orig_ax` is the syscall number — arch/x86/include/asm/ptrace.h), and `ret` is
//! the result, so no enter hook and no per-thread state are needed:
//! - `accept`/`accept4` (new fd = ret, listening fd = di) and `connect` to an IPv4/IPv6 peer
//!   (fd = di, sockaddr at si) start following `(tgid, fd)` in `HTTP_CONNS` under a fresh
//!   connection id, so a reused fd is a new connection; `close` (fd = di) ends it;
//! - `read`, `readv`, `recvfrom`, `recvmsg`, `write`, `writev`, `sendto`, `sendmsg` on a
//!   followed fd copy a bounded prefix of the `ret` bytes moved (across up to 8 iovecs) into a
//!   record at the end of the current CPU's batch (`HTTP_BATCH`); `sendfile` sends only its
//!   byte count, added to the server's write before it when that is the batch's last
//!   record. A batch goes to the CPU's ring buffer (`HTTP_EVENTS_<cpu % 8>`) as one ring
//!   record when it holds `HTTP_BATCH_BYTES` and another record comes, or when the agent runs
//!   `http_flush` on that CPU (before each drain): a ring record's lock and interrupt-flag
//!   save cost as much as the rest of a small record, so a batch pays them once for tens of
//!   records.
//!
//! Other syscalls cost a program call, one load of `orig_ax` and a branch (`tp_btf`; the raw
//! tracepoint needs a helper for the load; the per-syscall tracepoints never run); reads
//! and writes of unfollowed fds cost one hash lookup. A connection whose first bytes
//! are not an HTTP method or status line is marked `PROTO_OTHER` and never copied. Reserve
//! failures count in `HTTP_LOST` (per CPU, every record of a batch that found no room).
//! Batches are submitted without waking the agent (it drains every 100 ms) until a ring is 1/4
//! full. Syscall numbers are x86_64's; on other architectures the program attaches but follows
//! nothing.
use crate::local_storage::SkStorage;
use agent_common::http::{
    BATCH_ALONE, BATCH_HEADER_BYTES, BATCH_MAX, BatchHeader, ConnInfo, DIR_IN, DIR_OUT, EV_ACCEPT,
    EV_CLOSE, EV_CONNECT, EV_DATA, EV_SERVER, EventHeader, FILTER_INCLUDE, FILTER_NONE,
    HEADER_BYTES, MAX_CAPTURE, MAX_CONNS, MAX_PORTS, MAX_SKIPPED, PORT_EXCLUDE, PORT_INCLUDE,
    PROTO_HTTP, PROTO_OTHER, PROTO_UNKNOWN, RDONLY_CAST_PLACEHOLDER, RING_BYTES, ROLE_CLIENT,
    ROLE_SERVER, SC_READ, SC_READV, SC_RECVFROM, SC_RECVMSG, SC_SENDFILE, SC_SENDMSG, SC_SENDTO,
    SC_WRITE, SC_WRITEV,
};
use agent_common::tcp::{AF_INET, AF_INET6, TCP_CLOSE};
use aya_ebpf::{
    EbpfContext, Global,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
        generated::{
            bpf_get_current_task_btf, bpf_probe_read_user as raw_read_user, bpf_task_pt_regs,
        },
    },
    macros::{btf_map, btf_tracepoint, map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};

#[unsafe(no_mangle)]
static HTTP_SELF_TGID: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static HTTP_CAPTURE: Global<u32> = Global::new(1024);
/// The offset of `stack` in `struct task_struct` and the BTF id of `struct pt_regs`, from the
/// kernel's BTF (`agent_common::http::GLOBAL_TASK_STACK`); 0 when the agent could not find
/// them or the kernel refused the kfunc. Read-only: the verifier takes them as constants.
#[unsafe(no_mangle)]
static HTTP_TASK_STACK: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static HTTP_PT_REGS_TYPE: Global<u32> = Global::new(0);

/// Where a task's user registers are, as bytes past the start of its kernel stack: the same
/// for every task of the running kernel (`THREAD_SIZE` less the padding and the size of
/// `pt_regs`), learned from `bpf_task_pt_regs` the first time (0 until then).
#[map(name = "HTTP_REGS_AT")]
static HTTP_REGS_AT: Array<u64> = Array::with_max_entries(1, 0);

/// Bytes a batch gathers before it goes to the ring (`agent_common::http::GLOBAL_BATCH_BYTES`).
#[unsafe(no_mangle)]
static HTTP_BATCH_BYTES: Global<u32> = Global::new(BATCH_MAX as u32);
/// A quarter of the ring's size (set by the agent with the size).
#[unsafe(no_mangle)]
static HTTP_WAKE_BYTES: Global<u32> = Global::new(RING_BYTES / 4);

/// Bytes one CPU may write between two fill-level checks (set by the agent: a sixteenth of
/// the wake level per CPU, so all CPUs together overshoot it by at most a sixteenth).
#[unsafe(no_mangle)]
static HTTP_CHECK_BYTES: Global<u32> = Global::new(RING_BYTES / 4 / 16);

#[map(name = "HTTP_UNCHECKED")]
static HTTP_UNCHECKED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

// One ring per CPU up to eight (`agent_common::http::EVENTS_MAPS`); see `ring`.
#[map(name = "HTTP_EVENTS_0")]
static HTTP_EVENTS_0: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);
#[map(name = "HTTP_EVENTS_1")]
static HTTP_EVENTS_1: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);
#[map(name = "HTTP_EVENTS_2")]
static HTTP_EVENTS_2: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);
#[map(name = "HTTP_EVENTS_3")]
static HTTP_EVENTS_3: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);
#[map(name = "HTTP_EVENTS_4")]
static HTTP_EVENTS_4: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);
#[map(name = "HTTP_EVENTS_5")]
static HTTP_EVENTS_5: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);
#[map(name = "HTTP_EVENTS_6")]
static HTTP_EVENTS_6: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);
#[map(name = "HTTP_EVENTS_7")]
static HTTP_EVENTS_7: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// The ring of the current CPU: `cpu % 8`. Branches, not a table: a table of map addresses
/// would be data the loader cannot relocate.
#[inline(always)]
fn ring() -> &'static RingBuf {
    // SAFETY: no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() } & 7;
    if cpu < 4 {
        if cpu < 2 {
            if cpu == 0 {
                &HTTP_EVENTS_0
            } else {
                &HTTP_EVENTS_1
            }
        } else if cpu == 2 {
            &HTTP_EVENTS_2
        } else {
            &HTTP_EVENTS_3
        }
    } else if cpu < 6 {
        if cpu == 4 {
            &HTTP_EVENTS_4
        } else {
            &HTTP_EVENTS_5
        }
    } else if cpu == 6 {
        &HTTP_EVENTS_6
    } else {
        &HTTP_EVENTS_7
    }
}

#[map(name = "HTTP_LOST")]
static HTTP_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Room for a batch: records start below [`BATCH_MAX`], and one record is a header and at most
/// [`MAX_CAPTURE`] bytes copied at a payload offset below [`MAX_CAPTURE`] (bounds the verifier
/// can follow). A power of two, so the batch's length is masked into it.
const BATCH_BUF: usize = (BATCH_MAX + HEADER_BYTES + 2 * MAX_CAPTURE).next_power_of_two();

/// One CPU's batch: a [`BatchHeader`] and records in `buf[..pos]`.
#[repr(C)]
struct Batch {
    /// Set while a program appends or flushes: an interrupt's program finding it set leaves
    /// the batch alone (programs of one CPU only nest through interrupts).
    busy: u32,
    records: u32,
    pos: u32,
    /// Offset of the last record (valid while `records` > 0).
    last: u32,
    buf: [u8; BATCH_BUF],
}

#[map(name = "HTTP_BATCH")]
static HTTP_BATCH: PerCpuArray<Batch> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "HTTP_CONNS")]
static HTTP_CONNS: LruHashMap<u64, ConnInfo> = LruHashMap::with_max_entries(MAX_CONNS, 0);

/// Iovecs read per vectored call (a head and its body, or a few pipelined responses).
const MAX_IOV: u64 = 8;

/// x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl).
#[cfg(bpf_target_arch = "x86_64")]
mod nr {
    pub const READ: u64 = 0;
    pub const WRITE: u64 = 1;
    pub const CLOSE: u64 = 3;
    pub const READV: u64 = 19;
    pub const WRITEV: u64 = 20;
    pub const SENDFILE: u64 = 40;
    pub const CONNECT: u64 = 42;
    pub const ACCEPT: u64 = 43;
    pub const SENDTO: u64 = 44;
    pub const RECVFROM: u64 = 45;
    pub const SENDMSG: u64 = 46;
    pub const RECVMSG: u64 = 47;
    pub const ACCEPT4: u64 = 288;
}
/// Elsewhere no number matches (`u64::MAX` is never a syscall number).
#[cfg(not(bpf_target_arch = "x86_64"))]
mod nr {
    pub const READ: u64 = u64::MAX;
    pub const WRITE: u64 = u64::MAX;
    pub const CLOSE: u64 = u64::MAX;
    pub const READV: u64 = u64::MAX;
    pub const WRITEV: u64 = u64::MAX;
    pub const SENDFILE: u64 = u64::MAX;
    pub const CONNECT: u64 = u64::MAX;
    pub const ACCEPT: u64 = u64::MAX;
    pub const SENDTO: u64 = u64::MAX;
    pub const RECVFROM: u64 = u64::MAX;
    pub const SENDMSG: u64 = u64::MAX;
    pub const RECVMSG: u64 = u64::MAX;
    pub const ACCEPT4: u64 = u64::MAX;
}

/// Offsets in x86_64 `struct pt_regs`: `dx` at 96, then `si` (104) and `di` (112); `orig_ax`
/// at 120.
const REG_DX: u64 = 96;
const REG_ORIG_AX: u64 = 120;

#[inline(always)]
fn reg(regs: u64, off: u64) -> u64 {
    // SAFETY: bpf_probe_read_kernel checks the address; `regs` is the tracepoint's pt_regs.
    unsafe { bpf_probe_read_kernel((regs + off) as *const u64) }.unwrap_or(u64::MAX)
}

/// The first three syscall arguments (x86_64: `di`, `si`, `dx`).
#[derive(Clone, Copy)]
struct Args {
    di: u64,
    si: u64,
    dx: u64,
}

/// Reads `dx`, `si`, `di` (adjacent in `pt_regs`) with one helper call.
#[inline(always)]
fn args(regs: u64) -> Args {
    // SAFETY: bpf_probe_read_kernel checks the address; `regs` points to a pt_regs.
    let [dx, si, di] =
        unsafe { bpf_probe_read_kernel((regs + REG_DX) as *const [u64; 3]) }.unwrap_or([0; 3]);
    Args { di, si, dx }
}

#[inline(always)]
fn conn_key(tgid: u32, fd: u32) -> u64 {
    ((tgid as u64) << 32) | fd as u64
}

/// Submit flags for a record of `len` bytes: no wake-up of the agent per record unless the
/// ring is a quarter full, so a burst is drained at once. The fill level is asked of the ring
/// only after this CPU wrote `HTTP_CHECK_BYTES` since it last asked (a per-CPU counter is a
/// plain memory access; the query is a helper call).
#[inline(always)]
fn submit_flags(ring: &RingBuf, len: u64) -> u64 {
    let Some(p) = HTTP_UNCHECKED.get_ptr_mut(0) else {
        return BPF_RB_NO_WAKEUP as u64;
    };
    // SAFETY: per-CPU value, only this CPU writes it while the program runs.
    unsafe {
        *p += len;
        if *p < HTTP_CHECK_BYTES.load() as u64 {
            return BPF_RB_NO_WAKEUP as u64;
        }
        *p = 0;
    }
    if ring.query(BPF_RB_AVAIL_DATA as u64) > HTTP_WAKE_BYTES.load() as u64 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

fn count_lost(records: u32) {
    if let Some(p) = HTTP_LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe { *p += u64::from(records) }
    }
}

/// This CPU's batch, marked busy; None when a program this one interrupted holds it.
#[inline(always)]
fn batch_take() -> Option<*mut Batch> {
    let b = HTTP_BATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU value; only programs of this CPU touch it, and one that interrupts
    // another sees its `busy` (same CPU: program order).
    unsafe {
        if core::ptr::read_volatile(&raw const (*b).busy) != 0 {
            return None;
        }
        core::ptr::write_volatile(&raw mut (*b).busy, 1);
    }
    Some(b)
}

/// Ends the use of batch `b` taken with [`batch_take`].
#[inline(always)]
fn batch_release(b: *mut Batch) {
    // SAFETY: as in batch_take.
    unsafe { core::ptr::write_volatile(&raw mut (*b).busy, 0) }
}

/// Offset in the batch for the next record (below [`BATCH_MAX`], 8-byte aligned: `pos` is
/// kept so; the mask shows the verifier the bound). A batch holding `HTTP_BATCH_BYTES` goes
/// to the ring first: only when a record needs the room, so the last record stays in the
/// batch until then (a `sendfile` may still join it, [`extend_response`]).
#[inline(always)]
fn batch_slot(b: *mut Batch) -> usize {
    // SAFETY: held batch (batch_take).
    unsafe {
        let mut limit = HTTP_BATCH_BYTES.load();
        if limit > BATCH_MAX as u32 {
            limit = BATCH_MAX as u32;
        }
        if (*b).pos >= limit {
            batch_flush(b);
        }
    }
    // SAFETY: as above.
    let pos = unsafe { (*b).pos } as usize;
    let pos = if pos < BATCH_HEADER_BYTES {
        BATCH_HEADER_BYTES
    } else {
        pos
    };
    pos & (BATCH_MAX - 1)
}

/// The record of `len` bytes written at `at` (its header saying `len`) is complete: the next
/// one goes 8-byte aligned after it. Without batches (`HTTP_BATCH_BYTES` 0: the agent cannot
/// run `http_flush`) it goes to the ring at once.
#[inline(always)]
fn batch_commit(b: *mut Batch, at: usize, len: usize) {
    // SAFETY: held batch.
    unsafe {
        (*b).pos = (at + ((len + 7) & !7)) as u32;
        (*b).last = at as u32;
        (*b).records += 1;
        if HTTP_BATCH_BYTES.load() == 0 {
            batch_flush(b);
        }
    }
}

/// Writes the records of batch `b` to this CPU's ring as one record and empties the batch
/// (no room: its records count as lost).
#[inline(always)]
fn batch_flush(b: *mut Batch) {
    // SAFETY: held batch; the length is checked against the buffer before the slice.
    unsafe {
        let len = (*b).pos as usize;
        let records = (*b).records;
        (*b).pos = BATCH_HEADER_BYTES as u32;
        (*b).records = 0;
        if records == 0 || len <= BATCH_HEADER_BYTES || len > BATCH_BUF {
            return;
        }
        let head = (*b).buf.as_mut_ptr().cast::<BatchHeader>();
        (*head).cpu = bpf_get_smp_processor_id();
        (*head).records = records as u16;
        (*head).flags = 0;
        // The check above, as a mask the verifier follows.
        let len = len & (BATCH_BUF - 1);
        let data = core::slice::from_raw_parts((*b).buf.as_ptr(), len);
        let ring = ring();
        if ring
            .output::<[u8]>(data, submit_flags(ring, len as u64))
            .is_err()
        {
            count_lost(records);
        }
    }
}

/// Run by the agent on each CPU (`BPF_PROG_TEST_RUN`, never attached) before it drains the
/// rings: writes out what the CPU's batch holds. Returns 1 when the batch is in use (the run
/// interrupted a program appending to it): the agent runs it again.
#[raw_tracepoint(tracepoint = "http_flush")]
pub fn http_flush(_ctx: RawTracePointContext) -> i32 {
    let Some(b) = batch_take() else {
        return 1;
    };
    batch_flush(b);
    batch_release(b);
    0
}

/// # Safety
/// `addr` is a user address; the helper faults safely.
#[inline(always)]
unsafe fn read_user<T>(addr: u64) -> Result<T, i32> {
    unsafe { aya_ebpf::helpers::bpf_probe_read_user(addr as *const T) }
}

/// `struct iovec` at user address `iov`: (base, len), in one read.
#[inline(always)]
fn iovec_at(iov: u64) -> (u64, u64) {
    // SAFETY: bpf_probe_read_user checks the address.
    let [base, len] = unsafe { read_user::<[u64; 2]>(iov) }.unwrap_or([0, 0]);
    (base, len)
}

/// The fields of a record header that vary.
struct Rec {
    kind: u8,
    tgid: u32,
    fd: u32,
    conn_id: u64,
    aux: u32,
    direction: u8,
    role: u8,
    syscall: u8,
    bytes: u64,
    /// The endpoint's family (`EV_DATA` from the socket hooks; `aux` holds its port).
    family: u16,
    /// The client side's peer address (`EV_DATA` from the socket hooks).
    peer: [u64; 2],
    /// The connection's [`ConnInfo::last_out_ns`] (a `sendfile` joins only that record).
    last_out_ns: u64,
}

impl Rec {
    /// `moved` bytes of `syscall` in `direction` on connection `conn` (fd `fd` of `tgid`).
    #[inline(always)]
    fn data(tgid: u32, fd: u32, conn: &ConnInfo, direction: u8, syscall: u8, moved: u64) -> Rec {
        Rec {
            kind: EV_DATA,
            tgid,
            fd,
            conn_id: conn.id,
            aux: 0,
            direction,
            role: conn.role,
            syscall,
            bytes: moved,
            family: 0,
            peer: [0; 2],
            last_out_ns: conn.last_out_ns,
        }
    }

    /// A record without bytes of connection `conn_id` (fd `fd` of `tgid`): its start
    /// (`EV_ACCEPT`, `EV_CONNECT`, `EV_SERVER`; the caller sets `aux`) or its end.
    #[inline(always)]
    fn control(kind: u8, tgid: u32, fd: u32, conn_id: u64, role: u8) -> Rec {
        Rec {
            kind,
            tgid,
            fd,
            conn_id,
            aux: 0,
            direction: 0,
            role,
            syscall: 0,
            bytes: 0,
            family: 0,
            peer: [0; 2],
            last_out_ns: 0,
        }
    }

    /// The end of connection `conn` (fd `fd` of `tgid`; 0 when closed outside a syscall).
    #[inline(always)]
    fn close(tgid: u32, fd: u32, conn: &ConnInfo) -> Rec {
        Rec::control(EV_CLOSE, tgid, fd, conn.id, conn.role)
    }
}

/// Writes the record header for `r` at `dst` (a ring record or a batch slot: 8-byte aligned,
/// [`HEADER_BYTES`] long): zeroed with aligned stores, then the fields (`len`: the record's
/// size, header included).
///
/// # Safety
/// `dst` is 8-byte aligned and has room for an [`EventHeader`].
#[inline(always)]
unsafe fn write_header(dst: *mut u8, r: &Rec, captured: u16, len: u32, ts_ns: u64) {
    let h = dst.cast::<EventHeader>();
    unsafe {
        // One store per word: the compiler would turn a bulk zeroing into a call of its
        // byte-wise memset routine.
        let words = dst.cast::<u64>();
        let mut i = 0;
        while i < HEADER_BYTES / 8 {
            core::ptr::write_volatile(words.add(i), 0);
            i += 1;
        }
        (*h).ts_ns = ts_ns;
        (*h).conn_id = r.conn_id;
        (*h).bytes = r.bytes;
        (*h).tgid = r.tgid;
        (*h).fd = r.fd;
        (*h).aux = r.aux;
        (*h).captured = captured;
        (*h).kind = r.kind;
        (*h).direction = r.direction;
        (*h).role = r.role;
        (*h).syscall = r.syscall;
        (*h).family = r.family;
        (*h).len = len;
        // The thread name is only needed once per connection (a fallback for the process
        // name); data records skip the helper call, and a client side's carry its peer there.
        if (r.kind == EV_ACCEPT || r.kind == EV_CONNECT || r.kind == EV_SERVER)
            && let Ok(c) = bpf_get_current_comm()
        {
            (*h).comm = c;
        } else if r.family != 0 && r.role == ROLE_CLIENT {
            let peer = dst.add(COMM_OFFSET).cast::<u64>();
            core::ptr::write_volatile(peer, r.peer[0]);
            core::ptr::write_volatile(peer.add(1), r.peer[1]);
        }
    }
}

/// Offset of `comm` in [`EventHeader`] (8-byte aligned).
const COMM_OFFSET: usize = core::mem::offset_of!(EventHeader, comm);

/// A client's peer as a `sockaddr` (`.1` bytes of `.0` used).
type Peer<'a> = (&'a [u8; 32], u16);

/// Appends a record that is only a header (connection end, sendfile byte counts) to this
/// CPU's batch.
#[inline(always)]
fn emit_header(r: &Rec) {
    emit_control(r, None);
}

/// Appends a record without bytes moved to this CPU's batch: a header, and for a client's
/// start the peer's `sockaddr` after it.
#[inline(always)]
fn emit_control(r: &Rec, peer: Option<Peer<'_>>) {
    let Some(b) = batch_take() else {
        emit_alone(r, peer);
        return;
    };
    let at = batch_slot(b);
    // SAFETY: `at + HEADER_BYTES + 32 <= BATCH_BUF` (batch_slot), 8-byte aligned.
    let len = unsafe { write_control((*b).buf.as_mut_ptr().add(at), r, peer) };
    batch_commit(b, at, len);
    batch_release(b);
}

/// Writes the header of `r` at `dst`, and the peer's `sockaddr` after it when given. Returns
/// the record's length.
///
/// # Safety
/// `dst` is 8-byte aligned and has room for a header and 32 bytes.
#[inline(always)]
unsafe fn write_control(dst: *mut u8, r: &Rec, peer: Option<Peer<'_>>) -> usize {
    unsafe {
        match peer {
            Some((sa, sa_len)) => {
                write_header(
                    dst,
                    r,
                    sa_len,
                    (HEADER_BYTES + 32) as u32,
                    bpf_ktime_get_ns(),
                );
                core::ptr::write_unaligned(dst.add(HEADER_BYTES).cast::<[u8; 32]>(), *sa);
                HEADER_BYTES + 32
            }
            None => {
                write_header(dst, r, 0, HEADER_BYTES as u32, bpf_ktime_get_ns());
                HEADER_BYTES
            }
        }
    }
}

/// A header record (with a peer `sockaddr` when given) straight to the ring as a batch of its
/// own ([`BATCH_ALONE`]), for a program that interrupted one holding the batch (a socket
/// closed from softirq). The 32 bytes after a header-only record are not read (`records`
/// says one).
#[inline(always)]
fn emit_alone(r: &Rec, peer: Option<Peer<'_>>) {
    const SIZE: usize = BATCH_HEADER_BYTES + HEADER_BYTES + 32;
    let ring = ring();
    let Some(mut entry) = ring.reserve_bytes(SIZE, 0) else {
        count_lost(1);
        return;
    };
    let p: *mut u8 = entry.as_mut_ptr().cast();
    // SAFETY: the record is SIZE bytes long and 8-byte aligned (ring records are).
    unsafe {
        let head = p.cast::<BatchHeader>();
        (*head).cpu = bpf_get_smp_processor_id();
        (*head).records = 1;
        (*head).flags = BATCH_ALONE;
        write_control(p.add(BATCH_HEADER_BYTES), r, peer);
    }
    entry.submit(submit_flags(ring, SIZE as u64));
}

/// First four bytes of an HTTP/1.x request (method) or response (`HTTP`).
#[inline(always)]
fn looks_like_http(w: [u8; 4]) -> bool {
    matches!(
        &w,
        b"GET "
            | b"POST"
            | b"PUT "
            | b"HEAD"
            | b"DELE"
            | b"OPTI"
            | b"PATC"
            | b"CONN"
            | b"TRAC"
            | b"HTTP"
    )
}

/// Preferred entry: `tp_btf/sys_exit` (args `struct pt_regs *regs, long ret`). It runs on
/// every syscall's exit, but its arguments are typed kernel pointers, so the syscall number and
/// the arguments are plain loads from `regs` (no helper call), and an uninteresting syscall
/// costs the program call, one load and a branch.
#[btf_tracepoint(function = "sys_exit")]
pub fn http_sys_exit_btf(ctx: BtfTracePointContext) -> i32 {
    let regs: *const u64 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    // SAFETY: `regs` is the kernel's `struct pt_regs *` (BTF-typed: the verifier checks the
    // offset against the struct and the load faults safely).
    let nr = unsafe { core::ptr::read_volatile(regs.add(REG_ORIG_AX as usize / 8)) };
    on_exit(nr, ret, || unsafe { args_direct(regs) });
    0
}

/// Second choice: one program attached to the `syscalls:sys_exit_*` tracepoints of exactly
/// the syscalls above (record layout in `events/syscalls/sys_exit_read/format`: `__syscall_nr`
/// at 8, `ret` at 16). Other syscalls never run it, but each event goes through perf's
/// tracepoint path. The arguments come from the task's saved user registers
/// (`bpf_task_pt_regs`, kernel 5.15+), a BTF-typed pointer read with plain loads.
#[tracepoint]
pub fn http_sys_exit_tp(ctx: TracePointContext) -> u32 {
    // SAFETY: the record is at least 24 bytes (fixed layout of every sys_exit_* event);
    // direct context loads, checked by the verifier.
    let (nr, ret) = unsafe {
        let rec = ctx.as_ptr().cast::<u8>();
        (
            core::ptr::read_volatile(rec.add(8).cast::<i32>()),
            core::ptr::read_volatile(rec.add(16).cast::<i64>()),
        )
    };
    if nr >= 0 {
        on_exit(nr as u64, ret, || {
            // SAFETY: the helpers take the current task; the result is its user pt_regs.
            let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u64;
            unsafe { args_direct(regs) }
        });
    }
    0
}

/// Fallback entry for kernels without BTF or `bpf_task_pt_regs`: every syscall's exit, the
/// registers read with a helper.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn http_sys_exit(ctx: RawTracePointContext) -> i32 {
    let regs: u64 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    on_exit(reg(regs, REG_ORIG_AX), ret, || args(regs));
    0
}

/// `dx`, `si`, `di` of a BTF-typed `pt_regs` pointer, with plain loads.
///
/// # Safety
/// `regs` is a `struct pt_regs *` the verifier knows by type.
#[inline(always)]
unsafe fn args_direct(regs: *const u64) -> Args {
    unsafe {
        Args {
            dx: core::ptr::read_volatile(regs.add(REG_DX as usize / 8)),
            si: core::ptr::read_volatile(regs.add(REG_DX as usize / 8 + 1)),
            di: core::ptr::read_volatile(regs.add(REG_DX as usize / 8 + 2)),
        }
    }
}

/// The work at a syscall's exit; `args` reads the first three arguments, only for the
/// syscalls that need them.
#[inline(always)]
fn on_exit(nr: u64, ret: i64, args: impl Fn() -> Args) {
    if let Some((syscall, direction)) = data_syscall(nr) {
        if ret > 0 {
            on_data(args(), ret as u64, syscall, direction);
        }
        return;
    }
    match nr {
        nr::ACCEPT | nr::ACCEPT4 => on_accept(args(), ret),
        nr::CONNECT => on_connect(args(), ret),
        nr::CLOSE => on_close(args()),
        _ => {}
    }
}

/// Socket-local state of every TCP socket that moved bytes for a process (socket hooks); the
/// kernel frees it with the socket, so a reused fd or socket address is a new connection.
#[btf_map(name = "HTTP_SOCKS")]
static HTTP_SOCKS: SkStorage<ConnInfo> = SkStorage::new();

/// Processes the agent's configuration filters out (socket hooks): a socket of theirs is
/// marked `PROTO_OTHER` when it would have become an HTTP connection.
#[map(name = "HTTP_SKIP")]
static HTTP_SKIP: HashMap<u32, u8> = HashMap::with_max_entries(MAX_SKIPPED, 0);

/// The generation of `HTTP_SKIP` (`agent_common::http::SKIP_GEN_MAP`): the agent adds one
/// after each process it puts there.
#[map(name = "HTTP_SKIP_GEN")]
static HTTP_SKIP_GEN: Array<u32> = Array::with_max_entries(1, 0);

/// The low 16 bits of the skip table's generation (an array lookup the verifier inlines).
#[inline(always)]
fn skip_gen() -> u16 {
    HTTP_SKIP_GEN.get(0).copied().unwrap_or(0) as u16
}

/// Whether process `tgid` is in the skip table.
#[inline(always)]
fn skipped(tgid: u32) -> bool {
    // SAFETY: read-only lookup.
    unsafe { HTTP_SKIP.get(tgid) }.is_some()
}

/// Ports the agent's configuration names (`PORT_INCLUDE` / `PORT_EXCLUDE`), filtering as
/// `HTTP_PORT_FILTER` says (socket hooks).
#[map(name = "HTTP_PORTS")]
static HTTP_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(MAX_PORTS, 0);

#[unsafe(no_mangle)]
static HTTP_PORT_FILTER: Global<u32> = Global::new(FILTER_NONE);

/// Whether the configuration's port lists keep a connection of port `port` (the server
/// side's local port, the client side's peer port): as the agent's own filter.
#[inline(always)]
fn port_wanted(port: u16) -> bool {
    let filter = HTTP_PORT_FILTER.load();
    if filter == FILTER_NONE {
        return true;
    }
    // SAFETY: read-only lookup.
    let mark = unsafe { HTTP_PORTS.get(port) }.copied().unwrap_or(0);
    mark != PORT_EXCLUDE && (filter != FILTER_INCLUDE || mark == PORT_INCLUDE)
}

/// Offsets in `struct sock_common` (include/net/sock.h; stable since Linux 4.x, checked
/// against the kernel's BTF by the verifier): `skc_daddr` (IPv4 peer) at 0, `skc_dport`
/// (network order) at 12, `skc_num` (local port) at 14, `skc_family` at 16, `skc_v6_daddr`
/// at 56.
const SK_DADDR: usize = 0;
const SK_DPORT: usize = 12;
const SK_NUM: usize = 14;
const SK_FAMILY: usize = 16;
const SK_V6_DADDR: usize = 56;
/// `pt_regs.cs` (offset 136): the low two bits are 3 for a user-mode frame.
const REG_CS: usize = 136;
/// `MSG_PEEK`: a peek reads bytes without consuming them.
const MSG_PEEK: i32 = 2;

/// Preferred entry, bytes sent: `tp_btf/sock_send_length` (`struct sock *sk, int ret, int
/// flags`), from `sock_sendmsg` inside `write`, `writev`, `sendto`, `sendmsg` and `sendfile`.
#[btf_tracepoint(function = "sock_send_length")]
pub fn http_sock_send(ctx: BtfTracePointContext) -> i32 {
    let sk: *mut core::ffi::c_void = ctx.arg(0);
    let ret: i32 = ctx.arg(1);
    on_sock(sk, ret, DIR_OUT);
    0
}

/// Bytes received: `tp_btf/sock_recv_length`, from `sock_recvmsg` inside `read`, `readv`,
/// `recvfrom` and `recvmsg`; peeks are skipped (the same bytes come again).
#[btf_tracepoint(function = "sock_recv_length")]
pub fn http_sock_recv(ctx: BtfTracePointContext) -> i32 {
    let sk: *mut core::ffi::c_void = ctx.arg(0);
    let ret: i32 = ctx.arg(1);
    let flags: i32 = ctx.arg(2);
    if flags & MSG_PEEK == 0 {
        on_sock(sk, ret, DIR_IN);
    }
    0
}

/// The end of a followed socket: `tp_btf/inet_sock_set_state` (`struct sock *sk, int
/// oldstate, int newstate`) to `TCP_CLOSE`.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn http_sock_state(ctx: BtfTracePointContext) -> i32 {
    let sk: *mut core::ffi::c_void = ctx.arg(0);
    let new_state: i32 = ctx.arg(2);
    if new_state != TCP_CLOSE {
        return 0;
    }
    let Some(c) = HTTP_SOCKS.of(sk) else {
        return 0;
    };
    // SAFETY: the socket's own storage value; plain loads and one store.
    let conn = unsafe { *c };
    if conn.proto != PROTO_HTTP {
        return 0;
    }
    // SAFETY: as above; a socket closes once, this stops a second record.
    unsafe { (*c).proto = PROTO_OTHER };
    emit_header(&Rec::close(conn.tgid, 0, &conn));
    0
}

/// A read or write family syscall: its code and direction.
#[inline(always)]
fn data_syscall(nr: u64) -> Option<(u8, u8)> {
    Some(match nr {
        nr::READ => (SC_READ, DIR_IN),
        nr::READV => (SC_READV, DIR_IN),
        nr::RECVFROM => (SC_RECVFROM, DIR_IN),
        nr::RECVMSG => (SC_RECVMSG, DIR_IN),
        nr::WRITE => (SC_WRITE, DIR_OUT),
        nr::WRITEV => (SC_WRITEV, DIR_OUT),
        nr::SENDTO => (SC_SENDTO, DIR_OUT),
        nr::SENDMSG => (SC_SENDMSG, DIR_OUT),
        nr::SENDFILE => (SC_SENDFILE, DIR_OUT),
        _ => return None,
    })
}

/// `ret` bytes moved on socket `sk` in `direction`, inside a syscall of the current task.
#[inline(always)]
fn on_sock(sk: *mut core::ffi::c_void, ret: i32, direction: u8) {
    if ret <= 0 {
        return;
    }
    // SAFETY: `sk` is the tracepoint's BTF-typed `struct sock *`; the verifier checks the
    // offset against `struct sock_common` and the load faults safely.
    let family = unsafe { core::ptr::read_volatile(sk.cast::<u8>().add(SK_FAMILY).cast::<u16>()) };
    if family != AF_INET && family != AF_INET6 {
        return;
    }
    let Some(c) = HTTP_SOCKS.of_or_zeroed(sk) else {
        return;
    };
    // SAFETY: the socket's own storage value: plain loads and stores (two CPUs moving bytes
    // on one socket at once may both classify it; they write the same values).
    let mut conn = unsafe { *c };
    if conn.proto == PROTO_OTHER {
        return;
    }
    // The agent learns a process's name from its first connection's first record, so it may
    // put the process in the skip table after some of its connections became HTTP: those
    // look it up again once the table changed (the generation is read before the table, and
    // the agent writes it after).
    if conn.proto == PROTO_HTTP {
        let generation = skip_gen();
        if conn.skip_gen != generation {
            if skipped(conn.tgid) {
                // SAFETY: as above.
                unsafe { (*c).proto = PROTO_OTHER };
                // The agent drops what it holds of the connection.
                emit_header(&Rec::close(conn.tgid, 0, &conn));
                return;
            }
            // SAFETY: as above.
            unsafe { (*c).skip_gen = generation };
        }
    }
    // The syscall and its arguments, from the task's saved user registers (kernel-internal
    // socket I/O — no user frame — and io_uring are skipped).
    let regs = user_regs();
    // SAFETY: a `struct pt_regs *` the verifier knows by type; plain loads (faulting safely
    // through the untrusted cast).
    let (cs, nr) = unsafe {
        (
            core::ptr::read_volatile(regs.add(REG_CS / 8)),
            core::ptr::read_volatile(regs.add(REG_ORIG_AX as usize / 8)),
        )
    };
    if cs & 3 != 3 {
        return;
    }
    let Some((syscall, dir)) = data_syscall(nr) else {
        return;
    };
    if dir != direction {
        return;
    }
    // SAFETY: as above.
    let a = unsafe { args_direct(regs) };
    let Some(bufs) = user_buffers(a, syscall) else {
        return;
    };
    let moved = ret as u64;
    let new_http = conn.proto == PROTO_UNKNOWN;
    if new_http {
        if syscall == SC_SENDFILE {
            return;
        }
        let Some(w) = first_word(&bufs, moved) else {
            return;
        };
        // The process is looked up once per socket (it is kept in the storage): the agent's
        // own sockets are marked not-HTTP, and every record carries the first process's tgid.
        let Some(tgid) = caller() else {
            // SAFETY: as above.
            unsafe { (*c).proto = PROTO_OTHER };
            return;
        };
        // A request's first bytes received make this the server side, sent the client side;
        // a status line the other way round (a connection seen from mid-stream).
        let role = match (looks_like_http(w), &w == b"HTTP", direction) {
            (false, _, _) => None,
            (true, false, DIR_IN) | (true, true, DIR_OUT) => Some(ROLE_SERVER),
            _ => Some(ROLE_CLIENT),
        };
        let generation = skip_gen();
        let skip = skipped(tgid);
        let Some(role) = role.filter(|r| !skip && port_wanted(endpoint(sk, *r, family).0)) else {
            // SAFETY: as above.
            unsafe { (*c).proto = PROTO_OTHER };
            return;
        };
        conn = ConnInfo {
            id: new_conn_id(),
            tgid,
            role,
            proto: PROTO_HTTP,
            skip_gen: generation,
            last_out_ns: 0,
        };
        // SAFETY: as above.
        unsafe { *c = conn };
    }
    let (port, peer) = endpoint(sk, conn.role, family);
    if new_http {
        sock_start(&conn, a.di as u32, family, port, peer);
    }
    let out = capture(
        &Rec {
            aux: u32::from(port),
            family,
            peer,
            ..Rec::data(conn.tgid, a.di as u32, &conn, direction, syscall, moved)
        },
        &bufs,
    );
    if let Some(ts) = out {
        // SAFETY: as above.
        unsafe { (*c).last_out_ns = ts };
    }
}

/// The current task's saved user registers (a BTF-typed `struct pt_regs *`). With the kernel
/// globals set, one helper call instead of two: the task's kernel stack plus the learned
/// offset, cast to `pt_regs` with the kfunc `bpf_rdonly_cast` (the verifier turns the call into
/// a register move; loads through the result cannot fault the kernel). Otherwise, and the
/// first time (to learn the offset), `bpf_task_pt_regs`.
#[inline(always)]
fn user_regs() -> *const u64 {
    // SAFETY: no preconditions; the current task, BTF-typed.
    let task = unsafe { bpf_get_current_task_btf() };
    let field = HTTP_TASK_STACK.load();
    if field != 0
        && let Some(at) = HTTP_REGS_AT.get_ptr_mut(0)
    {
        // SAFETY: `field` is a read-only constant: the offset of `task_struct.stack` (a
        // pointer), checked by the verifier against the kernel's BTF.
        let stack = unsafe {
            core::ptr::read_volatile(task.cast::<u8>().add(field as usize).cast::<u64>())
        };
        // SAFETY: the array's own value.
        let off = unsafe { *at };
        if off != 0 {
            // SAFETY: the kfunc only retypes the address (see above).
            return unsafe { rdonly_cast(stack.wrapping_add(off), HTTP_PT_REGS_TYPE.load()) };
        }
        // SAFETY: as below.
        let regs = unsafe { bpf_task_pt_regs(task) } as u64;
        let d = regs.wrapping_sub(stack);
        if stack != 0 && d > 0 && d < 1 << 20 {
            // SAFETY: the array's own value; every CPU writes the same.
            unsafe { *at = d };
        }
        return regs as *const u64;
    }
    // SAFETY: the current task; the result is its user pt_regs (BTF-typed).
    unsafe { bpf_task_pt_regs(task) as *const u64 }
}

/// The kfunc `void *bpf_rdonly_cast(const void *obj, u32 btf_id)`: compiled as a helper call
/// with a number no helper has, rewritten by the agent before loading (see
/// `agent_common::http::RDONLY_CAST_PLACEHOLDER`).
///
/// # Safety
/// Only on a path the verifier sees only when the agent rewrote the call.
#[inline(always)]
unsafe fn rdonly_cast(addr: u64, type_id: u32) -> *const u64 {
    // SAFETY: a call by number, as aya-ebpf's helpers are made.
    unsafe {
        let f: unsafe extern "C" fn(u64, u32) -> *const u64 =
            core::mem::transmute(RDONLY_CAST_PLACEHOLDER as usize);
        f(addr, type_id)
    }
}

/// The endpoint data records of socket `sk` (of address family `family`) carry: the server
/// side's local port, or the client side's peer port and address (IPv4: the 4 bytes of the
/// address in network order, first in memory; IPv6: its 16 bytes).
#[inline(always)]
fn endpoint(sk: *mut core::ffi::c_void, role: u8, family: u16) -> (u16, [u64; 2]) {
    let base = sk.cast::<u8>();
    // SAFETY: BTF-typed loads from `struct sock_common` (see the offsets above).
    unsafe {
        if role == ROLE_SERVER {
            return (
                core::ptr::read_volatile(base.add(SK_NUM).cast::<u16>()),
                [0; 2],
            );
        }
        let port = u16::from_be(core::ptr::read_volatile(base.add(SK_DPORT).cast::<u16>()));
        if family == AF_INET {
            let a = core::ptr::read_volatile(base.add(SK_DADDR).cast::<u32>());
            (port, [u64::from(a), 0])
        } else {
            (
                port,
                [
                    core::ptr::read_volatile(base.add(SK_V6_DADDR).cast::<u64>()),
                    core::ptr::read_volatile(base.add(SK_V6_DADDR + 8).cast::<u64>()),
                ],
            )
        }
    }
}

/// The start record of a socket found to carry HTTP, from its [`endpoint`]: the server
/// side's local port (`EV_SERVER`), or the client side's peer as a `sockaddr_in`/
/// `sockaddr_in6` (`EV_CONNECT`).
#[inline(always)]
fn sock_start(conn: &ConnInfo, fd: u32, family: u16, port: u16, peer: [u64; 2]) {
    let mut rec = Rec::control(EV_SERVER, conn.tgid, fd, conn.id, conn.role);
    if conn.role == ROLE_SERVER {
        rec.aux = u32::from(port);
        emit_header(&rec);
        return;
    }
    rec.kind = EV_CONNECT;
    // sockaddr_in: family, port (network order), address; sockaddr_in6: family, port,
    // flowinfo, address at 8.
    let mut sa = [0u8; 32];
    sa[0..2].copy_from_slice(&family.to_ne_bytes());
    sa[2..4].copy_from_slice(&port.to_be_bytes());
    let sa_len: u16 = if family == AF_INET {
        sa[4..8].copy_from_slice(&(peer[0] as u32).to_ne_bytes());
        16
    } else {
        sa[8..16].copy_from_slice(&peer[0].to_ne_bytes());
        sa[16..24].copy_from_slice(&peer[1].to_ne_bytes());
        28
    };
    emit_control(&rec, Some((&sa, sa_len)));
}

/// The caller's tgid, or None for the agent itself.
#[inline(always)]
fn caller() -> Option<u32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    (tgid != HTTP_SELF_TGID.load()).then_some(tgid)
}

#[inline(always)]
fn on_data(a: Args, moved: u64, syscall: u8, direction: u8) {
    let Some(tgid) = caller() else {
        return;
    };
    let fd = a.di as u32;
    let key = conn_key(tgid, fd);
    // One lookup: the value is copied, and stored into through the same pointer below (the
    // element stays valid while the program runs; a concurrent close may delete it and a new
    // connection take its place, so each store checks the id first).
    let Some(c) = HTTP_CONNS.get_ptr_mut(key) else {
        return;
    };
    // SAFETY: a map value of the lookup above; a copy of plain integers.
    let conn = unsafe { *c };
    if conn.proto == PROTO_OTHER {
        return;
    }
    let Some(bufs) = user_buffers(a, syscall) else {
        return;
    };
    if conn.proto == PROTO_UNKNOWN && syscall != SC_SENDFILE {
        let proto = match first_word(&bufs, moved) {
            Some(w) if looks_like_http(w) => PROTO_HTTP,
            Some(_) => PROTO_OTHER,
            None => PROTO_UNKNOWN,
        };
        // SAFETY: a plain store into the map value; races only with the same fd's close.
        unsafe {
            if (*c).id == conn.id {
                (*c).proto = proto;
            }
        }
        if proto == PROTO_OTHER {
            return;
        }
    }
    let out = capture(
        &Rec::data(tgid, fd, &conn, direction, syscall, moved),
        &bufs,
    );
    if let Some(ts) = out {
        // SAFETY: as above.
        unsafe {
            if (*c).id == conn.id {
                (*c).last_out_ns = ts;
            }
        }
    }
}

/// Where a read or write's bytes are in user memory: one buffer, or an iovec array.
struct Bufs {
    first: u64,
    first_len: u64,
    iov: u64,
    iovcnt: u64,
}

/// The user buffers of syscall `syscall` with arguments `a` (None: a vectored call with no
/// iovec). `sendfile` has none (only a byte count is sent).
#[inline(always)]
fn user_buffers(a: Args, syscall: u8) -> Option<Bufs> {
    let (buf, buf_len, iov, iovcnt) = match syscall {
        SC_SENDFILE => (0, 0, 0, 0),
        SC_READV | SC_WRITEV => (0, 0, a.si, a.dx),
        SC_RECVMSG | SC_SENDMSG => {
            // struct user_msghdr: msg_iov at offset 16, msg_iovlen at 24 (64-bit).
            let msg = a.si;
            // SAFETY: bpf_probe_read_user checks the address.
            let [iov, iovlen] = unsafe { read_user::<[u64; 2]>(msg + 16) }.unwrap_or([0, 0]);
            (0, 0, iov, iovlen)
        }
        _ => (a.si, a.dx, 0, 0),
    };
    if iov != 0 {
        if iovcnt == 0 {
            return None;
        }
        let (first, first_len) = iovec_at(iov);
        return Some(Bufs {
            first,
            first_len,
            iov,
            iovcnt,
        });
    }
    Some(Bufs {
        first: buf,
        first_len: buf_len,
        iov: 0,
        iovcnt: 0,
    })
}

/// The first four bytes moved, when there are four.
#[inline(always)]
fn first_word(b: &Bufs, moved: u64) -> Option<[u8; 4]> {
    if b.first_len < 4 || moved < 4 {
        return None;
    }
    // SAFETY: bpf_probe_read_user checks the address.
    Some(unsafe { read_user::<[u8; 4]>(b.first) }.unwrap_or([0; 4]))
}

/// Outputs the record `rec` with a bounded prefix of the bytes moved (none for `sendfile`).
/// Returns the time of the record that now ends the bytes sent, when `rec` sends (its own, or
/// the one a `sendfile` joined); the caller keeps it as the connection's `last_out_ns`.
#[inline(always)]
fn capture(rec: &Rec, b: &Bufs) -> Option<u64> {
    if rec.syscall == SC_SENDFILE {
        if let Some(ts) = extend_response(rec) {
            return Some(ts);
        }
        emit_header(rec);
        return None;
    }
    let moved = rec.bytes;
    let mut cap = HTTP_CAPTURE.load() as u64;
    if cap > MAX_CAPTURE as u64 {
        cap = MAX_CAPTURE as u64;
    }
    if cap > moved {
        cap = moved;
    }
    let Some(batch) = batch_take() else {
        count_lost(1);
        return None;
    };
    // The time is read as soon as the batch is held, before the copy: a program that
    // interrupts this one from here on (a socket closed from softirq) finds the batch in use,
    // sends its record alone with a later time, and the agent, handing records out by time,
    // puts it after this one. (Read before taking the batch, a flush landing in between
    // would leave this older record out of what it wrote.)
    // SAFETY: no preconditions.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let at = batch_slot(batch);
    // SAFETY: held batch; `at` is below BATCH_MAX.
    let dst = unsafe { (*batch).buf.as_mut_ptr().add(at) };
    let mut off = copy_into(dst, 0, b.first, b.first_len, cap);
    if b.iov != 0 {
        // The bytes continue in the next iovecs (a vectored call fills them in order).
        let mut i = 1u64;
        while i < MAX_IOV {
            if off >= cap || i >= b.iovcnt {
                break;
            }
            let (p, l) = iovec_at(b.iov + 16 * i);
            off = copy_into(dst, off, p, l, cap);
            i += 1;
        }
    }
    if off > MAX_CAPTURE as u64 {
        off = MAX_CAPTURE as u64;
    }
    let len = HEADER_BYTES + off as usize;
    // SAFETY: the slot has room for the header and is 8-byte aligned.
    unsafe { write_header(dst, rec, off as u16, len as u32, ts_ns) };
    batch_commit(batch, at, len);
    batch_release(batch);
    (rec.direction == DIR_OUT).then_some(ts_ns)
}

/// A server's `sendfile` right after its write on the same connection (a static file: the
/// head written, the body sent from the file) adds its bytes and time to that write's record
/// when it is still the last of this CPU's batch, instead of a record of its own. The decoder
/// sees the same bytes (the head's, then the body's, uncopied either way) ending at the same
/// time; a response's record times matter only as its end. Not for a client: its request's
/// first record's time is the request's start. Only the connection's last record of bytes
/// sent is joined (its time is `rec.last_out_ns`): a thread moved to another CPU between the
/// write and the `sendfile` finds there an older record of the same connection, which must
/// not take the body. Returns the extended record's new time.
#[inline(always)]
fn extend_response(rec: &Rec) -> Option<u64> {
    if rec.role != ROLE_SERVER || rec.last_out_ns == 0 {
        return None;
    }
    let b = batch_take()?;
    // SAFETY: held batch; `last` is masked below BATCH_MAX and a header fits after it.
    let done = unsafe {
        let h = (*b)
            .buf
            .as_mut_ptr()
            .add((*b).last as usize & (BATCH_MAX - 1))
            .cast::<EventHeader>();
        let same = (*b).records > 0
            && (*h).conn_id == rec.conn_id
            && (*h).tgid == rec.tgid
            && (*h).kind == EV_DATA
            && (*h).direction == DIR_OUT
            && (*h).ts_ns == rec.last_out_ns;
        if same {
            let ts = bpf_ktime_get_ns();
            (*h).bytes += rec.bytes;
            (*h).ts_ns = ts;
            Some(ts)
        } else {
            None
        }
    };
    batch_release(b);
    done
}

/// Copies up to `cap - off` bytes of the user buffer `src` (length `len`) to payload offset
/// `off` of the record at `dst` (a batch slot: `BATCH_BUF - BATCH_MAX` bytes at least).
/// Returns the new offset (unchanged when the copy faults).
#[inline(always)]
fn copy_into(dst: *mut u8, off: u64, src: u64, len: u64, cap: u64) -> u64 {
    if off >= cap || src == 0 {
        return off;
    }
    let mut n = cap - off;
    if n > len {
        n = len;
    }
    if n == 0 {
        return off;
    }
    // Masks the verifier can follow: offset < MAX_CAPTURE, length <= MAX_CAPTURE, so the copy
    // ends within HEADER_BYTES + 2 * MAX_CAPTURE of the slot.
    let o = (off as usize) & (MAX_CAPTURE - 1);
    let mut m = n as usize;
    if m > MAX_CAPTURE {
        m = MAX_CAPTURE;
    }
    // SAFETY: `HEADER_BYTES + o + m` fits the slot; the helper faults safely on a bad user
    // address.
    let rc = unsafe {
        raw_read_user(
            dst.add(HEADER_BYTES + o).cast(),
            m as u32,
            src as *const core::ffi::c_void,
        )
    };
    if rc != 0 {
        return off;
    }
    off + m as u64
}

/// A fresh connection id: the time in ns, shifted left by 12 bits, with the CPU number in the
/// low 12 bits. The time alone is not unique: two threads of one process starting
/// connections on two CPUs read the same nanosecond now and then (a few times a minute at
/// 12k new connections/s per CPU), and the second connection then replaced the first in the
/// agent. One CPU never reads the same nanosecond twice. (Wraps after 2^52 ns, 52 days: an
/// id repeats only if a connection of that exact nanosecond and CPU is still followed.)
#[inline(always)]
fn new_conn_id() -> u64 {
    // SAFETY: no preconditions.
    let (ns, cpu) = unsafe { (bpf_ktime_get_ns(), bpf_get_smp_processor_id()) };
    (ns << 12) | u64::from(cpu & 0xfff)
}

/// Starts following a connection: a fresh id ([`new_conn_id`]) under `(tgid, fd)`.
#[inline(always)]
fn follow(tgid: u32, fd: u32, role: u8) -> u64 {
    let id = new_conn_id();
    let info = ConnInfo {
        id,
        tgid,
        role,
        proto: PROTO_UNKNOWN,
        skip_gen: 0,
        last_out_ns: 0,
    };
    let _ = HTTP_CONNS.insert(conn_key(tgid, fd), info, 0);
    id
}

/// `accept(fd, ..)` / `accept4(fd, ..)` returned a new fd.
#[inline(always)]
fn on_accept(a: Args, ret: i64) {
    if ret < 0 {
        return;
    }
    let Some(tgid) = caller() else {
        return;
    };
    let fd = ret as u32;
    let conn_id = follow(tgid, fd, ROLE_SERVER);
    emit_header(&Rec {
        aux: a.di as u32,
        ..Rec::control(EV_ACCEPT, tgid, fd, conn_id, ROLE_SERVER)
    });
}

/// `connect(fd, addr, addrlen)`: 0, or -EINPROGRESS (115) for a non-blocking socket.
#[inline(always)]
fn on_connect(a: Args, ret: i64) {
    if ret != 0 && ret != -115 {
        return;
    }
    let Some(tgid) = caller() else {
        return;
    };
    let fd = a.di as u32;
    let addr = a.si;
    // sockaddr_in6 is 28 bytes; a sockaddr_in (16) may sit at the end of a mapping.
    let mut sa = [0u8; 32];
    let mut sa_len = 0u16;
    // SAFETY: bpf_probe_read_user checks the address.
    if let Ok(a) = unsafe { read_user::<[u8; 28]>(addr) } {
        sa[..28].copy_from_slice(&a);
        sa_len = 28;
    } else if let Ok(a) = unsafe { read_user::<[u8; 16]>(addr) } {
        sa[..16].copy_from_slice(&a);
        sa_len = 16;
    }
    // Only AF_INET (2) / AF_INET6 (10) peers are followed (not unix sockets of e.g. syslog
    // or D-Bus clients).
    let family = u16::from_ne_bytes([sa[0], sa[1]]);
    if family != AF_INET && family != AF_INET6 {
        return;
    }
    let conn_id = follow(tgid, fd, ROLE_CLIENT);
    let rec = Rec::control(EV_CONNECT, tgid, fd, conn_id, ROLE_CLIENT);
    emit_control(&rec, Some((&sa, sa_len)));
}

/// `close(fd)`: the end of a followed connection.
#[inline(always)]
fn on_close(a: Args) {
    let Some(tgid) = caller() else {
        return;
    };
    let fd = a.di as u32;
    let key = conn_key(tgid, fd);
    // SAFETY: copied out before the delete below.
    let Some(conn) = (unsafe { HTTP_CONNS.get(key) }).copied() else {
        return;
    };
    let _ = HTTP_CONNS.remove(key);
    emit_header(&Rec::close(tgid, fd, &conn));
}

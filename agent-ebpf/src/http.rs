//! `http` probe, kernel half.
//!
//! Hooks (tracepoints, see include/trace/events/syscalls.h; argument `i` of a
//! `syscalls:sys_enter_*` record is at offset `16 + 8 * i`, `ret` of `sys_exit_*` at 16):
//! - `sys_{enter,exit}_{accept,accept4,connect}`: the returned/connected fd becomes a followed
//!   connection in `HTTP_CONNS` with a fresh id, so a reused fd is a new connection;
//! - `sys_enter_{read,readv,recvfrom,recvmsg,write,writev,sendto,sendmsg,sendfile64}` remember
//!   the buffer (or iovec array) of a followed connection per thread; `sys_exit_*` copies a
//!   bounded prefix of the bytes actually moved (across up to 8 iovecs) into a per-CPU scratch
//!   record and outputs exactly its used length to the `HTTP_EVENTS` ring buffer;
//! - `sys_enter_close` ends the connection.
//!
//! Cost: a thread of an untraced fd pays one hash lookup per read/write. A connection whose
//! first bytes are not an HTTP method or status line is marked `PROTO_OTHER` and costs one
//! lookup per syscall thereafter. Reserve failures count in `HTTP_LOST` (per CPU). Records are
//! submitted without waking the agent (it drains every few ms) until the ring is 1/4 full.
use agent_common::http::{
    ConnInfo, DIR_IN, DIR_OUT, EV_ACCEPT, EV_CLOSE, EV_CONNECT, EV_DATA, EventHeader, HEADER_BYTES,
    MAX_CAPTURE, MAX_CONNS, MAX_INFLIGHT, PROTO_HTTP, PROTO_OTHER, PROTO_UNKNOWN, RING_BYTES,
    ROLE_CLIENT, ROLE_SERVER, SC_READ, SC_READV, SC_RECVFROM, SC_RECVMSG, SC_SENDFILE, SC_SENDMSG,
    SC_SENDTO, SC_WRITE, SC_WRITEV,
};
use aya_ebpf::{
    EbpfContext as _, Global,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::bpf_probe_read_user as raw_read_user,
    },
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};

#[unsafe(no_mangle)]
static HTTP_SELF_TGID: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static HTTP_CAPTURE: Global<u32> = Global::new(1024);

#[map(name = "HTTP_EVENTS")]
static HTTP_EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

#[map(name = "HTTP_LOST")]
static HTTP_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "HTTP_CONNS")]
static HTTP_CONNS: LruHashMap<u64, ConnInfo> = LruHashMap::with_max_entries(MAX_CONNS, 0);

/// What a thread's syscall in flight will need at its exit.
#[repr(C)]
#[derive(Clone, Copy)]
struct Inflight {
    conn_id: u64,
    /// User buffer and its length (plain calls), or the iovec array and its count (vectored
    /// calls, `iov != 0`).
    buf: u64,
    buf_len: u64,
    iov: u64,
    iovcnt: u64,
    fd: u32,
    /// accept: the listening fd.
    aux: u32,
    syscall: u8,
    direction: u8,
    role: u8,
    proto: u8,
    addr_len: u32,
    /// connect: the `struct sockaddr` (sockaddr_in6 is 28 bytes).
    addr: [u8; 32],
}

#[map(name = "HTTP_INFLIGHT")]
static HTTP_INFLIGHT: LruHashMap<u64, Inflight> = LruHashMap::with_max_entries(MAX_INFLIGHT, 0);

/// Argument `i` of a `syscalls:sys_enter_*` record (direct context read, no helper call).
#[inline(always)]
fn arg(ctx: &TracePointContext, i: usize) -> u64 {
    // SAFETY: the syscalls tracepoint record holds up to six 8-byte args from offset 16; the
    // verifier checks the context access.
    unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(16 + 8 * i) as *const u64) }
}

/// `ret` of a `syscalls:sys_exit_*` record.
#[inline(always)]
fn ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: `long ret` is at offset 16 of every sys_exit record.
    unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(16) as *const i64) }
}

#[inline(always)]
fn conn_key(tgid: u32, fd: u32) -> u64 {
    ((tgid as u64) << 32) | fd as u64
}

/// Caller's (pid_tgid, tgid), or None for the agent itself.
#[inline(always)]
fn caller() -> Option<(u64, u32)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == HTTP_SELF_TGID.load() {
        return None;
    }
    Some((pid_tgid, tgid))
}

/// Submit flags: no wake-up of the agent per record (it drains on a short timer) unless the
/// ring is a quarter full, so a burst is drained at once.
#[inline(always)]
fn submit_flags() -> u64 {
    if HTTP_EVENTS.query(BPF_RB_AVAIL_DATA as u64) > (RING_BYTES / 4) as u64 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

fn count_lost() {
    if let Some(p) = HTTP_LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe { *p += 1 }
    }
}

/// Remembers a data syscall on a followed connection for its exit.
#[inline(always)]
fn enter_data(ctx: &TracePointContext, syscall: u8, direction: u8) -> u32 {
    let Some((pid_tgid, tgid)) = caller() else {
        return 0;
    };
    let fd = arg(ctx, 0) as u32;
    // SAFETY: read-only copy of a map value; a concurrent delete only makes it stale.
    let Some(conn) = (unsafe { HTTP_CONNS.get(conn_key(tgid, fd)) }) else {
        return 0;
    };
    if conn.proto == PROTO_OTHER {
        return 0;
    }
    let (buf, buf_len, iov, iovcnt) = match syscall {
        SC_READ | SC_WRITE | SC_RECVFROM | SC_SENDTO => (arg(ctx, 1), arg(ctx, 2), 0, 0),
        SC_READV | SC_WRITEV => (0, 0, arg(ctx, 1), arg(ctx, 2)),
        SC_RECVMSG | SC_SENDMSG => {
            // struct user_msghdr: msg_iov at offset 16, msg_iovlen at 24 (64-bit).
            let msg = arg(ctx, 1);
            // SAFETY: bpf_probe_read_user checks the address.
            let iov = unsafe { read_user::<u64>(msg + 16) }.unwrap_or(0);
            let iovlen = unsafe { read_user::<u64>(msg + 24) }.unwrap_or(0);
            (0, 0, iov, iovlen)
        }
        _ => (0, 0, 0, 0),
    };
    let rec = Inflight {
        conn_id: conn.id,
        buf,
        buf_len,
        iov,
        iovcnt,
        fd,
        aux: 0,
        syscall,
        direction,
        role: conn.role,
        proto: conn.proto,
        addr_len: 0,
        addr: [0; 32],
    };
    let _ = HTTP_INFLIGHT.insert(pid_tgid, rec, 0);
    0
}

#[inline(always)]
fn iovec_at(iov: u64) -> (u64, u64) {
    // SAFETY: bpf_probe_read_user checks the address; struct iovec is {void *base; size_t len}.
    let base = unsafe { read_user::<u64>(iov) }.unwrap_or(0);
    let len = unsafe { read_user::<u64>(iov + 8) }.unwrap_or(0);
    (base, len)
}

/// # Safety
/// `addr` is a user address; the helper faults safely.
#[inline(always)]
unsafe fn read_user<T>(addr: u64) -> Result<T, i32> {
    unsafe { aya_ebpf::helpers::bpf_probe_read_user(addr as *const T) }
}

fn header(kind: u8, tgid: u32, rec: &Inflight, bytes: u64) -> EventHeader {
    EventHeader {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        conn_id: rec.conn_id,
        bytes,
        tgid,
        fd: rec.fd,
        aux: rec.aux,
        captured: 0,
        kind,
        direction: rec.direction,
        role: rec.role,
        syscall: rec.syscall,
        _pad: [0; 6],
        // The thread name is only needed once per connection (a fallback for the process
        // name); data records skip the helper call.
        comm: if kind == EV_ACCEPT || kind == EV_CONNECT {
            bpf_get_current_comm().unwrap_or([0; 16])
        } else {
            [0; 16]
        },
    }
}

/// Writes a record that is only a header (connection start/end, sendfile byte counts).
#[inline(always)]
fn emit_header(hdr: EventHeader) {
    let Some(mut entry) = HTTP_EVENTS.reserve_bytes(HEADER_BYTES, 0) else {
        count_lost();
        return;
    };
    // SAFETY: the record is HEADER_BYTES long; unaligned write for safety.
    unsafe { core::ptr::write_unaligned(entry.as_mut_ptr().cast::<EventHeader>(), hdr) };
    entry.submit(submit_flags());
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

#[inline(always)]
fn exit_data(ctx: &TracePointContext) -> u32 {
    let Some((pid_tgid, tgid)) = caller() else {
        return 0;
    };
    // SAFETY: copied out before the delete below.
    let Some(rec) = (unsafe { HTTP_INFLIGHT.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = HTTP_INFLIGHT.remove(pid_tgid);
    let moved = ret(ctx);
    if moved <= 0 {
        return 0;
    }
    let moved = moved as u64;
    if rec.syscall == SC_SENDFILE {
        emit_header(header(EV_DATA, tgid, &rec, moved));
        return 0;
    }
    let mut cap = HTTP_CAPTURE.load() as u64;
    if cap > MAX_CAPTURE as u64 {
        cap = MAX_CAPTURE as u64;
    }
    if cap > moved {
        cap = moved;
    }
    let (first, first_len) = if rec.iov != 0 {
        if rec.iovcnt == 0 {
            return 0;
        }
        iovec_at(rec.iov)
    } else {
        (rec.buf, rec.buf_len)
    };
    if rec.proto == PROTO_UNKNOWN && first_len >= 4 && moved >= 4 {
        // SAFETY: bpf_probe_read_user checks the address.
        let w = unsafe { read_user::<[u8; 4]>(first) }.unwrap_or([0; 4]);
        let proto = if looks_like_http(w) {
            PROTO_HTTP
        } else {
            PROTO_OTHER
        };
        if let Some(c) = HTTP_CONNS.get_ptr_mut(conn_key(tgid, rec.fd)) {
            // SAFETY: a plain store into the map value; races only with the same fd's close.
            unsafe {
                if (*c).id == rec.conn_id {
                    (*c).proto = proto;
                }
            }
        }
        if proto == PROTO_OTHER {
            return 0;
        }
    }
    let Some(scratch) = HTTP_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: the per-CPU scratch value is only used by this CPU for this program run.
    let scratch = unsafe { &mut *scratch };
    let mut off = copy_into(scratch, 0, first, first_len, cap);
    if rec.iov != 0 {
        // The bytes continue in the next iovecs (a vectored call fills them in order).
        let mut i = 1u64;
        while i < MAX_IOV {
            if off >= cap || i >= rec.iovcnt {
                break;
            }
            let (b, l) = iovec_at(rec.iov + 16 * i);
            off = copy_into(scratch, off, b, l, cap);
            i += 1;
        }
    }
    let mut hdr = header(EV_DATA, tgid, &rec, moved);
    if off > MAX_CAPTURE as u64 {
        off = MAX_CAPTURE as u64;
    }
    hdr.captured = off as u16;
    // SAFETY: the scratch buffer starts with room for the header.
    unsafe { core::ptr::write_unaligned(scratch.as_mut_ptr().cast::<EventHeader>(), hdr) };
    let len = HEADER_BYTES + off as usize;
    if len > SCRATCH_BYTES {
        return 0;
    }
    // SAFETY: `len <= SCRATCH_BYTES`, the scratch array's size.
    let record = unsafe { core::slice::from_raw_parts(scratch.as_ptr(), len) };
    if HTTP_EVENTS.output::<[u8]>(record, submit_flags()).is_err() {
        count_lost();
    }
    0
}

/// Iovecs read per vectored call (a head and its body, or a few pipelined responses).
const MAX_IOV: u64 = 8;
/// Header plus twice the largest capture, so a bounded copy at a bounded offset always fits.
const SCRATCH_BYTES: usize = HEADER_BYTES + 2 * MAX_CAPTURE;

#[map(name = "HTTP_SCRATCH")]
static HTTP_SCRATCH: PerCpuArray<[u8; SCRATCH_BYTES]> = PerCpuArray::with_max_entries(1, 0);

/// Copies up to `cap - off` bytes of the user buffer `src` (length `len`) to payload offset
/// `off` of the scratch record. Returns the new offset (unchanged when the copy faults).
#[inline(always)]
fn copy_into(scratch: &mut [u8; SCRATCH_BYTES], off: u64, src: u64, len: u64, cap: u64) -> u64 {
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
    // ends within HEADER_BYTES + 2 * MAX_CAPTURE.
    let o = (off as usize) & (MAX_CAPTURE - 1);
    let mut m = n as usize;
    if m > MAX_CAPTURE {
        m = MAX_CAPTURE;
    }
    // SAFETY: `HEADER_BYTES + o + m <= SCRATCH_BYTES`; the helper faults safely on a bad user
    // address.
    let rc = unsafe {
        raw_read_user(
            scratch.as_mut_ptr().add(HEADER_BYTES + o).cast(),
            m as u32,
            src as *const core::ffi::c_void,
        )
    };
    if rc != 0 {
        return off;
    }
    off + m as u64
}

macro_rules! data_enter {
    ($name:ident, $sc:expr, $dir:expr) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            enter_data(&ctx, $sc, $dir)
        }
    };
}

data_enter!(http_enter_read, SC_READ, DIR_IN);
data_enter!(http_enter_readv, SC_READV, DIR_IN);
data_enter!(http_enter_recvfrom, SC_RECVFROM, DIR_IN);
data_enter!(http_enter_recvmsg, SC_RECVMSG, DIR_IN);
data_enter!(http_enter_write, SC_WRITE, DIR_OUT);
data_enter!(http_enter_writev, SC_WRITEV, DIR_OUT);
data_enter!(http_enter_sendto, SC_SENDTO, DIR_OUT);
data_enter!(http_enter_sendmsg, SC_SENDMSG, DIR_OUT);
data_enter!(http_enter_sendfile, SC_SENDFILE, DIR_OUT);

/// Exit of every data syscall above.
#[tracepoint]
pub fn http_exit_data(ctx: TracePointContext) -> u32 {
    exit_data(&ctx)
}

fn blank(fd: u32) -> Inflight {
    Inflight {
        conn_id: 0,
        buf: 0,
        buf_len: 0,
        iov: 0,
        iovcnt: 0,
        fd,
        aux: 0,
        syscall: 0,
        direction: 0,
        role: 0,
        proto: 0,
        addr_len: 0,
        addr: [0; 32],
    }
}

/// `accept(fd, ..)` / `accept4(fd, ..)`: remember the listening fd.
#[tracepoint]
pub fn http_enter_accept(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, _)) = caller() else {
        return 0;
    };
    let mut rec = blank(0);
    rec.aux = arg(&ctx, 0) as u32;
    rec.role = ROLE_SERVER;
    let _ = HTTP_INFLIGHT.insert(pid_tgid, rec, 0);
    0
}

/// `connect(fd, addr, addrlen)`: remember the fd and the peer address.
#[tracepoint]
pub fn http_enter_connect(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, _)) = caller() else {
        return 0;
    };
    let mut rec = blank(arg(&ctx, 0) as u32);
    rec.role = ROLE_CLIENT;
    let addr = arg(&ctx, 1);
    // SAFETY: bpf_probe_read_user checks the address.
    if let Ok(a) = unsafe { read_user::<[u8; 28]>(addr) } {
        rec.addr[..28].copy_from_slice(&a);
        rec.addr_len = 28;
    } else if let Ok(a) = unsafe { read_user::<[u8; 16]>(addr) } {
        rec.addr[..16].copy_from_slice(&a);
        rec.addr_len = 16;
    }
    let _ = HTTP_INFLIGHT.insert(pid_tgid, rec, 0);
    0
}

/// Exit of accept/accept4/connect: a new followed connection.
#[tracepoint]
pub fn http_exit_conn(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, tgid)) = caller() else {
        return 0;
    };
    // SAFETY: copied out before the delete below.
    let Some(mut rec) = (unsafe { HTTP_INFLIGHT.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = HTTP_INFLIGHT.remove(pid_tgid);
    let r = ret(&ctx);
    let kind = if rec.role == ROLE_SERVER {
        // accept returns the new fd.
        if r < 0 {
            return 0;
        }
        rec.fd = r as u32;
        EV_ACCEPT
    } else {
        // connect: 0, or -EINPROGRESS (115) for a non-blocking socket still connecting.
        if r != 0 && r != -115 {
            return 0;
        }
        EV_CONNECT
    };
    let family = u16::from_ne_bytes([rec.addr[0], rec.addr[1]]);
    // Only AF_INET (2) / AF_INET6 (10) peers are followed on the client side (not unix
    // sockets of e.g. the syslog or D-Bus clients).
    if kind == EV_CONNECT && family != 2 && family != 10 {
        return 0;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    rec.conn_id = now;
    let info = ConnInfo {
        id: now,
        role: rec.role,
        proto: PROTO_UNKNOWN,
        _pad: [0; 6],
    };
    let _ = HTTP_CONNS.insert(conn_key(tgid, rec.fd), info, 0);
    let hdr = header(kind, tgid, &rec, 0);
    if kind == EV_CONNECT {
        emit_addr(hdr, &rec);
    } else {
        emit_header(hdr);
    }
    0
}

#[inline(always)]
fn emit_addr(mut hdr: EventHeader, rec: &Inflight) {
    let Some(mut entry) = HTTP_EVENTS.reserve_bytes(HEADER_BYTES + 32, 0) else {
        count_lost();
        return;
    };
    hdr.captured = rec.addr_len as u16;
    let p = entry.as_mut_ptr();
    // SAFETY: the record is HEADER_BYTES + 32 bytes long.
    unsafe {
        core::ptr::write_unaligned(p.cast::<EventHeader>(), hdr);
        core::ptr::write_unaligned(p.add(HEADER_BYTES).cast::<[u8; 32]>(), rec.addr);
    }
    entry.submit(submit_flags());
}

/// `close(fd)`: the end of a followed connection.
#[tracepoint]
pub fn http_enter_close(ctx: TracePointContext) -> u32 {
    let Some((_, tgid)) = caller() else {
        return 0;
    };
    let fd = arg(&ctx, 0) as u32;
    let key = conn_key(tgid, fd);
    // SAFETY: copied out before the delete below.
    let Some(conn) = (unsafe { HTTP_CONNS.get(key) }).copied() else {
        return 0;
    };
    let _ = HTTP_CONNS.remove(key);
    let mut rec = blank(fd);
    rec.conn_id = conn.id;
    rec.role = conn.role;
    emit_header(header(EV_CLOSE, tgid, &rec, 0));
    0
}

//! The `http` probe: socket I/O of every process, captured in the kernel and sent to the agent
//! through a ring buffer, where HTTP/1.x is decoded and timed.
//!
//! Kernel side (`agent-ebpf/src/http.rs`), two ways:
//! - socket hooks (`sock:sock_send_length`/`sock_recv_length`, Linux 6.4+): each TCP socket's
//!   state lives in socket-local storage ([`SOCKS_MAP`]) under a fresh id, so fd reuse is a
//!   new socket; the first bytes tell HTTP from other protocols and the side (server or
//!   client); `inet_sock_set_state` to `TCP_CLOSE` ends the connection;
//! - syscall exits (older kernels): `accept`/`accept4`/`connect` mark a `(tgid, fd)` as a
//!   connection with a fresh id in [`CONNS_MAP`], `close` ends it.
//!
//! Either way the read/write families copy a bounded prefix of the bytes of HTTP connections
//! into the ring buffers [`EVENTS_MAPS`]. User side (`agent/src/probes/http.rs`) decodes.

/// Ring buffers carrying batches of records, one per CPU up to [`RINGS`]: CPU `c` writes ring
/// `c % RINGS`, so CPUs do not share a ring's lock and positions (whose cache lines would move
/// between them at every record). Each ring record is one [`BatchHeader`] and the records one
/// CPU gathered ([`EventHeader`] + payload each, [`EventHeader::len`] bytes, the next at the
/// next multiple of 8): a ring record costs a lock and an interrupt-flag save and restore,
/// several times the cost of the rest of a small record here. The agent merges the CPUs'
/// records by [`EventHeader::ts_ns`].
pub const EVENTS_MAPS: [&str; RINGS] = [
    "HTTP_EVENTS_0",
    "HTTP_EVENTS_1",
    "HTTP_EVENTS_2",
    "HTTP_EVENTS_3",
    "HTTP_EVENTS_4",
    "HTTP_EVENTS_5",
    "HTTP_EVENTS_6",
    "HTTP_EVENTS_7",
];
/// Number of ring buffers (a power of two).
pub const RINGS: usize = 8;
/// Per-CPU `u64` counting records the ring buffer had no room for.
pub const LOST_MAP: &str = "HTTP_LOST";
/// LRU hash `(tgid << 32 | fd)` -> [`ConnInfo`] of the socket connections being followed
/// (syscall-exit hooks).
pub const CONNS_MAP: &str = "HTTP_CONNS";
/// Socket-local storage: [`ConnInfo`] of every TCP socket seen moving bytes (socket hooks).
pub const SOCKS_MAP: &str = "HTTP_SOCKS";
/// Hash `tgid -> 1` of processes the configuration filters out (socket hooks): their new
/// connections are never copied. Written by the agent.
pub const SKIP_MAP: &str = "HTTP_SKIP";
/// Entries of [`SKIP_MAP`]; further filtered-out processes are only dropped by the agent.
pub const MAX_SKIPPED: u32 = 1024;
/// Array of one `u32`, the generation of [`SKIP_MAP`] (socket hooks): the agent adds one after
/// each process it puts in the table. An HTTP connection whose [`ConnInfo::skip_gen`] differs
/// looks its process up in the table at its next bytes, so connections a process opened
/// before the agent learnt its name stop being copied too.
pub const SKIP_GEN_MAP: &str = "HTTP_SKIP_GEN";

/// Hash `port -> PORT_INCLUDE | PORT_EXCLUDE` of the ports named by `http.include_ports` and
/// `http.exclude_ports` (socket hooks): a connection whose port (the server side's local
/// port, the client side's peer port) the configuration filters out is marked not-HTTP at
/// its first bytes, as [`GLOBAL_PORT_FILTER`] says. Written by the agent before it attaches.
pub const PORTS_MAP: &str = "HTTP_PORTS";
/// Entries of [`PORTS_MAP`]; longer port lists are filtered by the agent alone.
pub const MAX_PORTS: u32 = 1024;
pub const PORT_INCLUDE: u8 = 1;
pub const PORT_EXCLUDE: u8 = 2;
/// Global: how the kernel filters by [`PORTS_MAP`]: [`FILTER_NONE`], [`FILTER_EXCLUDE`] (ports
/// marked [`PORT_EXCLUDE`] are filtered out) or [`FILTER_INCLUDE`] (also every port not marked
/// [`PORT_INCLUDE`]).
pub const GLOBAL_PORT_FILTER: &str = "HTTP_PORT_FILTER";
pub const FILTER_NONE: u32 = 0;
pub const FILTER_EXCLUDE: u32 = 1;
pub const FILTER_INCLUDE: u32 = 2;

/// Global (`EbpfLoader::override_global`): the agent's own tgid, never traced (its scrapes
/// would otherwise feed the probe).
pub const GLOBAL_SELF_TGID: &str = "HTTP_SELF_TGID";
/// Global: fill level in bytes of a ring buffer above which a record wakes the agent.
pub const GLOBAL_WAKE_BYTES: &str = "HTTP_WAKE_BYTES";
/// Global: bytes one CPU writes to its ring between two checks of its fill level.
pub const GLOBAL_CHECK_BYTES: &str = "HTTP_CHECK_BYTES";
/// Global: bytes a CPU gathers before it writes them to its ring as one batch (0: each record
/// at once; at most [`BATCH_MAX`]). The agent writes the rest out with [`FLUSH_PROGRAM`].
pub const GLOBAL_BATCH_BYTES: &str = "HTTP_BATCH_BYTES";
/// Largest batch threshold (a power of two: the kernel side masks offsets with it).
pub const BATCH_MAX: usize = 4096;
/// Program (`raw_tp`, never attached) the agent runs on each CPU with `BPF_PROG_TEST_RUN`
/// to write out that CPU's batch; it returns 1 when the batch is in use (run again).
pub const FLUSH_PROGRAM: &str = "http_flush";

/// Start of every ring record: the CPU that gathered the records that follow.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BatchHeader {
    pub cpu: u32,
    pub records: u16,
    /// [`BATCH_ALONE`] or 0.
    pub flags: u16,
}

/// [`BatchHeader::flags`]: one record written straight to the ring by a program that
/// interrupted another holding its CPU's batch (a socket closed from softirq). It precedes, in
/// the ring, that batch's records, some of which may be older: the agent orders it by its
/// time, not by its place in the ring.
pub const BATCH_ALONE: u16 = 1;

/// Size of [`BatchHeader`] in bytes.
pub const BATCH_HEADER_BYTES: usize = core::mem::size_of::<BatchHeader>();

/// Globals set from the kernel's BTF for the socket hooks' read of the caller's user registers
/// without a helper call: the byte offset of `stack` in `struct task_struct`, and the type id
/// of `struct pt_regs` (0 and 0: every read goes through `bpf_task_pt_regs`).
pub const GLOBAL_TASK_STACK: &str = "HTTP_TASK_STACK";
pub const GLOBAL_PT_REGS_TYPE: &str = "HTTP_PT_REGS_TYPE";
/// Placeholder helper number of the kfunc `bpf_rdonly_cast` in the compiled object: the agent
/// rewrites each `call` with it into a kfunc call (`BPF_PSEUDO_KFUNC_CALL`, the function's
/// id in the kernel's BTF) before the object is loaded. No helper has this number.
pub const RDONLY_CAST_PLACEHOLDER: u32 = 0x0b7f_ca57;

/// Global: bytes of each read/write copied into the event (clamped to [`MAX_CAPTURE`]).
pub const GLOBAL_CAPTURE: &str = "HTTP_CAPTURE";

/// Size in bytes of each ring buffer as compiled (a power of two multiple of the page size);
/// the agent sets the sizes from `http.ring_buffer_bytes` at load.
pub const RING_BYTES: u32 = 4 << 20;
/// Connections followed at once as compiled; the agent sets it from `http.max_connections`.
/// The least recently used is forgotten beyond this.
pub const MAX_CONNS: u32 = 16_384;
/// Largest capture per read/write (a power of two: the kernel side masks offsets with it).
pub const MAX_CAPTURE: usize = 4096;

/// [`EventHeader::kind`] values.
pub const EV_ACCEPT: u8 = 1;
pub const EV_CONNECT: u8 = 2;
pub const EV_DATA: u8 = 3;
pub const EV_CLOSE: u8 = 4;
/// Socket hooks: the first request bytes arrived on a socket (server side); `aux` = its
/// local port.
pub const EV_SERVER: u8 = 5;

/// [`EventHeader::direction`]: bytes the process received / sent.
pub const DIR_IN: u8 = 1;
pub const DIR_OUT: u8 = 2;

/// [`ConnInfo::role`]: accepted (server side) or connected (client side); with the socket
/// hooks, the side that received (server) or sent (client) the first request bytes.
pub const ROLE_SERVER: u8 = 1;
pub const ROLE_CLIENT: u8 = 2;

/// [`ConnInfo::proto`]: what the first bytes looked like (the in-kernel prefilter).
pub const PROTO_UNKNOWN: u8 = 0;
pub const PROTO_HTTP: u8 = 1;
pub const PROTO_OTHER: u8 = 2;

/// [`EventHeader::syscall`]: which syscall produced a data record.
pub const SC_READ: u8 = 1;
pub const SC_READV: u8 = 2;
pub const SC_RECVFROM: u8 = 3;
pub const SC_RECVMSG: u8 = 4;
pub const SC_WRITE: u8 = 5;
pub const SC_WRITEV: u8 = 6;
pub const SC_SENDTO: u8 = 7;
pub const SC_SENDMSG: u8 = 8;
pub const SC_SENDFILE: u8 = 9;

/// A followed connection.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    /// Unique per connection: the accept/connect time (ns since boot; with the socket hooks
    /// that of the socket's first bytes) shifted left by 12 bits, the CPU number in the low 12
    /// bits (the time alone repeats across CPUs).
    pub id: u64,
    /// The process that first moved bytes on it (socket hooks: the close comes from softirq).
    pub tgid: u32,
    pub role: u8,
    pub proto: u8,
    /// The low 16 bits of [`SKIP_GEN_MAP`] when the process was last found not skipped
    /// (socket hooks).
    pub skip_gen: u16,
    /// The time of the connection's last record of bytes sent (a server's `sendfile` joins
    /// only that record: the thread may have moved to another CPU since, whose batch may end
    /// with an older one of the same connection).
    pub last_out_ns: u64,
}

/// Header of every ring-buffer record; `captured` payload bytes follow it.
///
/// - `EV_ACCEPT`: `aux` = the listening fd (the agent resolves its port once per listener).
/// - `EV_CONNECT`: payload = the peer as a `struct sockaddr_in`/`sockaddr_in6` (`captured`
///   bytes; given to `connect`, or with the socket hooks built from the socket).
/// - `EV_SERVER`: `aux` = the socket's local port.
/// - `EV_DATA`: `bytes` = the syscall's return value (all bytes moved, also those not copied);
///   payload = the first `captured` bytes (none for `sendfile`). From the socket hooks it also
///   names the connection's endpoint, so that a connection whose start the agent no longer
///   holds is still labelled: `family` (`AF_INET`/`AF_INET6`; 0 from the syscall-exit hooks),
///   `aux` = the server side's local port or the client side's peer port, and on the client
///   side `comm` = the peer's address (4 bytes for IPv4, 16 for IPv6).
/// - `EV_CLOSE`: the fd was closed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// `bpf_ktime_get_ns` when the record was written: as the syscall returns (a data
    /// record's is read before its bytes are copied).
    pub ts_ns: u64,
    pub conn_id: u64,
    pub bytes: u64,
    pub tgid: u32,
    pub fd: u32,
    pub aux: u32,
    pub captured: u16,
    pub kind: u8,
    pub direction: u8,
    pub role: u8,
    pub syscall: u8,
    /// Address family of the endpoint in `aux` and `comm` (`EV_DATA` from the socket hooks).
    pub family: u16,
    /// Bytes of this record, header and payload (the next starts at the next multiple of 8).
    pub len: u32,
    /// Thread name (`comm`) of the caller, NUL-padded (`EV_ACCEPT`/`EV_CONNECT`/`EV_SERVER`);
    /// the client side's peer address in `EV_DATA` records with a `family`.
    pub comm: [u8; 16],
}

/// Size of [`EventHeader`] in bytes (records are header + payload).
pub const HEADER_BYTES: usize = core::mem::size_of::<EventHeader>();

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, only integers and byte arrays, explicit padding fields.
unsafe impl aya::Pod for ConnInfo {}

//! Reading the `http` probe's ring buffers (`agent_common::http::EVENTS_MAPS`).
//!
//! Each ring record is a batch: a [`BatchHeader`] naming the CPU that gathered it, then that
//! CPU's records in the order it wrote them ([`EventHeader::len`] bytes each, the next at the
//! next multiple of 8). A CPU keeps a partial batch until it is full, so before each drain
//! the agent has every CPU write out what it holds ([`Flush`], the kernel's `http_flush` run on
//! each CPU). Batches are split into per-CPU [`Streams`], and records are handed out oldest
//! first across the CPUs, up to a horizon a little in the past: a CPU may still be writing a
//! record older than another CPU's newest (see [`super::HOLD_BACK_NS`]).
use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use agent_common::http::{
    BATCH_ALONE, BATCH_HEADER_BYTES, BatchHeader, EventHeader, HEADER_BYTES, RINGS,
};
use aya::maps::{MapData, RingBuf};

/// CPU numbers above this in a batch header are taken for corruption.
const MAX_CPU: u32 = 1 << 16;

/// Offset of [`EventHeader::len`] in a record.
const LEN_OFFSET: usize = std::mem::offset_of!(EventHeader, len);

/// Records of one CPU taken from the rings and not yet handed out: `data[off..]`, each record
/// at a multiple of 8 (checked when it was added).
#[derive(Debug, Default)]
struct Stream {
    data: Vec<u8>,
    off: usize,
}

impl Stream {
    /// The record at `off` (checked by [`Streams::add`]).
    fn head(&self) -> Option<&[u8]> {
        let len = record_len(self.data.get(self.off..)?)?;
        self.data.get(self.off..self.off + len)
    }
}

/// The length of the record `rec` starts with, when its header is whole and says at least
/// a header and at most the bytes there are.
fn record_len(rec: &[u8]) -> Option<usize> {
    let len = u32::from_ne_bytes(rec.get(LEN_OFFSET..LEN_OFFSET + 4)?.try_into().ok()?) as usize;
    (HEADER_BYTES..=rec.len()).contains(&len).then_some(len)
}

/// A record's timestamp (its first 8 bytes).
fn ts_of(rec: &[u8]) -> u64 {
    rec.get(..8)
        .map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])))
}

fn align8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// The records taken from the rings, per CPU, and which CPU's next record is the oldest.
#[derive(Debug)]
pub struct Streams {
    cpus: Vec<Stream>,
    /// `(timestamp of the CPU's next record, CPU)` for every CPU holding records.
    heads: BinaryHeap<Reverse<(u64, u32)>>,
    /// Stand-alone records ([`BATCH_ALONE`]) by `(timestamp, arrival)`: each is handed out
    /// at its time among the CPUs' records, not at its place in the ring (ahead of older
    /// records of the batch its program interrupted).
    loose: BinaryHeap<Reverse<(u64, u64, Vec<u8>)>>,
    arrivals: u64,
    /// Bytes held; no more batches are taken beyond `limit`.
    held: usize,
    limit: usize,
    /// Records of batches that did not parse (counted as lost).
    malformed: u64,
}

impl Streams {
    /// Holds at most about `limit` bytes (plus one batch).
    pub fn new(limit: usize) -> Streams {
        Streams {
            cpus: Vec::new(),
            heads: BinaryHeap::new(),
            loose: BinaryHeap::new(),
            arrivals: 0,
            held: 0,
            limit,
            malformed: 0,
        }
    }

    /// Whether more batches may be taken.
    pub fn has_room(&self) -> bool {
        self.held < self.limit
    }

    /// Records lost to batches that did not parse.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Adds the records of one batch (a ring record). A batch that does not parse keeps the
    /// records before the fault; the rest count in [`Streams::malformed`]. Returns true for a
    /// stand-alone record ([`BATCH_ALONE`]): the CPU's older records may be in the ring's
    /// next batch.
    pub fn add(&mut self, batch: &[u8]) -> bool {
        let Some(head) = batch.get(..BATCH_HEADER_BYTES) else {
            self.malformed += 1;
            return false;
        };
        // SAFETY: BATCH_HEADER_BYTES bytes; BatchHeader is plain integers.
        let h: BatchHeader = unsafe { std::ptr::read_unaligned(head.as_ptr().cast()) };
        if h.cpu >= MAX_CPU {
            self.malformed += u64::from(h.records.max(1));
            return false;
        }
        let body = &batch[BATCH_HEADER_BYTES..];
        if h.flags & BATCH_ALONE != 0 {
            match record_len(body) {
                Some(len) if h.records == 1 => {
                    let rec = body[..len].to_vec();
                    self.held += rec.len();
                    self.loose.push(Reverse((ts_of(&rec), self.arrivals, rec)));
                    self.arrivals += 1;
                }
                _ => self.malformed += u64::from(h.records.max(1)),
            }
            return true;
        }
        let cpu = h.cpu as usize;
        if self.cpus.len() <= cpu {
            self.cpus.resize_with(cpu + 1, Stream::default);
        }
        let s = &mut self.cpus[cpu];
        let was_empty = s.off >= s.data.len();
        if was_empty {
            s.data.clear();
            s.off = 0;
        }
        // Copied first, then walked: the ring's bytes are read once, in order.
        let start = s.data.len();
        s.data.extend_from_slice(body);
        let mut end = 0;
        let mut good = 0u16;
        while good < h.records {
            let Some(len) = s.data[start..].get(end..).and_then(record_len) else {
                break;
            };
            end = (end + align8(len)).min(body.len());
            good += 1;
        }
        self.malformed += u64::from(h.records - good);
        // The next batch starts 8-byte aligned like the records.
        s.data.truncate(start + end);
        s.data.resize(align8(s.data.len()), 0);
        self.held += end;
        if was_empty && let Some(rec) = s.head() {
            self.heads.push(Reverse((ts_of(rec), h.cpu)));
        }
        false
    }

    /// Hands the oldest stand-alone record to `f` (after taking it out: a panic in `f` costs
    /// only it).
    fn hand_out_loose(&mut self, f: &mut impl FnMut(&[u8])) {
        if let Some(Reverse((_, _, rec))) = self.loose.pop() {
            self.held = self.held.saturating_sub(rec.len());
            f(&rec);
        }
    }

    /// Whether CPU `cpu` holds no record.
    pub fn is_empty(&self, cpu: usize) -> bool {
        self.cpus.get(cpu).is_none_or(|s| s.off >= s.data.len())
    }

    /// Hands up to `max` records no younger than `horizon` to `f`, oldest first. Returns how
    /// many. When a CPU's records run out, `refill(cpu, self)` may add its next batch.
    pub fn take(
        &mut self,
        horizon: u64,
        max: usize,
        mut f: impl FnMut(&[u8]),
        mut refill: impl FnMut(usize, &mut Streams),
    ) -> usize {
        let mut n = 0;
        while n < max {
            let next = self.heads.peek().map(|Reverse(h)| *h);
            // A stand-alone record goes before the CPUs' records strictly younger than it.
            if let Some(Reverse((l, _, _))) = self.loose.peek()
                && *l <= horizon
                && next.is_none_or(|(ts, _)| *l < ts)
            {
                self.hand_out_loose(&mut f);
                n += 1;
                continue;
            }
            let Some((ts, cpu)) = next else {
                break;
            };
            if ts > horizon {
                break;
            }
            self.heads.pop();
            let s = &mut self.cpus[cpu as usize];
            let Some(len) = s.head().map(<[u8]>::len) else {
                continue;
            };
            // The stream moves past the record before `f` sees it: a panic in `f` costs that
            // record, not the CPU's later ones.
            let at = s.off;
            let step = align8(len).min(s.data.len() - at);
            s.off += step;
            self.held = self.held.saturating_sub(step);
            if let Some(next) = s.head() {
                self.heads.push(Reverse((ts_of(next), cpu)));
            }
            f(&s.data[at..at + len]);
            n += 1;
            if s.off >= s.data.len() {
                s.data.clear();
                s.off = 0;
                refill(cpu as usize, self);
            }
        }
        // Bytes handed out leave the buffers once they are half of them.
        for s in &mut self.cpus {
            if s.off > 0 && s.off * 2 >= s.data.len() {
                s.data.drain(..s.off);
                s.off = 0;
            }
        }
        n
    }
}

/// The per-CPU ring buffers, one epoll instance over them (the kernel wakes it when a ring is
/// a quarter full), the records taken from them, and the flush of the CPUs' batches.
pub struct Rings {
    rings: Vec<RingBuf<MapData>>,
    /// Each CPU has a ring of its own (ring `c` is CPU `c`'s): a ring is then in time order,
    /// and a CPU's next batch is taken only once its records are handed out, so little is
    /// held and it stays in the cache. Otherwise a ring interleaves several CPUs' batches,
    /// each of which may hold older records than the one before, so all are taken.
    own_rings: bool,
    epoll: OwnedFd,
    streams: Streams,
    flush: Option<Flush>,
    /// The horizon of the last [`Rings::merge`] (lowered there when records were left in full
    /// rings).
    reached: u64,
}

impl Rings {
    /// Reads `rings`; holds at most `limit` bytes of records taken from them (the rings' own
    /// size: beyond, records wait in the rings, and the kernel counts what finds no room).
    /// `flush` writes out the CPUs' partial batches (None: the kernel sends every record at
    /// once).
    pub fn new(
        rings: Vec<RingBuf<MapData>>,
        cpus: usize,
        limit: usize,
        flush: Option<Flush>,
    ) -> std::io::Result<Rings> {
        // SAFETY: plain syscall; the descriptor is owned from here on.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        for r in &rings {
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLET) as u32,
                u64: 0,
            };
            // SAFETY: both descriptors are open; `ev` is a valid epoll_event.
            let rc = unsafe {
                libc::epoll_ctl(
                    epoll.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    r.as_raw_fd(),
                    &raw mut ev,
                )
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(Rings {
            own_rings: cpus <= rings.len(),
            rings,
            epoll,
            streams: Streams::new(limit),
            flush,
            reached: 0,
        })
    }

    /// Sleeps until the kernel wakes a ring (a quarter full) or `timeout` passes, and takes the
    /// wake-ups (edge-triggered: each is reported once). A signal ends the sleep early.
    pub fn wait(&self, timeout: Duration) -> std::io::Result<()> {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; RINGS];
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `evs` has room for RINGS events.
        let rc =
            unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), evs.as_mut_ptr(), RINGS as i32, ms) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Has every CPU write out its partial batch: afterwards every record older than the
    /// call is in a ring. False when a CPU's batch stayed in use through every try (its
    /// records may be older than others already in the rings).
    pub fn flush(&mut self) -> bool {
        self.flush.as_mut().is_none_or(Flush::run)
    }

    /// Records lost to batches that did not parse.
    pub fn malformed(&self) -> u64 {
        self.streams.malformed()
    }

    /// Hands up to `max` records no younger than `horizon` (kernel monotonic ns) to `f`,
    /// oldest first across the CPUs. Returns how many.
    pub fn merge(&mut self, horizon: u64, max: usize, f: impl FnMut(&[u8])) -> usize {
        self.reached = horizon;
        if self.own_rings {
            for (cpu, r) in self.rings.iter_mut().enumerate() {
                if self.streams.is_empty(cpu) {
                    take_batch(r, &mut self.streams);
                }
            }
            let rings = &mut self.rings;
            return self.streams.take(horizon, max, f, |cpu, streams| {
                if let Some(r) = rings.get_mut(cpu) {
                    take_batch(r, streams);
                }
            });
        }
        let mut horizon = horizon;
        for r in &mut self.rings {
            while self.streams.has_room() {
                let Some(item) = r.next() else {
                    break;
                };
                self.streams.add(&item);
            }
            if !self.streams.has_room() {
                // Records left in this ring may be older than those held: hand out only
                // what is older than its next batch's first record.
                if let Some(ts) = peek_ts(r) {
                    horizon = horizon.min(ts);
                }
            }
        }
        self.reached = horizon;
        self.streams.take(horizon, max, f, |_, _| {})
    }

    /// The horizon of the last merge: once a merge hands out fewer records than it may, every
    /// record older than this has been handed out.
    pub fn reached(&self) -> u64 {
        self.reached
    }
}

/// Moves the oldest batch of `ring` (if any) to `streams`, and after a stand-alone record
/// the next one too (it may hold older records).
fn take_batch(ring: &mut RingBuf<MapData>, streams: &mut Streams) {
    while let Some(item) = ring.next() {
        if !streams.add(&item) {
            break;
        }
    }
}

/// The timestamp of the first record of the oldest batch of `ring`, which stays in the ring.
fn peek_ts(ring: &mut RingBuf<MapData>) -> Option<u64> {
    let item = ring.next()?;
    let ts = item.get(BATCH_HEADER_BYTES..).map_or(0, ts_of);
    // Not dropped: dropping an item consumes it; forgotten, the ring returns it again.
    std::mem::forget(item);
    Some(ts)
}

/// `BPF_PROG_TEST_RUN` of the kernel's `http_flush` program on each online CPU.
pub struct Flush {
    prog: OwnedFd,
    warned: bool,
    /// The online CPUs, and when they were read: reading the list costs as much as a
    /// flush, so it is read again only after [`CPUS_EVERY`].
    cpus: Vec<u32>,
    cpus_at: Option<Instant>,
}

/// How long the list of online CPUs is reused. A CPU brought online since is flushed from the
/// next read on: until then its records wait for its batch to fill (ordering, not loss).
const CPUS_EVERY: Duration = Duration::from_secs(1);

/// `union bpf_attr` for `BPF_PROG_TEST_RUN` (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_F_TEST_RUN_ON_CPU: u32 = 1;

/// Runs of `http_flush` on a CPU whose batch is in use before giving up until the next drain
/// (a program holds it for microseconds).
const FLUSH_TRIES: usize = 1000;

impl Flush {
    /// Runs program `prog` (the loaded `http_flush`) on each CPU.
    pub fn new(prog: OwnedFd) -> Flush {
        Flush {
            prog,
            warned: false,
            cpus: Vec::new(),
            cpus_at: None,
        }
    }

    /// Runs the program once on `cpu`: its return value.
    pub fn run_on(&self, cpu: u32) -> std::io::Result<u32> {
        let mut attr = TestRunAttr {
            prog_fd: self.prog.as_raw_fd() as u32,
            flags: BPF_F_TEST_RUN_ON_CPU,
            cpu,
            ..TestRunAttr::default()
        };
        // SAFETY: `attr` is a valid bpf_attr for this command, of the size passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &raw mut attr,
                std::mem::size_of::<TestRunAttr>(),
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(attr.retval)
    }

    /// Returns false when a CPU's batch was in use through [`FLUSH_TRIES`] runs. A CPU gone
    /// offline keeps its batch until it is back, and a flush that fails is logged once: both
    /// count as done (waiting would not bring their records).
    fn run(&mut self) -> bool {
        if self.cpus_at.is_none_or(|at| at.elapsed() >= CPUS_EVERY) {
            match aya::util::online_cpus() {
                Ok(c) => {
                    self.cpus = c;
                    self.cpus_at = Some(Instant::now());
                }
                Err((path, e)) => {
                    self.warn(&format!("reading {path}: {e}"));
                    return true;
                }
            }
        }
        let mut done = true;
        for i in 0..self.cpus.len() {
            let cpu = self.cpus[i];
            let mut tries = 0;
            loop {
                match self.run_on(cpu) {
                    Ok(1) if tries < FLUSH_TRIES => {
                        tries += 1;
                        std::hint::spin_loop();
                    }
                    Ok(1) => {
                        done = false;
                        break;
                    }
                    Ok(_) => break,
                    // Gone offline since the list was read: its batch waits for its return.
                    Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
                    Err(e) => {
                        self.warn(&format!("running http_flush on CPU {cpu}: {e}"));
                        return true;
                    }
                }
            }
        }
        done
    }

    fn warn(&mut self, what: &str) {
        if !self.warned {
            self.warned = true;
            tracing::warn!(
                error = what,
                "http probe: the CPUs' partial batches could not be written out; their \
                 records wait until each batch fills"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of `payload.len()` payload bytes at time `ts` (only `ts_ns`, `len` and
    /// `captured` set).
    fn rec(ts: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; HEADER_BYTES + payload.len()];
        v[..8].copy_from_slice(&ts.to_ne_bytes());
        let len = (HEADER_BYTES + payload.len()) as u32;
        v[LEN_OFFSET..LEN_OFFSET + 4].copy_from_slice(&len.to_ne_bytes());
        v[HEADER_BYTES..].copy_from_slice(payload);
        v
    }

    /// A batch of CPU `cpu` holding `recs`, each padded to 8 bytes as the kernel does.
    fn batch(cpu: u32, recs: &[Vec<u8>]) -> Vec<u8> {
        batch_with(cpu, 0, recs)
    }

    /// A stand-alone record of CPU `cpu`, as a program interrupting the batch's holder writes
    /// it.
    fn alone(cpu: u32, r: Vec<u8>) -> Vec<u8> {
        batch_with(cpu, BATCH_ALONE, &[r])
    }

    fn batch_with(cpu: u32, flags: u16, recs: &[Vec<u8>]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&cpu.to_ne_bytes());
        v.extend_from_slice(&(recs.len() as u16).to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        for r in recs {
            v.extend_from_slice(r);
            v.resize(align8(v.len()), 0);
        }
        v
    }

    fn taken(s: &mut Streams, horizon: u64, max: usize) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        s.take(
            horizon,
            max,
            |r| out.push((ts_of(r), r[HEADER_BYTES..].to_vec())),
            |_, _| {},
        );
        out
    }

    #[test]
    fn a_cpu_whose_records_ran_out_is_refilled_before_the_next_oldest_is_chosen() {
        // CPU 0's second batch holds a record (15) older than CPU 1's next (20): it must come
        // first, so the batch is taken as soon as CPU 0's first one is handed out.
        let mut pending = vec![batch(0, &[rec(15, b"b")])];
        let mut s = Streams::new(1 << 20);
        s.add(&batch(0, &[rec(10, b"a")]));
        s.add(&batch(1, &[rec(20, b"c"), rec(30, b"d")]));
        let mut order = Vec::new();
        let mut refills = Vec::new();
        s.take(
            u64::MAX,
            100,
            |r| order.push(ts_of(r)),
            |cpu, st| {
                refills.push(cpu);
                if cpu == 0
                    && let Some(b) = pending.pop()
                {
                    st.add(&b);
                }
            },
        );
        assert_eq!(order, [10, 15, 20, 30]);
        assert_eq!(refills, [0, 0, 1]);
        assert!(s.is_empty(0) && s.is_empty(1) && s.is_empty(7));
    }

    #[test]
    fn a_stand_alone_record_comes_out_at_its_time_not_ahead_of_older_batched_records() {
        // CPU 0's program holding the batch (records 10, 20, later 40) was interrupted by one
        // that wrote record 30 straight to the ring, ahead of the batch.
        let mut s = Streams::new(1 << 20);
        assert!(s.add(&alone(0, rec(30, b"close"))));
        assert!(!s.add(&batch(0, &[rec(10, b"a"), rec(20, b"b"), rec(40, b"d")])));
        assert!(!s.add(&batch(1, &[rec(25, b"c")])));
        // Not past the horizon.
        let got = taken(&mut s, 28, 100);
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), [10, 20, 25]);
        let got = taken(&mut s, 100, 100);
        assert_eq!(
            got,
            [(30, b"close".to_vec()), (40, b"d".to_vec())],
            "the stand-alone record at its time"
        );
        assert_eq!(s.held, 0);
        // Alone with nothing else held, and counted by `max`.
        assert!(s.add(&alone(1, rec(50, b"x"))));
        assert!(s.add(&alone(0, rec(45, b"w"))));
        assert_eq!(taken(&mut s, 100, 1), [(45, b"w".to_vec())]);
        assert_eq!(taken(&mut s, 100, 5), [(50, b"x".to_vec())]);
        // A stand-alone batch that does not hold one whole record is counted, not kept.
        let mut bad = alone(0, rec(60, b"y"));
        bad.truncate(BATCH_HEADER_BYTES + 8);
        assert!(s.add(&bad));
        assert_eq!(s.malformed(), 1);
        assert!(taken(&mut s, 100, 5).is_empty());
    }

    #[test]
    fn records_of_all_cpus_come_out_oldest_first_up_to_the_horizon() {
        let mut s = Streams::new(1 << 20);
        s.add(&batch(0, &[rec(10, b"a"), rec(30, b"ccc"), rec(50, b"e")]));
        s.add(&batch(3, &[rec(20, b"bb"), rec(40, b"dddd")]));
        s.add(&batch(0, &[rec(60, b"f")]));
        let got = taken(&mut s, 45, 100);
        let ts: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(ts, [10, 20, 30, 40]);
        assert_eq!(got[3].1, b"dddd");
        // Younger records wait for a later horizon; a batch added meanwhile joins in order.
        s.add(&batch(3, &[rec(55, b"x")]));
        let ts: Vec<u64> = taken(&mut s, 100, 100).iter().map(|g| g.0).collect();
        assert_eq!(ts, [50, 55, 60]);
        assert_eq!(s.held, 0);
        assert_eq!(s.malformed(), 0);
    }

    #[test]
    fn a_panic_while_a_record_is_handled_costs_only_that_record() {
        let mut s = Streams::new(1 << 20);
        s.add(&batch(0, &[rec(1, b"a"), rec(2, b"b")]));
        s.add(&batch(1, &[rec(3, b"c")]));
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            s.take(u64::MAX, 100, |_| panic!("decoder bug"), |_, _| {})
        }));
        assert!(run.is_err());
        let ts: Vec<u64> = taken(&mut s, u64::MAX, 100).iter().map(|g| g.0).collect();
        assert_eq!(ts, [2, 3]);
    }

    #[test]
    fn take_stops_at_max_and_goes_on_from_there() {
        let mut s = Streams::new(1 << 20);
        let recs: Vec<Vec<u8>> = (0..10).map(|i| rec(i, &[i as u8; 5])).collect();
        s.add(&batch(1, &recs));
        assert_eq!(taken(&mut s, u64::MAX, 4).len(), 4);
        let rest = taken(&mut s, u64::MAX, 100);
        assert_eq!(rest.len(), 6);
        assert_eq!(rest[0], (4, vec![4u8; 5]));
    }

    #[test]
    fn a_batch_that_does_not_parse_keeps_what_came_before_the_fault_and_counts_the_rest() {
        let mut s = Streams::new(1 << 20);
        let mut b = batch(2, &[rec(1, b"ok"), rec(2, b"bad"), rec(3, b"lost")]);
        // The second record claims more bytes than the batch has.
        let second = BATCH_HEADER_BYTES + align8(HEADER_BYTES + 2);
        b[second + LEN_OFFSET..second + LEN_OFFSET + 4].copy_from_slice(&9999u32.to_ne_bytes());
        s.add(&b);
        assert_eq!(s.malformed(), 2);
        assert_eq!(taken(&mut s, u64::MAX, 100), [(1, b"ok".to_vec())]);
        // A record shorter than a header, a batch shorter than its header, a wild CPU.
        let mut b = batch(2, &[rec(5, b"")]);
        b[BATCH_HEADER_BYTES + LEN_OFFSET] = 3;
        s.add(&b);
        s.add(&[1, 2, 3]);
        s.add(&batch(MAX_CPU, &[rec(6, b"")]));
        assert_eq!(s.malformed(), 5);
        assert!(taken(&mut s, u64::MAX, 100).is_empty());
        // More records announced than present: the present ones count.
        let mut b = batch(0, &[rec(7, b"y")]);
        b[4..8].copy_from_slice(&3u32.to_ne_bytes());
        s.add(&b);
        assert_eq!(s.malformed(), 7);
        assert_eq!(taken(&mut s, u64::MAX, 100), [(7, b"y".to_vec())]);
    }

    #[test]
    fn held_bytes_stop_taking_batches_at_the_limit_and_come_back_down() {
        let mut s = Streams::new(1000);
        let r = rec(1, &[0u8; 200]);
        while s.has_room() {
            s.add(&batch(0, std::slice::from_ref(&r)));
        }
        assert!(s.held >= 1000 && s.held < 1000 + 272, "held {}", s.held);
        let n = taken(&mut s, u64::MAX, 100).len();
        assert_eq!(n, 4);
        assert_eq!(s.held, 0);
        assert!(s.cpus[0].data.is_empty());
    }

    #[test]
    fn a_single_record_batch_with_room_to_spare_yields_one_record() {
        // The kernel's stand-alone records (a program that interrupted one holding the
        // batch) reserve room for a peer address they may not use.
        let mut b = batch(5, &[rec(9, b"")]);
        b.extend_from_slice(&[0xAA; 32]);
        let mut s = Streams::new(1 << 20);
        s.add(&b);
        assert_eq!(taken(&mut s, u64::MAX, 100), [(9, Vec::new())]);
        assert_eq!(s.malformed(), 0);
    }
}

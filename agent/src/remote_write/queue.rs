//! The durable, bounded queue of one endpoint: append-only segment files in the endpoint's
//! directory, and a cursor file saying how far the receiver has acknowledged.
//!
//! Layout: `<dir>/<id:020>.seg`, each a sequence of records
//! `[len u32 LE][crc32 u32 LE][samples u32 LE][payload]` where the payload is a snappy
//! compressed [`QueueRecord`] (a part of one gather, about [`RECORD_TARGET`] bytes before
//! compression). `<dir>/cursor` holds `segment offset skip consumed`: the next record to send,
//! how many of its series were already sent, and how many samples of that segment were. It is replaced atomically (write + rename) after every
//! acknowledged batch, so after a crash at most the batch in flight is sent again.
//!
//! Durability: a segment is fsynced when it is closed (the next one is started) and, through
//! [`DiskQueue::sync_handle`], after each gather; the directory after a segment is created;
//! the cursor at most once per [`CURSOR_SYNC_EVERY`], so after a power loss at most that much
//! progress is forgotten (those batches are sent again; nothing is lost).
//!
//! Bounds: the segment files never exceed `max_bytes` together; to append a record that does
//! not fit, the oldest segments are deleted and their unsent samples counted as dropped. Only
//! the record being sent is held in memory, as its bytes plus an index of its series.
use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, BufReader, Read, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use prost::Message as _;

use super::{
    codec::{self, Batch, BatchSeries, Field, Val, next_field},
    proto::{MetricMetadata, QueueRecord, Sample},
};

const HEADER: u64 = 12;
/// The cursor file is fsynced at most this often.
pub const CURSOR_SYNC_EVERY: Duration = Duration::from_secs(1);
/// A gather is queued as records of about this many bytes (before compression), so that the
/// sender holds only that much of it.
pub const RECORD_TARGET: usize = 256 << 10;
/// Largest record accepted when reading back (a corrupt length must not allocate gigabytes).
const MAX_RECORD: u64 = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    pub seg: u64,
    pub off: u64,
    /// Series of the record at `off` already sent.
    pub skip: u32,
    /// Samples of segment `seg` already sent.
    pub consumed: u64,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    id: u64,
    bytes: u64,
    samples: u64,
}

/// What [`DiskQueue::peek`] returns: a batch and the cursor that acknowledges it.
#[derive(Debug)]
pub struct Peeked {
    pub batch: Batch,
    pub end: Cursor,
    pub samples: usize,
    /// When the oldest record of the batch was queued (ms since the epoch).
    pub oldest_queued_ms: i64,
}

pub struct DiskQueue {
    dir: PathBuf,
    max_bytes: u64,
    segment_max: u64,
    segments: VecDeque<Segment>,
    next_id: u64,
    writer: Option<(u64, File)>,
    reader: Option<(u64, File)>,
    cursor: Cursor,
    /// The record last read: (segment, offset, length on disk, record).
    cache: Option<(u64, u64, u64, Arc<RawRecord>)>,
    /// When the cursor file was last fsynced.
    cursor_synced: Option<Instant>,
    /// Scratch buffer for compressing records.
    compressed: Vec<u8>,
    /// The batch handed out by the last `peek` and not yet committed: (start, end). Its
    /// samples are with the sender, so pushing their segment out does not lose them.
    inflight: Option<(Cursor, Cursor)>,
    /// Samples of the batch in flight whose segment was pushed out for room: no longer on
    /// disk, not dropped either (the sender holds them) until `commit` resolves them, or a
    /// new `peek` abandons them (then they are lost and counted so).
    orphaned: u64,
    /// Samples lost by `peek` (damaged records, abandoned batches) not yet reported: kept
    /// across an error return, so the next successful `peek` counts them.
    lost: u64,
    /// Holds an exclusive flock on `<dir>/lock`: two agents must not share a queue.
    _lock: File,
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

impl DiskQueue {
    /// Opens (or creates) the queue in `dir`. Torn records at a segment's end (a crash while
    /// appending) are cut off.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<DiskQueue> {
        fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&lock),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        } != 0
        {
            return Err(io::Error::other(format!(
                "{} is in use by another process",
                dir.display()
            )));
        }
        let mut ids: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".seg")?
                    .parse::<u64>()
                    .ok()
            })
            .collect();
        ids.sort_unstable();
        let mut segments = VecDeque::new();
        for id in ids {
            let path = seg_path(dir, id);
            match scan_segment(&path) {
                Ok((bytes, samples)) => segments.push_back(Segment { id, bytes, samples }),
                // One unreadable segment must not keep the agent from starting: it is set
                // aside (renamed *.bad) and the others are sent.
                Err(e) => {
                    let aside = path.with_extension("seg.bad");
                    let renamed = fs::rename(&path, &aside);
                    tracing::error!(segment = %path.display(), error = %e, set_aside = renamed.is_ok(), "remote write queue: unreadable segment left out; its samples are lost");
                }
            }
        }
        let next_id = segments.back().map_or(0, |s| s.id + 1);
        let mut q = DiskQueue {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_max: (max_bytes / 16).clamp(16 << 10, 32 << 20),
            segments,
            next_id,
            writer: None,
            reader: None,
            cursor: Cursor::default(),
            cache: None,
            cursor_synced: None,
            compressed: Vec::new(),
            inflight: None,
            orphaned: 0,
            lost: 0,
            _lock: lock,
        };
        q.cursor = q.read_cursor().unwrap_or_else(|| q.start_cursor());
        q.normalise_cursor();
        Ok(q)
    }

    fn start_cursor(&self) -> Cursor {
        Cursor {
            seg: self.segments.front().map_or(self.next_id, |s| s.id),
            ..Cursor::default()
        }
    }

    fn read_cursor(&self) -> Option<Cursor> {
        let text = fs::read_to_string(self.dir.join("cursor")).ok()?;
        let v: Vec<u64> = text
            .split_ascii_whitespace()
            .map(|s| s.parse().ok())
            .collect::<Option<_>>()?;
        match v[..] {
            [seg, off, skip, consumed] => Some(Cursor {
                seg,
                off,
                skip: u32::try_from(skip).ok()?,
                consumed,
            }),
            _ => None,
        }
    }

    /// Keeps the cursor inside the segments that exist (after deletions or a foreign cursor).
    fn normalise_cursor(&mut self) {
        let c = self.cursor;
        match self.segments.iter().find(|s| s.id == c.seg) {
            Some(s) if c.off <= s.bytes => {}
            Some(s) => {
                self.cursor.off = s.bytes;
                self.cursor.skip = 0;
                self.cursor.consumed = s.samples;
            }
            None => {
                if self.segments.front().is_some_and(|f| f.id > c.seg) || c.seg > self.next_id {
                    self.cursor = self.start_cursor();
                } else if self.segments.back().is_some_and(|b| c.seg > b.id) {
                    self.cursor = Cursor {
                        seg: self.next_id,
                        ..Cursor::default()
                    };
                }
            }
        }
    }

    /// Replaces the cursor file (write + rename); fsyncs it when the last fsync is at least
    /// [`CURSOR_SYNC_EVERY`] old.
    fn write_cursor(&mut self) -> io::Result<()> {
        let c = self.cursor;
        let tmp = self.dir.join("cursor.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(format!("{} {} {} {}\n", c.seg, c.off, c.skip, c.consumed).as_bytes())?;
        let sync = self
            .cursor_synced
            .is_none_or(|t| t.elapsed() >= CURSOR_SYNC_EVERY);
        if sync {
            f.sync_data()?;
        }
        drop(f);
        fs::rename(tmp, self.dir.join("cursor"))?;
        if sync {
            sync_dir(&self.dir)?;
            self.cursor_synced = Some(Instant::now());
        }
        Ok(())
    }

    /// A handle of the segment being written, to fsync it without holding the queue.
    pub fn sync_handle(&self) -> io::Result<Option<File>> {
        self.writer.as_ref().map(|(_, f)| f.try_clone()).transpose()
    }

    /// Samples queued and not yet acknowledged.
    pub fn pending_samples(&self) -> u64 {
        let total: u64 = self.segments.iter().map(|s| s.samples).sum();
        let consumed = self
            .segments
            .iter()
            .find(|s| s.id == self.cursor.seg)
            .map_or(0, |_| self.cursor.consumed);
        total.saturating_sub(consumed)
    }

    /// Samples neither acknowledged nor reported lost: those queued, those of the batch in
    /// flight whose segment was pushed out for room, and those a failed `peek` lost and has
    /// not reported yet. Every sample appended is, at any time, counted here, or was reported
    /// dropped by `append` or `peek`, or was acknowledged by a `commit` of its batch.
    pub fn held_samples(&self) -> u64 {
        self.pending_samples() + self.orphaned + self.lost
    }

    /// Bytes of the segment files.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Appends one record. Returns the number of samples dropped to make room (the oldest),
    /// or the record's own samples when it alone exceeds the queue's size.
    pub fn append(&mut self, rec: &QueueRecord) -> io::Result<u64> {
        let samples = rec
            .timeseries
            .iter()
            .map(|t| t.samples.len() as u64)
            .sum::<u64>();
        self.append_raw(&rec.encode_to_vec(), samples)
    }

    /// Appends one record given as an encoded [`QueueRecord`] holding `samples` samples; as
    /// [`DiskQueue::append`].
    pub fn append_raw(&mut self, raw: &[u8], samples: u64) -> io::Result<u64> {
        let mut payload = std::mem::take(&mut self.compressed);
        payload.resize(snap::raw::max_compress_len(raw.len()), 0);
        let n = snap::raw::Encoder::new()
            .compress(raw, &mut payload)
            .map_err(io::Error::other)?;
        payload.truncate(n);
        let r = self.write_record(&payload, samples);
        // Keep the scratch buffer only while it is small.
        if payload.capacity() <= 2 * RECORD_TARGET {
            self.compressed = payload;
        }
        r
    }

    fn write_record(&mut self, payload: &[u8], samples: u64) -> io::Result<u64> {
        let len = HEADER + payload.len() as u64;
        if len > self.max_bytes || payload.len() as u64 > MAX_RECORD {
            return Ok(samples);
        }
        let mut dropped = 0;
        while self.bytes() + len > self.max_bytes && !self.segments.is_empty() {
            dropped += self.drop_oldest()?;
        }
        let roll = match self.segments.back() {
            None => true,
            Some(s) => s.bytes > 0 && s.bytes + len > self.segment_max,
        };
        if roll {
            // The segment being closed goes to disk before the next one starts.
            if let Some((_, w)) = self.writer.take() {
                w.sync_data()?;
            }
            let id = self.next_id;
            self.next_id += 1;
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(seg_path(&self.dir, id))?;
            sync_dir(&self.dir)?;
            self.segments.push_back(Segment {
                id,
                bytes: 0,
                samples: 0,
            });
            self.writer = Some((id, f));
        }
        let Some(last) = self.segments.back_mut() else {
            return Err(io::Error::other("no segment to append to"));
        };
        if self.writer.as_ref().is_none_or(|(id, _)| *id != last.id) {
            let f = OpenOptions::new()
                .append(true)
                .open(seg_path(&self.dir, last.id))?;
            self.writer = Some((last.id, f));
        }
        let Some((_, w)) = self.writer.as_mut() else {
            return Err(io::Error::other("no segment writer"));
        };
        let mut hdr = [0u8; HEADER as usize];
        hdr[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        hdr[4..8].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
        hdr[8..].copy_from_slice(&(samples as u32).to_le_bytes());
        let written = w.write_all(&hdr).and_then(|()| w.write_all(payload));
        if let Err(e) = written {
            // Leave no half record behind: cut the file back to its last good length.
            let _ = w.set_len(last.bytes);
            return Err(e);
        }
        last.bytes += len;
        last.samples += samples;
        Ok(dropped)
    }

    /// Deletes the oldest segment; returns its samples not yet sent.
    fn drop_oldest(&mut self) -> io::Result<u64> {
        let Some(seg) = self.segments.pop_front() else {
            return Ok(0);
        };
        if self.writer.as_ref().is_some_and(|(id, _)| *id == seg.id) {
            self.writer = None;
        }
        if self.reader.as_ref().is_some_and(|(id, _)| *id == seg.id) {
            self.reader = None;
        }
        if self.cache.as_ref().is_some_and(|c| c.0 == seg.id) {
            self.cache = None;
        }
        fs::remove_file(seg_path(&self.dir, seg.id))?;
        let unsent = if self.cursor.seg == seg.id {
            seg.samples.saturating_sub(self.cursor.consumed)
        } else if self.cursor.seg > seg.id {
            0
        } else {
            seg.samples
        };
        // Samples of this segment in the batch being sent are not lost.
        let inflight = match self.inflight {
            Some((start, end)) if start.seg <= seg.id && seg.id <= end.seg => {
                let from = if start.seg == seg.id {
                    start.consumed
                } else {
                    0
                };
                let to = if end.seg == seg.id {
                    end.consumed
                } else {
                    seg.samples
                };
                to.saturating_sub(from)
            }
            _ => 0,
        };
        let held = inflight.min(unsent);
        self.orphaned += held;
        let unsent = unsent - held;
        if self.cursor.seg <= seg.id {
            self.cursor = self.start_cursor();
            self.write_cursor()?;
        }
        Ok(unsent)
    }

    fn read_record(&mut self, seg: u64, off: u64) -> Result<(u64, Arc<RawRecord>), RecordError> {
        if let Some((s, o, len, rec)) = &self.cache
            && *s == seg
            && *o == off
        {
            return Ok((*len, Arc::clone(rec)));
        }
        if self.reader.as_ref().is_none_or(|(id, _)| *id != seg) {
            self.reader = Some((seg, File::open(seg_path(&self.dir, seg))?));
        }
        let Some((_, f)) = self.reader.as_ref() else {
            return Err(io::Error::other("no segment reader").into());
        };
        let mut hdr = [0u8; HEADER as usize];
        f.read_exact_at(&mut hdr, off)?;
        let plen = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as u64;
        let crc = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        let samples = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]) as u64;
        if plen > MAX_RECORD {
            return Err(io::Error::other(format!("record length {plen} out of range")).into());
        }
        let len = HEADER + plen;
        let bad = |why: String| RecordError::Bad { len, samples, why };
        let mut payload = vec![0u8; plen as usize];
        f.read_exact_at(&mut payload, off + HEADER)?;
        if crc32fast::hash(&payload) != crc {
            return Err(bad("record checksum mismatch".into()));
        }
        let raw = codec::decompress(&payload).map_err(|e| bad(e.to_string()))?;
        drop(payload);
        let rec = Arc::new(RawRecord::parse(raw).map_err(|e| bad(e.to_string()))?);
        self.cache = Some((seg, off, len, Arc::clone(&rec)));
        Ok((len, rec))
    }

    /// The next batch of at most `max_samples` samples from the cursor, without consuming it.
    /// A record that cannot be read (disk corruption) is skipped with its segment's rest,
    /// counted in the returned `lost` samples, as are the pushed-out samples of a batch handed
    /// out before and never committed (a new peek abandons it).
    pub fn peek(&mut self, max_samples: usize) -> io::Result<(Option<Peeked>, u64)> {
        let mut c = self.cursor;
        let mut batch = Batch::default();
        let mut samples = 0usize;
        let mut oldest = None;
        self.lost += std::mem::take(&mut self.orphaned);
        self.inflight = None;
        while samples < max_samples {
            let Some(idx) = self.segments.iter().position(|s| s.id == c.seg) else {
                break;
            };
            let seg = self.segments[idx];
            if c.off >= seg.bytes {
                match self.segments.get(idx + 1) {
                    Some(next) => {
                        c = Cursor {
                            seg: next.id,
                            ..Cursor::default()
                        };
                        continue;
                    }
                    None => break,
                }
            }
            let (len, rec) = match self.read_record(c.seg, c.off) {
                Ok(r) => r,
                // Out of descriptors or memory: nothing is wrong with the data; try later.
                Err(RecordError::Io(e)) if transient(&e) => return Err(e),
                Err(err) => {
                    let left = seg.samples.saturating_sub(c.consumed);
                    // A damaged record whose frame is intact is skipped alone; an unreadable
                    // one takes the rest of its segment. The samples skipped are counted.
                    let (to, lost) = match err {
                        RecordError::Bad {
                            len,
                            samples: n,
                            why,
                        } => {
                            tracing::error!(segment = %seg_path(&self.dir, c.seg).display(), offset = c.off, samples = n, error = %why, "remote write queue: damaged record skipped");
                            (c.off + len, n.min(left))
                        }
                        RecordError::Io(e) => {
                            tracing::error!(segment = %seg_path(&self.dir, c.seg).display(), offset = c.off, error = %e, "remote write queue: unreadable record, skipping the rest of the segment");
                            (seg.bytes, left)
                        }
                    };
                    self.lost += lost;
                    c.consumed += lost;
                    c.off = to;
                    c.skip = 0;
                    if samples == 0 {
                        // Nothing taken yet: consume the broken part right away.
                        self.cursor = c;
                        self.write_cursor()?;
                    }
                    continue;
                }
            };
            oldest.get_or_insert(rec.queued_ms);
            let n = rec.series.len();
            let start = (c.skip as usize).min(n);
            let take = (n - start).min(max_samples - samples);
            // This record's family indexes -> the batch's.
            let mut fam: Vec<Option<u32>> = vec![None; rec.metadata.len()];
            for i in start..start + take {
                let (a, b) = rec.series[i];
                let k = rec.samples_of(i);
                samples += k as usize;
                c.consumed += u64::from(k);
                let meta = rec
                    .family
                    .get(i)
                    .filter(|f| (**f as usize) < fam.len())
                    .map(|f| {
                        *fam[*f as usize].get_or_insert_with(|| {
                            batch.metadata.push(rec.metadata[*f as usize].clone());
                            (batch.metadata.len() - 1) as u32
                        })
                    });
                let at = batch.buf.len() as u32;
                batch
                    .buf
                    .extend_from_slice(&rec.raw[a as usize..b as usize]);
                batch.series.push(BatchSeries {
                    start: at,
                    end: batch.buf.len() as u32,
                    samples: k,
                    meta,
                    created: rec.created.get(i).copied().unwrap_or(0),
                });
            }
            if start + take >= n {
                c.off += len;
                c.skip = 0;
            } else {
                c.skip = (start + take) as u32;
            }
        }
        if batch.series.is_empty() && c == self.cursor {
            return Ok((None, std::mem::take(&mut self.lost)));
        }
        if batch.series.is_empty() {
            // Only empty records or segment ends were passed: acknowledge them.
            self.commit(c)?;
            return Ok((None, std::mem::take(&mut self.lost)));
        }
        self.inflight = Some((self.cursor, c));
        Ok((
            Some(Peeked {
                batch,
                end: c,
                samples,
                oldest_queued_ms: oldest.unwrap_or(0),
            }),
            std::mem::take(&mut self.lost),
        ))
    }

    /// Acknowledges everything before `end`: fully sent segments are deleted.
    pub fn commit(&mut self, end: Cursor) -> io::Result<()> {
        self.inflight = None;
        self.orphaned = 0;
        if self.segments.front().is_some_and(|f| end.seg < f.id) {
            // The batch's segment was dropped for room meanwhile; the cursor moved already.
            return Ok(());
        }
        self.cursor = end;
        while let Some(front) = self.segments.front().copied() {
            let done = front.id < self.cursor.seg
                || (front.id == self.cursor.seg
                    && self.cursor.off >= front.bytes
                    && self.segments.len() > 1);
            if !done {
                break;
            }
            self.segments.pop_front();
            if self.reader.as_ref().is_some_and(|(id, _)| *id == front.id) {
                self.reader = None;
            }
            if self.writer.as_ref().is_some_and(|(id, _)| *id == front.id) {
                self.writer = None;
            }
            fs::remove_file(seg_path(&self.dir, front.id))?;
            if front.id == self.cursor.seg {
                self.cursor = self.start_cursor();
            }
        }
        self.write_cursor()
    }
}

/// fsync of a directory, so that files created or renamed in it stay after a power loss.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// One record read back: its decompressed bytes and an index of its series. A series is sent
/// as the bytes of its field, so nothing of it is decoded.
#[derive(Debug)]
pub struct RawRecord {
    raw: Vec<u8>,
    /// Each series' `timeseries` field: (start, end) in `raw`.
    series: Vec<(u32, u32)>,
    /// Samples per series, when any series has other than one.
    samples: Option<Vec<u32>>,
    family: Vec<u32>,
    created: Vec<i64>,
    metadata: Vec<MetricMetadata>,
    queued_ms: i64,
}

impl RawRecord {
    fn parse(raw: Vec<u8>) -> Result<RawRecord, String> {
        if raw.len() > u32::MAX as usize {
            return Err("record larger than 4 GiB".into());
        }
        let mut rec = RawRecord {
            raw: Vec::new(),
            series: Vec::new(),
            samples: None,
            family: Vec::new(),
            created: Vec::new(),
            metadata: Vec::new(),
            queued_ms: 0,
        };
        let mut counts = Vec::new();
        let mut pos = 0;
        while let Some(Field {
            tag,
            start,
            end,
            val,
        }) = next_field(&raw, &mut pos)?
        {
            match (tag, val) {
                (1, Val::Bytes(ts)) => {
                    rec.series.push((start as u32, end as u32));
                    counts.push(codec::count_samples(ts)?);
                }
                (2, Val::Bytes(m)) => rec
                    .metadata
                    .push(MetricMetadata::decode(m).map_err(|e| e.to_string())?),
                (3, Val::Varint(v)) => rec.family.push(v as u32),
                (3, Val::Bytes(b)) => rec.family.extend(varints(b)?.map(|v| v as u32)),
                (4, Val::Varint(v)) => rec.queued_ms = v as i64,
                (5, Val::Varint(v)) => rec.created.push(v as i64),
                (5, Val::Bytes(b)) => rec.created.extend(varints(b)?.map(|v| v as i64)),
                _ => {}
            }
        }
        if counts.iter().any(|n| *n != 1) {
            rec.samples = Some(counts);
        }
        rec.raw = raw;
        Ok(rec)
    }

    fn samples_of(&self, i: usize) -> u32 {
        self.samples.as_ref().map_or(1, |s| s[i])
    }
}

/// The values of a packed repeated varint field.
fn varints(mut b: &[u8]) -> Result<impl Iterator<Item = u64>, String> {
    let mut out = Vec::new();
    while !b.is_empty() {
        out.push(prost::encoding::decode_varint(&mut b).map_err(|e| e.to_string())?);
    }
    Ok(out.into_iter())
}

/// Builds the records of one gather: series are added as encoded fields, and every
/// [`RECORD_TARGET`] bytes a record is cut, carrying the metadata of its own families.
pub struct RecordWriter<'m> {
    metadata: &'m [MetricMetadata],
    queued_ms: i64,
    buf: Vec<u8>,
    family: Vec<u32>,
    created: Vec<i64>,
    /// Gather family index -> this record's, and the gather indexes in record order.
    local: Vec<u32>,
    order: Vec<u32>,
    samples: u64,
}

impl<'m> RecordWriter<'m> {
    pub fn new(metadata: &'m [MetricMetadata], queued_ms: i64) -> RecordWriter<'m> {
        RecordWriter {
            metadata,
            queued_ms,
            buf: Vec::new(),
            family: Vec::new(),
            created: Vec::new(),
            local: vec![u32::MAX; metadata.len()],
            order: Vec::new(),
            samples: 0,
        }
    }

    /// Adds one series: its encoded label fields, one sample, the gather index of its family
    /// (`None`: no metadata, e.g. a stale marker) and its created timestamp (0: none).
    pub fn push(&mut self, label_fields: &[u8], sample: Sample, family: Option<u32>, created: i64) {
        codec::put_series(label_fields, sample, &mut self.buf);
        let f = match family {
            Some(g) if (g as usize) < self.local.len() => {
                let l = &mut self.local[g as usize];
                if *l == u32::MAX {
                    *l = self.order.len() as u32;
                    self.order.push(g);
                }
                *l
            }
            _ => u32::MAX,
        };
        self.family.push(f);
        self.created.push(created);
        self.samples += 1;
    }

    /// A record is due.
    pub fn full(&self) -> bool {
        self.buf.len() >= RECORD_TARGET
    }

    pub fn is_empty(&self) -> bool {
        self.family.is_empty()
    }

    /// Cuts the record: its encoded [`QueueRecord`] and its samples; the writer is empty
    /// again.
    pub fn take(&mut self) -> (Vec<u8>, u64) {
        use prost::encoding as enc;
        let mut raw = std::mem::take(&mut self.buf);
        for g in self.order.drain(..) {
            enc::message::encode(2, &self.metadata[g as usize], &mut raw);
            self.local[g as usize] = u32::MAX;
        }
        enc::uint32::encode_packed(3, &self.family, &mut raw);
        if self.queued_ms != 0 {
            enc::int64::encode(4, &self.queued_ms, &mut raw);
        }
        if self.created.iter().any(|c| *c != 0) {
            enc::int64::encode_packed(5, &self.created, &mut raw);
        }
        self.family.clear();
        self.created.clear();
        self.buf = Vec::with_capacity(RECORD_TARGET + RECORD_TARGET / 8);
        (raw, std::mem::take(&mut self.samples))
    }
}

/// Why a record could not be read.
#[derive(Debug)]
enum RecordError {
    /// Reading the segment failed.
    Io(io::Error),
    /// The record's frame (`len` bytes, `samples` samples) is intact but its payload is not
    /// (checksum, compression or encoding).
    Bad { len: u64, samples: u64, why: String },
}

impl From<io::Error> for RecordError {
    fn from(e: io::Error) -> Self {
        RecordError::Io(e)
    }
}

/// Errors that say nothing about the data: retried later instead of skipping it.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::OutOfMemory
    ) || matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)
    )
}

/// Reads a segment's records; cuts a torn tail (a frame that ends past the file or has an
/// impossible length). A record whose frame is whole but whose payload fails its checksum
/// (a bit flip) is kept: the records after it are good, and the reader skips and counts it.
/// Returns (bytes, samples).
fn scan_segment(path: &Path) -> io::Result<(u64, u64)> {
    let f = File::open(path)?;
    let file_len = f.metadata()?.len();
    let mut r = BufReader::new(f);
    let mut off = 0u64;
    let mut samples = 0u64;
    let mut payload = Vec::new();
    loop {
        let mut hdr = [0u8; HEADER as usize];
        match r.read_exact(&mut hdr) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let plen = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as u64;
        let crc = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        let n = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]) as u64;
        if plen > MAX_RECORD || off + HEADER + plen > file_len {
            break;
        }
        payload.resize(plen as usize, 0);
        r.read_exact(&mut payload)?;
        if crc32fast::hash(&payload) != crc {
            tracing::warn!(segment = %path.display(), offset = off, samples = n, "remote write queue: a record fails its checksum; it will be skipped and counted as dropped when reached");
        }
        off += HEADER + plen;
        samples += n;
    }
    if off < file_len {
        tracing::warn!(segment = %path.display(), kept = off, cut = file_len - off, "remote write queue: cutting a torn record at the end of a segment");
        OpenOptions::new().write(true).open(path)?.set_len(off)?;
    }
    Ok((off, samples))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::proto::{Label, Sample, TimeSeries};

    fn record(first: i64, n: usize) -> QueueRecord {
        QueueRecord {
            timeseries: (0..n)
                .map(|i| TimeSeries {
                    labels: vec![Label {
                        name: "__name__".into(),
                        value: format!("m{i}"),
                    }],
                    samples: vec![Sample {
                        // Incompressible values, so that records have a realistic size.
                        value: i as f64 + fastrand::f64(),
                        timestamp: first,
                    }],
                })
                .collect(),
            metadata: vec![],
            family: vec![],
            queued_ms: first,
            created: vec![],
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hostlens-q-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn drain(q: &mut DiskQueue, max: usize) -> Vec<(i64, String)> {
        let mut got = Vec::new();
        while let (Some(p), _) = q.peek(max).unwrap() {
            for s in p.batch.decode() {
                got.push((s.samples[0].timestamp, s.labels[0].value.clone()));
            }
            q.commit(p.end).unwrap();
        }
        got
    }

    #[test]
    fn order_kept_across_batches_splits_and_reopen() {
        let d = tmp("order");
        let mut q = DiskQueue::open(&d, 1 << 20).unwrap();
        for t in 0..5 {
            assert_eq!(q.append(&record(t, 7)).unwrap(), 0);
        }
        assert_eq!(q.pending_samples(), 35);
        // Send part of it, then "crash" and reopen: the rest comes back in order.
        let (p, _) = q.peek(10).unwrap();
        let p = p.unwrap();
        assert_eq!(p.samples, 10);
        q.commit(p.end).unwrap();
        drop(q);
        let mut q = DiskQueue::open(&d, 1 << 20).unwrap();
        assert_eq!(q.pending_samples(), 25);
        let got = drain(&mut q, 4);
        assert_eq!(got.len(), 25);
        assert_eq!(got[0], (1, "m3".into()));
        assert!(got.windows(2).all(|w| w[0] <= w[1] || w[0].0 < w[1].0));
        assert_eq!(q.pending_samples(), 0);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn full_queue_drops_oldest_and_counts() {
        let d = tmp("full");
        // 1 MiB total in 64 KiB segments.
        let mut q = DiskQueue::open(&d, 1 << 20).unwrap();
        let mut dropped = 0;
        let mut appended = 0u64;
        for t in 0..1000 {
            dropped += q.append(&record(t, 200)).unwrap();
            appended += 200;
            assert!(q.bytes() <= 1 << 20);
        }
        assert!(dropped > 0);
        assert_eq!(q.pending_samples() + dropped, appended);
        let got = drain(&mut q, 1000);
        assert_eq!(got.len() as u64, appended - dropped);
        // What is left is the newest, in order.
        assert_eq!(got.last().unwrap().0, 999);
        assert!(got.windows(2).all(|w| w[0].0 <= w[1].0));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn torn_tail_is_cut_on_open() {
        let d = tmp("torn");
        let mut q = DiskQueue::open(&d, 1 << 20).unwrap();
        q.append(&record(1, 3)).unwrap();
        q.append(&record(2, 3)).unwrap();
        drop(q);
        let seg = seg_path(&d, 0);
        let len = fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        let mut q = DiskQueue::open(&d, 1 << 20).unwrap();
        assert_eq!(q.pending_samples(), 3);
        assert_eq!(drain(&mut q, 100).len(), 3);
        // Appending after the cut works and is read back.
        q.append(&record(3, 2)).unwrap();
        assert_eq!(drain(&mut q, 100), vec![(3, "m0".into()), (3, "m1".into())]);
        fs::remove_dir_all(&d).unwrap();
    }

    /// A bit flip inside a record in the middle of a segment costs that record only: it is
    /// counted when reached, and the records after it are still sent.
    #[test]
    fn damaged_record_mid_segment_is_skipped_and_counted() {
        let d = tmp("flip");
        let mut q = DiskQueue::open(&d, 1 << 20).unwrap();
        for t in 1..=3 {
            q.append(&record(t, 3)).unwrap();
        }
        drop(q);
        let seg = seg_path(&d, 0);
        let mut bytes = fs::read(&seg).unwrap();
        let first = HEADER as usize + u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
        bytes[first + HEADER as usize + 2] ^= 0x40;
        fs::write(&seg, &bytes).unwrap();
        let mut q = DiskQueue::open(&d, 1 << 20).unwrap();
        assert_eq!(q.pending_samples(), 9, "nothing cut at open");
        let (mut got, mut corrupt) = (Vec::new(), 0);
        loop {
            let (p, bad) = q.peek(100).unwrap();
            corrupt += bad;
            let Some(p) = p else { break };
            got.extend(p.batch.decode().iter().map(|s| s.samples[0].timestamp));
            q.commit(p.end).unwrap();
        }
        assert_eq!(got, vec![1, 1, 1, 3, 3, 3]);
        assert_eq!(corrupt, 3);
        assert_eq!(q.pending_samples(), 0);
        fs::remove_dir_all(&d).unwrap();
    }

    /// A segment that cannot be read at start (here a directory with a segment's name) is
    /// set aside; the queue opens and the other segments are sent.
    #[test]
    fn unreadable_segment_is_set_aside_at_open() {
        let d = tmp("unreadable");
        let mut q = DiskQueue::open(&d, 1 << 20).unwrap();
        q.append(&record(1, 2)).unwrap();
        drop(q);
        fs::create_dir(seg_path(&d, 7)).unwrap();
        let mut q = DiskQueue::open(&d, 1 << 20).unwrap();
        assert!(seg_path(&d, 7).with_extension("seg.bad").is_dir());
        assert!(!seg_path(&d, 7).exists());
        assert_eq!(drain(&mut q, 100), vec![(1, "m0".into()), (1, "m1".into())]);
        // Appending goes on after the good segment.
        q.append(&record(2, 1)).unwrap();
        assert_eq!(drain(&mut q, 100), vec![(2, "m0".into())]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn every_appended_sample_is_held_dropped_or_acknowledged_at_every_step() {
        // A small queue kept full: batches handed out get pushed out while in flight, some are
        // committed, some abandoned by a new peek. After every call the samples appended equal
        // those acknowledged + reported dropped + held.
        let d = tmp("identity");
        let mut q = DiskQueue::open(&d, 16 << 10).unwrap();
        let (mut appended, mut acked, mut dropped) = (0u64, 0u64, 0u64);
        let mut in_hand: Option<Peeked> = None;
        let (mut orphaned_seen, mut abandoned) = (false, 0);
        fastrand::seed(7);
        for step in 0..3000 {
            match fastrand::u8(0..10) {
                0..=5 => {
                    let n = fastrand::usize(1..60);
                    dropped += q.append(&record(step, n)).unwrap();
                    appended += n as u64;
                }
                6..=8 => {
                    if in_hand.is_some() {
                        abandoned += 1;
                    }
                    let (p, lost) = q.peek(fastrand::usize(1..200)).unwrap();
                    dropped += lost;
                    in_hand = p;
                }
                _ => {
                    if let Some(p) = in_hand.take() {
                        q.commit(p.end).unwrap();
                        acked += p.samples as u64;
                    }
                }
            }
            orphaned_seen |= q.orphaned > 0;
            assert_eq!(
                appended,
                acked + dropped + q.held_samples(),
                "step {step}: appended {appended}, acknowledged {acked}, dropped {dropped}, held {}",
                q.held_samples()
            );
        }
        assert!(orphaned_seen, "no batch was pushed out while in flight");
        assert!(abandoned > 0 && dropped > 0 && acked > 0);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn batch_in_flight_is_not_counted_dropped_when_pushed_out() {
        let d = tmp("inflight");
        let mut q = DiskQueue::open(&d, 64 << 10).unwrap();
        q.append(&record(0, 100)).unwrap();
        let (p, _) = q.peek(30).unwrap();
        let p = p.unwrap();
        let mut dropped = 0;
        let mut appended = 100;
        for t in 1..200 {
            dropped += q.append(&record(t, 100)).unwrap();
            appended += 100;
        }
        assert!(dropped > 0);
        // The 30 in flight are delivered (commit), so: sent + dropped + pending = appended.
        q.commit(p.end).unwrap();
        assert_eq!(30 + dropped + q.pending_samples(), appended);
        fs::remove_dir_all(&d).unwrap();
    }
}

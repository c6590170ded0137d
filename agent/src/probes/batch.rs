//! Whole-map reads with `BPF_MAP_LOOKUP_BATCH` (kernel ≥ 5.6), which aya 0.14 does not wrap.
//!
//! Reading a hash map key by key costs two `bpf(2)` calls per entry; with thousands of
//! `(process, syscall)` entries that dominated the scrape (and every one of those syscalls
//! passes through the syscall probe itself). One batch call returns up to [`CHUNK`] entries.
use std::{
    io,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{
    Pod,
    maps::{IterableMap, MapData},
};

/// Entries per `BPF_MAP_LOOKUP_BATCH` call.
const CHUNK: u32 = 1024;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `batch` member of `union bpf_attr` (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn map_fd<M: IterableMap<K, V>, K: Pod, V>(map: &M) -> u32 {
    let data: &MapData = map.map();
    data.fd().as_fd().as_raw_fd() as u32
}

/// Every entry of a per-CPU map: the key and one value per possible CPU.
pub fn per_cpu_entries<M, K, V, R>(map: &M) -> io::Result<Vec<(K, Vec<V>)>>
where
    M: IterableMap<K, R>,
    K: Pod,
    V: Pod,
{
    let (cpus, stride) = per_cpu_layout::<V>()?;
    let fd = map_fd(map);
    let mut keys = vec![0u8; CHUNK as usize * size_of::<K>()];
    let mut values = vec![0u8; CHUNK as usize * cpus * stride];
    // The batch token of hash maps is a bucket index (u32); arrays use a key. 8 bytes fit both.
    let mut token_in = [0u8; 8];
    let mut token_out = [0u8; 8];
    let mut first = true;
    let mut out = Vec::new();
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                token_in.as_mut_ptr() as u64
            },
            out_batch: token_out.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK,
            map_fd: fd,
            ..Default::default()
        };
        // SAFETY: `attr` points at buffers sized for CHUNK keys and CHUNK × cpus values, and
        // the kernel writes at most `count` entries.
        let err = unsafe { sys_bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) }.err();
        let done = matches!(&err, Some(e) if e.raw_os_error() == Some(libc::ENOENT));
        if let Some(e) = err
            && !done
        {
            return Err(e);
        }
        for i in 0..attr.count as usize {
            // SAFETY: the kernel wrote `count` keys and values; reads are unaligned-safe.
            let key =
                unsafe { (keys.as_ptr().add(i * size_of::<K>()) as *const K).read_unaligned() };
            let base = i * cpus * stride;
            out.push((
                key,
                per_cpu_values(&values[base..base + cpus * stride], cpus),
            ));
        }
        if done {
            return Ok(out);
        }
        token_in = token_out;
        first = false;
    }
}

const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;

/// The element member of `union bpf_attr` (`map_fd`, `key`, `value`, `flags`).
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Deletes `key` from a per-CPU hash map and returns the values it held at that moment, one
/// per possible CPU, in one call (`BPF_MAP_LOOKUP_AND_DELETE_ELEM`, per-CPU hash maps since
/// Linux 5.14): a count the kernel adds after a read and before a separate delete would be
/// lost; here it is in the values returned. `Ok(None)`: the key was not there.
pub fn take_per_cpu<M, K, V, R>(map: &M, key: &K) -> io::Result<Option<Vec<V>>>
where
    M: IterableMap<K, R>,
    K: Pod,
    V: Pod,
{
    let (cpus, stride) = per_cpu_layout::<V>()?;
    let mut values = vec![0u8; cpus * stride];
    let mut k = *key;
    let mut attr = ElemAttr {
        map_fd: map_fd(map),
        key: &mut k as *mut K as u64,
        value: values.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: `key` points at one K, `values` has room for one value per possible CPU (the
    // kernel's per-CPU value layout, 8-byte strides).
    match unsafe { sys_bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &mut attr) } {
        Ok(()) => Ok(Some(per_cpu_values(&values, cpus))),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `bpf(cmd, attr, sizeof attr)`.
///
/// # Safety
/// `attr` is the `union bpf_attr` member of `cmd`, and every buffer it points at is as large
/// as the kernel will write.
unsafe fn sys_bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<()> {
    // SAFETY: as the caller promises.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, size_of::<A>() as u32) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The possible CPUs, and the bytes one per-CPU value of `V` takes: values are laid out
/// 8-byte aligned, one after another (bpf_map_lookup_elem(2)).
fn per_cpu_layout<V>() -> io::Result<(usize, usize)> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    Ok((cpus, stride::<V>()))
}

fn stride<V>() -> usize {
    size_of::<V>().div_ceil(8) * 8
}

/// One key's per-CPU values as the kernel lays them out (see [`per_cpu_layout`]).
fn per_cpu_values<V: Pod>(bytes: &[u8], cpus: usize) -> Vec<V> {
    let stride = stride::<V>();
    assert!(bytes.len() >= cpus * stride, "per-CPU values cut short");
    (0..cpus)
        // SAFETY: in bounds (checked above); reads are unaligned-safe.
        .map(|c| unsafe { (bytes.as_ptr().add(c * stride) as *const V).read_unaligned() })
        .collect()
}

//! The monotonic clock (`CLOCK_MONOTONIC`): the clock of the kernel's `bpf_ktime_get_ns` and
//! of systemd's `MONOTONIC_USEC`, which `std::time::Instant` does not expose as a number.

/// `CLOCK_MONOTONIC` now, in ns.
pub fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

//! Dropping capabilities once the eBPF programs are attached.
//!
//! Loading and attaching needs CAP_BPF and CAP_PERFMON (no probe uses cgroup/sock hooks);
//! once attached, the programs stay in the kernel through the file descriptors the agent holds,
//! and reading their maps through those descriptors needs no capability — from Linux 6.5 on.
//! Before 6.5 the kernel refuses every bpf(2) command, map reads included, to a caller without
//! CAP_BPF while `kernel.unprivileged_bpf_disabled` is set (Debian's default): there CAP_BPF
//! is kept too ([`keeps_cap_bpf`]). Scraping still reads
//! other processes' `/proc/<pid>` entries, which needs CAP_DAC_READ_SEARCH (files of other
//! users) and CAP_SYS_PTRACE (`/proc/<pid>/{io,fd,environ}` of processes the agent does not
//! own): those two stay, everything else leaves the effective, permitted, inheritable and
//! ambient sets, and the bounding set too when CAP_SETPCAP allows it.
//!
//! Capabilities are per thread: this must run while the process has a single thread (before
//! the async runtime starts), so that every thread created later inherits the reduced sets.

/// What scraping keeps.
pub const KEEP: &[(u32, &str)] = &[(2, "CAP_DAC_READ_SEARCH"), (19, "CAP_SYS_PTRACE")];

const CAP_BPF: (u32, &str) = (39, "CAP_BPF");

/// Whether reading the probes' maps needs CAP_BPF on this kernel: release older than 6.5
/// (`release`, e.g. "6.1.0-18-amd64") and `unprivileged_bpf_disabled` (its file's text) not
/// "0"; an unreadable sysctl counts as set.
pub fn keeps_cap_bpf(release: &str, unprivileged_bpf_disabled: Option<&str>) -> bool {
    parse_version(release) < (6, 5) && unprivileged_bpf_disabled.is_none_or(|v| v.trim() != "0")
}

/// (major, minor) of a kernel release string such as "6.1.0-18-amd64" ((0, 0) if none).
pub fn parse_version(release: &str) -> (u32, u32) {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// (major, minor) of the running kernel ((0, 0) when `/proc/sys/kernel/osrelease` is
/// unreadable).
pub fn kernel_version() -> (u32, u32) {
    parse_version(&std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default())
}

/// [`KEEP`], plus CAP_BPF where this kernel needs it for map reads.
fn keep_here() -> Vec<(u32, &'static str)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled").ok();
    let mut keep = KEEP.to_vec();
    if keeps_cap_bpf(&release, sysctl.as_deref()) {
        keep.push(CAP_BPF);
    }
    keep
}

const CAP_SETPCAP: u32 = 8;
const VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn capget() -> std::io::Result<[Data; 2]> {
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget(2) with a v3 header writes two Data structs into `d`.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(d)
}

fn has(set: u64, cap: u32) -> bool {
    set & (1u64 << cap) != 0
}

fn join(d: &[Data; 2], f: fn(&Data) -> u32) -> u64 {
    u64::from(f(&d[0])) | (u64::from(f(&d[1])) << 32)
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Reduces the calling thread (the whole process, when single-threaded) to [`KEEP`]. Returns
/// the names of the capabilities that remain effective.
pub fn drop_to_scrape_set() -> std::io::Result<Vec<&'static str>> {
    let cur = capget()?;
    let keep = keep_here();
    let keep_mask: u64 = keep.iter().map(|(c, _)| 1u64 << c).fold(0, |a, b| a | b);
    let permitted = join(&cur, |d| d.permitted) & keep_mask;
    let effective = join(&cur, |d| d.effective);
    if has(effective, CAP_SETPCAP) {
        for cap in 0..=last_cap() {
            if keep_mask & (1u64 << cap) == 0 {
                // SAFETY: prctl with integer arguments only.
                unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            }
        }
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let d = [
        Data {
            effective: permitted as u32,
            permitted: permitted as u32,
            inheritable: 0,
        },
        Data {
            effective: (permitted >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: capset(2) with a v3 header reads two Data structs.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(keep
        .iter()
        .filter(|(c, _)| has(permitted, *c))
        .map(|(_, n)| *n)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_bpf_is_kept_where_map_reads_need_it() {
        // Debian 12 (6.1) with its default sysctl: kept.
        assert!(keeps_cap_bpf("6.1.0-18-amd64", Some("2\n")));
        assert!(keeps_cap_bpf("5.15.0-91-generic", Some("1")));
        assert!(keeps_cap_bpf("6.4.16", None));
        // Unprivileged bpf allowed, or 6.5 and later: not needed.
        assert!(!keeps_cap_bpf("6.1.0-18-amd64", Some("0\n")));
        assert!(!keeps_cap_bpf("6.5.0", Some("2")));
        assert!(!keeps_cap_bpf("6.18.0-rc1", Some("2")));
    }

    #[test]
    fn capget_reads_this_thread() {
        // Works for any user; compares with /proc/thread-self/status.
        let d = capget().unwrap();
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap();
        assert_eq!(join(&d, |d| d.effective), eff);
    }
}

//! `filesystem`: reads the mount table `<procfs>/1/mounts` (falling back to
//! `<procfs>/mounts`) and statfs(2)s every mount point below `--path.rootfs`; produces
//! `node_filesystem_{size,free,avail}_bytes`, `node_filesystem_files{,_free}`,
//! `node_filesystem_readonly` and `node_filesystem_device_error`, labelled
//! `{device,fstype,mountpoint}`.
//!
//! A hung mount (stuck NFS or FUSE server) must not hang the scrape: statfs runs on a worker
//! thread, and a call that takes longer than `--collector.filesystem.mount-timeout` marks the
//! mount stuck (`node_filesystem_device_error 1`). A stuck mount is not statted again until
//! its pending statfs returns; the worker is abandoned to it and a fresh one takes over.
use std::{
    collections::HashSet,
    ffi::CString,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use regex::Regex;

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector, read_file, settings_regex,
};
use crate::emit::{Kind, Out};

#[derive(Debug)]
pub struct Filesystem {
    mounts: PathBuf,
    mounts_fallback: PathBuf,
    rootfs: PathBuf,
    mount_points_exclude: Option<Regex>,
    fs_types_exclude: Option<Regex>,
    timeout: Duration,
    /// Mount points whose statfs has not returned yet.
    stuck: Arc<Mutex<HashSet<String>>>,
    worker: Mutex<Option<Worker>>,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    let s = &ctx.settings.filesystem;
    Ok(Box::new(Filesystem {
        mounts: ctx.paths.proc("1/mounts"),
        mounts_fallback: ctx.paths.proc("mounts"),
        rootfs: ctx.paths.rootfs.clone(),
        mount_points_exclude: settings_regex(
            "filesystem.mount_points_exclude",
            &s.mount_points_exclude,
        )?,
        fs_types_exclude: settings_regex("filesystem.fs_types_exclude", &s.fs_types_exclude)?,
        timeout: Duration::from_secs_f64(s.mount_timeout_seconds),
        stuck: Arc::new(Mutex::new(HashSet::new())),
        worker: Mutex::new(None),
    }))
}

/// One line of the mount table.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    pub device: String,
    pub mountpoint: String,
    pub fstype: String,
    pub readonly: bool,
}

/// Undoes the octal escapes the kernel writes for space, tab, newline and backslash (`\040`);
/// an escape beyond a byte (`\777`) is kept as written.
pub fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/mounts` (fstab format: device, mount point, type, options, ...).
pub fn parse(text: &str) -> Result<Vec<Mount>, LineError> {
    let mut mounts = Vec::with_capacity(32);
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut p = line.split_ascii_whitespace();
        let (Some(dev), Some(mp), Some(fstype), Some(opts)) =
            (p.next(), p.next(), p.next(), p.next())
        else {
            return Err(LineError::new(
                i + 1,
                format!("malformed mount point information: {line:?}"),
            ));
        };
        mounts.push(Mount {
            // node_exporter keeps the device as the kernel writes it.
            device: dev.to_string(),
            mountpoint: unescape(mp),
            fstype: fstype.to_string(),
            readonly: opts.split(',').any(|o| o == "ro"),
        });
    }
    Ok(mounts)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub size: f64,
    pub free: f64,
    pub avail: f64,
    pub files: f64,
    pub files_free: f64,
}

fn statfs(path: &Path) -> std::io::Result<Usage> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path contains NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated path; `buf` is a plain C struct statfs fills.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; statfs only writes into `buf`.
    if unsafe { libc::statfs(c.as_ptr(), &mut buf) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let bsize = buf.f_bsize as f64;
    Ok(Usage {
        size: buf.f_blocks as f64 * bsize,
        free: buf.f_bfree as f64 * bsize,
        avail: buf.f_bavail as f64 * bsize,
        files: buf.f_files as f64,
        files_free: buf.f_ffree as f64,
    })
}

type Job = (PathBuf, String);
type Reply = std::io::Result<Usage>;

/// A thread that runs statfs calls one at a time.
#[derive(Debug)]
struct Worker {
    jobs: mpsc::Sender<Job>,
    replies: mpsc::Receiver<Reply>,
}

impl Worker {
    fn spawn(stuck: Arc<Mutex<HashSet<String>>>) -> std::io::Result<Worker> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (reply_tx, replies) = mpsc::channel::<Reply>();
        std::thread::Builder::new()
            .name("statfs".into())
            .spawn(move || {
                for (path, key) in job_rx {
                    let r = statfs(&path);
                    // If this call outlived its timeout the mount was marked stuck; it is
                    // usable again now that the kernel answered.
                    if let Ok(mut s) = stuck.lock()
                        && !s.is_empty()
                    {
                        s.remove(&key);
                    }
                    if reply_tx.send(r).is_err() {
                        return; // abandoned after a timeout
                    }
                }
            })?;
        Ok(Worker { jobs, replies })
    }
}

enum Outcome {
    Ok(Usage),
    Error,
}

impl Filesystem {
    fn excluded(&self, m: &Mount) -> bool {
        self.mount_points_exclude
            .as_ref()
            .is_some_and(|re| re.is_match(&m.mountpoint))
            || self
                .fs_types_exclude
                .as_ref()
                .is_some_and(|re| re.is_match(&m.fstype))
    }

    /// The mount point as the host sees it: a mount table read inside a container lists the
    /// host's mounts below `--path.rootfs`; that prefix is not part of the label.
    fn strip_rootfs(&self, mountpoint: String) -> String {
        let root = self.rootfs.to_string_lossy();
        let root = root.trim_end_matches('/');
        if root.is_empty() {
            return mountpoint;
        }
        match mountpoint.strip_prefix(root) {
            Some("") => "/".to_string(),
            Some(rest) if rest.starts_with('/') => rest.to_string(),
            _ => mountpoint,
        }
    }

    /// The mount point as seen from the agent: below `--path.rootfs`.
    fn host_path(&self, mountpoint: &str) -> PathBuf {
        self.rootfs.join(mountpoint.trim_start_matches('/'))
    }

    fn stat(&self, worker: &mut Option<Worker>, m: &Mount) -> Outcome {
        if self
            .stuck
            .lock()
            .map(|s| s.contains(&m.mountpoint))
            .unwrap_or(false)
        {
            tracing::debug!(mountpoint = %m.mountpoint, "mount point still stuck, not statted");
            return Outcome::Error;
        }
        if worker.is_none() {
            match Worker::spawn(Arc::clone(&self.stuck)) {
                Ok(w) => *worker = Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the statfs thread");
                    return Outcome::Error;
                }
            }
        }
        let w = worker.as_ref().expect("worker was just set");
        if w.jobs
            .send((self.host_path(&m.mountpoint), m.mountpoint.clone()))
            .is_err()
        {
            *worker = None;
            return Outcome::Error;
        }
        match w.replies.recv_timeout(self.timeout) {
            Ok(Ok(u)) => Outcome::Ok(u),
            Ok(Err(e)) => {
                tracing::debug!(mountpoint = %m.mountpoint, error = %e, "statfs failed");
                Outcome::Error
            }
            Err(_) => {
                tracing::warn!(
                    mountpoint = %m.mountpoint,
                    timeout = ?self.timeout,
                    "statfs timed out: mount point marked stuck until it answers"
                );
                if let Ok(mut s) = self.stuck.lock() {
                    s.insert(m.mountpoint.clone());
                }
                *worker = None; // abandon the blocked thread
                Outcome::Error
            }
        }
    }
}

type Labels<'a> = [(&'static str, &'a str); 3];

/// (name, help, value getter) of one statfs-based family.
type UsageFamily = (&'static str, &'static str, fn(&Usage) -> f64);

impl NodeCollector for Filesystem {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let (path, text) = match read_file(&self.mounts) {
            Ok(t) => (&self.mounts, t),
            Err(CollectorError::NoData(_)) => {
                (&self.mounts_fallback, read_file(&self.mounts_fallback)?)
            }
            Err(e) => return Err(e),
        };
        let mut mounts = parse(&text).map_err(|e| e.at(path))?;
        for m in &mut mounts {
            m.mountpoint = self.strip_rootfs(std::mem::take(&mut m.mountpoint));
        }
        let mut seen = HashSet::with_capacity(mounts.len());
        let mut rows: Vec<(&Mount, Outcome)> = Vec::with_capacity(mounts.len());
        {
            let mut worker = self
                .worker
                .lock()
                .map_err(|_| CollectorError::Other("statfs worker lock poisoned".into()))?;
            for m in &mounts {
                if self.excluded(m) {
                    continue;
                }
                if !seen.insert((&m.device, &m.mountpoint, &m.fstype)) {
                    continue;
                }
                let o = self.stat(&mut worker, m);
                rows.push((m, o));
            }
        }
        fn labels(m: &Mount) -> Labels<'_> {
            [
                ("device", m.device.as_str()),
                ("fstype", m.fstype.as_str()),
                ("mountpoint", m.mountpoint.as_str()),
            ]
        }
        let families: [UsageFamily; 5] = [
            (
                "node_filesystem_size_bytes",
                "Filesystem size in bytes.",
                |u| u.size,
            ),
            (
                "node_filesystem_free_bytes",
                "Filesystem free space in bytes.",
                |u| u.free,
            ),
            (
                "node_filesystem_avail_bytes",
                "Filesystem space available to non-root users in bytes.",
                |u| u.avail,
            ),
            (
                "node_filesystem_files",
                "Filesystem total file nodes.",
                |u| u.files,
            ),
            (
                "node_filesystem_files_free",
                "Filesystem total free file nodes.",
                |u| u.files_free,
            ),
        ];
        let mut f = out.family(
            "node_filesystem_device_error",
            "Whether an error occurred while getting statistics for the given device.",
            Kind::Gauge,
        )?;
        for (m, o) in &rows {
            let e = if matches!(o, Outcome::Error) {
                1.0
            } else {
                0.0
            };
            f.sample(&labels(m), e)?;
        }
        drop(f);
        let mut f = out.family(
            "node_filesystem_readonly",
            "Filesystem read-only status.",
            Kind::Gauge,
        )?;
        // As node_exporter: a mount that could not be statted has only device_error.
        for (m, _) in rows.iter().filter(|(_, o)| matches!(o, Outcome::Ok(_))) {
            f.sample(&labels(m), if m.readonly { 1.0 } else { 0.0 })?;
        }
        drop(f);
        for (name, help, get) in families {
            let mut f = out.family(name, help, Kind::Gauge)?;
            for (m, o) in &rows {
                if let Outcome::Ok(u) = o {
                    f.sample(&labels(m), get(u))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mounts_with_escapes() {
        let m =
            parse("/dev/vda / ext4 rw,relatime 0 0\nsrv:/x /mnt/my\\040disk nfs ro,vers=4 0 0\n")
                .unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mountpoint, "/");
        assert!(!m[0].readonly);
        assert_eq!(m[1].mountpoint, "/mnt/my disk");
        assert!(m[1].readonly);
        assert_eq!(parse("/dev/vda /\n").unwrap_err().line, 1);
    }

    #[test]
    fn default_excludes_match_upstream() {
        let mp = Regex::new(crate::config::FILESYSTEM_MOUNT_POINTS_EXCLUDE).unwrap();
        for p in [
            "/dev",
            "/dev/shm",
            "/proc",
            "/sys/fs/cgroup",
            "/run/credentials/x",
            "/var/lib/docker/overlay",
        ] {
            assert!(mp.is_match(p), "{p}");
        }
        for p in ["/", "/run", "/home", "/mnt", "/devices"] {
            assert!(!mp.is_match(p), "{p}");
        }
        let ft = Regex::new(crate::config::FILESYSTEM_FS_TYPES_EXCLUDE).unwrap();
        assert!(ft.is_match("cgroup2") && ft.is_match("tracefs"));
        assert!(!ft.is_match("ext4") && !ft.is_match("tmpfs"));
    }

    #[test]
    fn statfs_of_root_and_of_a_missing_path() {
        let u = statfs(Path::new("/")).unwrap();
        assert!(u.size > 0.0 && u.avail <= u.free && u.free <= u.size);
        assert!(statfs(Path::new("/nonexistent/hostlens")).is_err());
    }
}

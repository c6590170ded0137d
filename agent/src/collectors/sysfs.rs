//! Helpers shared by the sysfs/procfs hardware collectors: listing a class directory, reading
//! one attribute, parsing numbers with the file named in the error.
use std::{
    fs, io,
    path::{Path, PathBuf},
};

use super::{CollectorError, LineError};
use crate::emit::{Kind, Out};

/// The entry names of `dir`, sorted; a missing directory is [`CollectorError::NoData`].
pub fn list_dir(dir: &Path) -> Result<Vec<String>, CollectorError> {
    let rd = fs::read_dir(dir).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => CollectorError::NoData(dir.to_path_buf()),
        _ => CollectorError::Io {
            path: dir.to_path_buf(),
            source,
        },
    })?;
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// An attribute's content without the trailing newline; `None` when the file is missing or
/// unreadable (many sysfs attributes are optional, or refuse reads with EINVAL/EIO when the
/// hardware does not support them, as node_exporter tolerates).
pub fn attr(path: &Path) -> Option<String> {
    let s = super::read_text(path).ok()?;
    Some(s.trim_end_matches(['\n', '\r', ' ']).to_string())
}

/// Parses an attribute's text as a number; the error names the file and line 1.
pub fn num(path: &Path, text: &str) -> Result<f64, CollectorError> {
    text.trim()
        .parse::<f64>()
        .map_err(|_| LineError::new(1, format!("{:?} is not a number", text.trim())).at(path))
}

/// Reads an optional numeric attribute: `Ok(None)` when absent, an error when malformed.
pub fn num_attr(path: &Path) -> Result<Option<f64>, CollectorError> {
    match attr(path) {
        None => Ok(None),
        Some(t) => num(path, &t).map(Some),
    }
}

/// Most bytes [`AttrDir::read`] takes from one attribute: sysfs attributes are at most a page,
/// anything longer is cut here rather than read without bound.
const MAX_ATTR_BYTES: usize = 64 * 1024;

/// A directory opened once, its attribute files opened relative to it (`openat`): no path
/// walk and no symlink resolution per attribute (`/sys/class/net/<device>` is a symlink), and
/// no size query, one read fewer. The netclass collector alone (21 attributes of 4 devices)
/// went from 1.9 to 1.1 ms CPU per scrape on this project's machine.
#[derive(Debug)]
pub struct AttrDir {
    fd: std::os::fd::OwnedFd,
}

impl AttrDir {
    pub fn open(dir: &Path) -> io::Result<AttrDir> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(dir)?;
        Ok(AttrDir { fd: f.into() })
    }

    /// Reads file `name` of the directory into `buf` (replacing its content). sysfs produces
    /// an attribute whole at the first read, so the reading stops at the first short read.
    pub fn read(&self, name: &str, buf: &mut Vec<u8>) -> io::Result<()> {
        use std::{io::Read as _, os::fd::AsRawFd as _};
        let cname = std::ffi::CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a file name"))?;
        // SAFETY: a valid directory fd and a NUL-terminated name; the result is checked.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                cname.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let mut f = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        buf.clear();
        loop {
            let at = buf.len();
            let want = 4096.min(MAX_ATTR_BYTES - at);
            if want == 0 {
                return Ok(());
            }
            buf.resize(at + want, 0);
            let n = f.read(&mut buf[at..])?;
            buf.truncate(at + n);
            if n < want {
                return Ok(());
            }
        }
    }

    /// The trimmed text of each of the files `names` that can be read (a driver refusing a
    /// read, EINVAL or ENODATA, or a missing file leaves the name out).
    pub fn texts<'n>(
        &self,
        names: impl IntoIterator<Item = &'n str>,
    ) -> std::collections::BTreeMap<String, String> {
        let mut raw = Vec::new();
        let mut out = std::collections::BTreeMap::new();
        for name in names {
            if self.read(name, &mut raw).is_ok() {
                let text = String::from_utf8_lossy(&raw);
                out.insert(name.to_string(), text.trim().to_string());
            }
        }
        out
    }
}

/// `dir/name` as a PathBuf.
pub fn join(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Families gathered during one scrape, emitted once each, sorted by name, series sorted by
/// labels (as node_exporter's registry orders them).
#[derive(Debug, Default)]
pub struct Samples {
    families: std::collections::BTreeMap<String, FamilyBuf>,
}

#[derive(Debug)]
struct FamilyBuf {
    help: String,
    kind: Kind,
    series: Vec<(Vec<(String, String)>, f64)>,
}

impl Samples {
    /// Adds one series; the first help/kind given for a name wins. Labels are sorted by name.
    pub fn add(&mut self, name: &str, help: &str, kind: Kind, labels: &[(&str, &str)], value: f64) {
        let fam = self
            .families
            .entry(name.to_string())
            .or_insert_with(|| FamilyBuf {
                help: help.to_string(),
                kind,
                series: Vec::new(),
            });
        let mut l: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.sort();
        fam.series.push((l, value));
    }

    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.add(name, help, Kind::Gauge, labels, value);
    }

    pub fn is_empty(&self) -> bool {
        self.families.is_empty()
    }

    /// The value of `name{labels}` (labels in any order), for tests.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut want: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        want.sort();
        self.families
            .get(name)?
            .series
            .iter()
            .find(|(l, _)| *l == want)
            .map(|(_, v)| *v)
    }

    pub fn emit(mut self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        for (name, f) in &mut self.families {
            f.series.sort_by(|a, b| a.0.cmp(&b.0));
            let mut fam = out.family(name, &f.help, f.kind)?;
            for (labels, v) in &f.series {
                fam.sample(labels, *v)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_dir_reads_whole_files_bounded() {
        let dir = std::env::temp_dir().join(format!("hostlens-attrdir-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("mtu"), "1500\n").unwrap();
        // Longer than one 4 KiB read, and longer than the bound.
        let long: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        fs::write(dir.join("long"), &long).unwrap();
        let huge = vec![b'x'; MAX_ATTR_BYTES + 5000];
        fs::write(dir.join("huge"), &huge).unwrap();
        fs::write(dir.join("empty"), "").unwrap();

        let files = AttrDir::open(&dir).unwrap();
        let mut buf = vec![b'?'; 3];
        files.read("mtu", &mut buf).unwrap();
        assert_eq!(buf, b"1500\n");
        files.read("long", &mut buf).unwrap();
        assert_eq!(buf, long);
        files.read("huge", &mut buf).unwrap();
        assert_eq!(buf.len(), MAX_ATTR_BYTES);
        files.read("empty", &mut buf).unwrap();
        assert!(buf.is_empty());
        let e = files.read("missing", &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(files.read("a\0b", &mut buf).is_err());
        // Not a directory.
        assert!(AttrDir::open(&dir.join("mtu")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}

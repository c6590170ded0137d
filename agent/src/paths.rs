//! Configurable filesystem roots (`--path.procfs`, `--path.sysfs`, `--path.rootfs`), as
//! node_exporter's `collector/paths.go`: every collector reads through them so that it can run
//! against a fixture tree.
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
    pub rootfs: PathBuf,
    /// udev database (`--path.udev.data`).
    pub udev_data: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            procfs: PathBuf::from("/proc"),
            sysfs: PathBuf::from("/sys"),
            rootfs: PathBuf::from("/"),
            udev_data: PathBuf::from("/run/udev/data"),
        }
    }
}

impl Paths {
    /// `rel` below the procfs root, e.g. `proc("meminfo")`.
    pub fn proc(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.procfs.join(rel)
    }

    /// `rel` below the sysfs root, e.g. `sys("class/net")`.
    pub fn sys(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.sysfs.join(rel)
    }

    /// `rel` below the udev database, e.g. `udev("b8:0")`.
    pub fn udev(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.udev_data.join(rel)
    }

    /// `rel` below the root filesystem, e.g. `root("etc/os-release")`.
    pub fn root(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.rootfs.join(rel)
    }
}

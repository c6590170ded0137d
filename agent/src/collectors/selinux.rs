//! `selinux`: reads `<sysfs>/fs/selinux/enforce` (present when selinuxfs is mounted, i.e.
//! SELinux is enabled) and `<rootfs>/etc/selinux/config` (`SELINUX=`); produces
//! node_exporter 1.5's `node_selinux_enabled`, and when enabled
//! `node_selinux_config_mode` and `node_selinux_current_mode` (1 enforcing, 0 permissive,
//! -1 disabled).
use std::path::PathBuf;

use super::{CollectorContext, CollectorError, LineError, NodeCollector, sysfs::Samples};
use crate::emit::Out;

#[derive(Debug)]
pub struct Selinux {
    enforce: PathBuf,
    config: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Selinux {
        enforce: ctx.paths.sys("fs/selinux/enforce"),
        config: ctx.paths.root("etc/selinux/config"),
    }))
}

/// The mode `SELINUX=` sets in the config file; -1 (disabled) when absent.
pub fn config_mode(text: &str) -> f64 {
    for line in text.lines() {
        if let Some(v) = line.trim().strip_prefix("SELINUX=") {
            return match v.trim().trim_matches('"').to_ascii_lowercase().as_str() {
                "enforcing" => 1.0,
                "permissive" => 0.0,
                _ => -1.0,
            };
        }
    }
    -1.0
}

/// The kernel's current mode from `enforce` ("1" or "0").
pub fn current_mode(text: &str) -> Result<f64, LineError> {
    match text.trim() {
        "1" => Ok(1.0),
        "0" => Ok(0.0),
        other => Err(LineError::new(1, format!("{other:?} is neither 0 nor 1"))),
    }
}

impl NodeCollector for Selinux {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let mut m = Samples::default();
        let help = "SELinux is enabled, 1 is true, 0 is false";
        match super::read_text(&self.enforce) {
            Err(_) => m.gauge("node_selinux_enabled", help, &[], 0.0),
            Ok(text) => {
                let current = current_mode(&text).map_err(|e| e.at(&self.enforce))?;
                let config = super::read_text(&self.config).unwrap_or_default();
                m.gauge("node_selinux_enabled", help, &[], 1.0);
                m.gauge(
                    "node_selinux_config_mode",
                    "Configured SELinux enforcement mode",
                    &[],
                    config_mode(&config),
                );
                m.gauge(
                    "node_selinux_current_mode",
                    "Current SELinux enforcement mode",
                    &[],
                    current,
                );
            }
        }
        m.emit(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(config_mode("# x\nSELINUX=enforcing\n"), 1.0);
        assert_eq!(config_mode("SELINUX=permissive"), 0.0);
        assert_eq!(config_mode("SELINUX=disabled"), -1.0);
        assert_eq!(config_mode(""), -1.0);
        assert_eq!(current_mode("1\n").unwrap(), 1.0);
        assert!(current_mode("2").is_err());
    }
}

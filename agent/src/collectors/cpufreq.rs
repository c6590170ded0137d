//! `cpufreq`: reads `<sysfs>/devices/system/cpu/cpu<N>/cpufreq/{cpuinfo,scaling}_{cur,max,min}_freq`
//! (kHz); produces node_exporter 1.5's `node_cpu_frequency_hertz`,
//! `node_cpu_frequency_{max,min}_hertz`, `node_cpu_scaling_frequency_hertz` and
//! `node_cpu_scaling_frequency_{max,min}_hertz`, label `cpu`.
//!
//! A missing file leaves its family out for that CPU (cpuinfo_cur_freq is root-only on many
//! systems). node_exporter 1.5 fails the whole collector when a string attribute such as
//! `scaling_setspeed` is missing; those are not exported, so hostlens does not require them.
use std::path::PathBuf;

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector,
    sysfs::{AttrDir, Samples, list_dir},
};
use crate::emit::Out;

#[derive(Debug)]
pub struct Cpufreq {
    cpu_dir: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Cpufreq {
        cpu_dir: ctx.paths.sys("devices/system/cpu"),
    }))
}

/// (file, family, help) in node_exporter's order.
pub const FILES: [(&str, &str, &str); 6] = [
    (
        "cpuinfo_cur_freq",
        "node_cpu_frequency_hertz",
        "Current cpu thread frequency in hertz.",
    ),
    (
        "cpuinfo_max_freq",
        "node_cpu_frequency_max_hertz",
        "Maximum cpu thread frequency in hertz.",
    ),
    (
        "cpuinfo_min_freq",
        "node_cpu_frequency_min_hertz",
        "Minimum cpu thread frequency in hertz.",
    ),
    (
        "scaling_cur_freq",
        "node_cpu_scaling_frequency_hertz",
        "Current scaled CPU thread frequency in hertz.",
    ),
    (
        "scaling_max_freq",
        "node_cpu_scaling_frequency_max_hertz",
        "Maximum scaled CPU thread frequency in hertz.",
    ),
    (
        "scaling_min_freq",
        "node_cpu_scaling_frequency_min_hertz",
        "Minimum scaled CPU thread frequency in hertz.",
    ),
];

/// Parses one frequency file (kHz, unsigned) into hertz.
pub fn khz(text: &str) -> Result<f64, LineError> {
    text.trim()
        .parse::<u64>()
        .map(|v| v as f64 * 1000.0)
        .map_err(|_| LineError::new(1, format!("{:?} is not a frequency in kHz", text.trim())))
}

impl NodeCollector for Cpufreq {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let mut m = Samples::default();
        for entry in list_dir(&self.cpu_dir)? {
            let Some(n) = entry.strip_prefix("cpu") else {
                continue;
            };
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let dir = self.cpu_dir.join(&entry).join("cpufreq");
            // No cpufreq directory (no frequency driver, an offline CPU): nothing to read.
            let Ok(files) = AttrDir::open(&dir) else {
                continue;
            };
            let texts = files.texts(FILES.iter().map(|(file, _, _)| *file));
            for (file, family, help) in FILES {
                if let Some(text) = texts.get(file) {
                    let hz = khz(text).map_err(|e| e.at(&dir.join(file)))?;
                    m.gauge(family, help, &[("cpu", n)], hz);
                }
            }
        }
        m.emit(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn khz_to_hertz() {
        assert_eq!(khz("1800000\n").unwrap(), 1.8e9);
        assert!(khz("<unsupported>").is_err());
        assert!(khz("-5").is_err());
    }
}

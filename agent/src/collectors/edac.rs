//! `edac`: reads `<sysfs>/devices/system/edac/mc/mc<N>/{ce,ue}_count`, `{ce,ue}_noinfo_count`
//! and `csrow<M>/{ce,ue}_count`; produces node_exporter 1.5's
//! `node_edac_{correctable,uncorrectable}_errors_total{controller}` and
//! `node_edac_csrow_{correctable,uncorrectable}_errors_total{controller,csrow}` (the
//! `noinfo` counts as `csrow="unknown"`).
use std::path::{Path, PathBuf};

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector, read_file,
    sysfs::{Samples, list_dir},
};
use crate::emit::{Kind, Out};

#[derive(Debug)]
pub struct Edac {
    mc: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Edac {
        mc: ctx.paths.sys("devices/system/edac/mc"),
    }))
}

pub fn count(text: &str) -> Result<f64, LineError> {
    text.trim()
        .parse::<u64>()
        .map(|v| v as f64)
        .map_err(|_| LineError::new(1, format!("{:?} is not an error count", text.trim())))
}

fn read_count(path: &Path) -> Result<f64, CollectorError> {
    let text = read_file(path)?;
    count(&text).map_err(|e| e.at(path))
}

fn numbered<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let n = name.strip_prefix(prefix)?;
    n.starts_with(|c: char| c.is_ascii_digit()).then_some(n)
}

const CE: &str = "node_edac_correctable_errors_total";
const UE: &str = "node_edac_uncorrectable_errors_total";
const CSROW_CE: &str = "node_edac_csrow_correctable_errors_total";
const CSROW_UE: &str = "node_edac_csrow_uncorrectable_errors_total";

impl NodeCollector for Edac {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let mut m = Samples::default();
        let ce_help = "Total correctable memory errors.";
        let ue_help = "Total uncorrectable memory errors.";
        let csce_help = "Total correctable memory errors for this csrow.";
        let csue_help = "Total uncorrectable memory errors for this csrow.";
        for entry in list_dir(&self.mc)? {
            let Some(n) = numbered(&entry, "mc") else {
                continue;
            };
            let dir = self.mc.join(&entry);
            let c = [("controller", n)];
            m.add(
                CE,
                ce_help,
                Kind::Counter,
                &c,
                read_count(&dir.join("ce_count"))?,
            );
            let v = read_count(&dir.join("ce_noinfo_count"))?;
            m.add(
                CSROW_CE,
                csce_help,
                Kind::Counter,
                &[("controller", n), ("csrow", "unknown")],
                v,
            );
            m.add(
                UE,
                ue_help,
                Kind::Counter,
                &c,
                read_count(&dir.join("ue_count"))?,
            );
            let v = read_count(&dir.join("ue_noinfo_count"))?;
            m.add(
                CSROW_UE,
                csue_help,
                Kind::Counter,
                &[("controller", n), ("csrow", "unknown")],
                v,
            );
            for row in list_dir(&dir)? {
                let Some(r) = numbered(&row, "csrow") else {
                    continue;
                };
                let rd = dir.join(&row);
                let l = [("controller", n), ("csrow", r)];
                m.add(
                    CSROW_CE,
                    csce_help,
                    Kind::Counter,
                    &l,
                    read_count(&rd.join("ce_count"))?,
                );
                m.add(
                    CSROW_UE,
                    csue_help,
                    Kind::Counter,
                    &l,
                    read_count(&rd.join("ue_count"))?,
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
    fn counts_and_names() {
        assert_eq!(count("5\n").unwrap(), 5.0);
        assert!(count("five").is_err());
        assert_eq!(numbered("mc0", "mc"), Some("0"));
        assert_eq!(numbered("mcx", "mc"), None);
        assert_eq!(numbered("csrow12", "csrow"), Some("12"));
    }
}

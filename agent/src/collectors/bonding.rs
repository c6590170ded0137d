//! `bonding`: reads `<sysfs>/class/net/bonding_masters`, each master's `bonding/slaves` and
//! each slave's `<master>/lower_<slave>/bonding_slave/mii_status` (older kernels:
//! `slave_<slave>`); produces `node_bonding_slaves{master}` and `node_bonding_active{master}`
//! (slaves whose MII status is "up"), as node_exporter 1.5.
use std::path::PathBuf;

use super::{CollectorContext, CollectorError, NodeCollector, read_file, sysfs::Samples};
use crate::emit::Out;

#[derive(Debug)]
pub struct Bonding {
    class: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Bonding {
        class: ctx.paths.sys("class/net"),
    }))
}

/// Counts (slaves, active slaves) from the slaves' `mii_status` texts.
pub fn count<'a>(statuses: impl IntoIterator<Item = &'a str>) -> (f64, f64) {
    let (mut n, mut up) = (0.0, 0.0);
    for s in statuses {
        n += 1.0;
        if s.trim() == "up" {
            up += 1.0;
        }
    }
    (n, up)
}

impl NodeCollector for Bonding {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let masters = read_file(&self.class.join("bonding_masters"))?;
        let mut m = Samples::default();
        for master in masters.split_whitespace() {
            let dir = self.class.join(master);
            let slaves = read_file(&dir.join("bonding/slaves"))?;
            let mut statuses = Vec::new();
            for slave in slaves.split_whitespace() {
                let lower = dir.join(format!("lower_{slave}/bonding_slave/mii_status"));
                let status = match read_file(&lower) {
                    Err(CollectorError::NoData(_)) => {
                        read_file(&dir.join(format!("slave_{slave}/bonding_slave/mii_status")))?
                    }
                    other => other?,
                };
                statuses.push(status);
            }
            let (n, up) = count(statuses.iter().map(String::as_str));
            m.gauge(
                "node_bonding_slaves",
                "Number of configured slaves per bonding interface.",
                &[("master", master)],
                n,
            );
            m.gauge(
                "node_bonding_active",
                "Number of active slaves per bonding interface.",
                &[("master", master)],
                up,
            );
        }
        m.emit(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_slaves() {
        assert_eq!(count(["up\n", "down\n", "up"]), (3.0, 2.0));
        assert_eq!(count([]), (0.0, 0.0));
    }
}

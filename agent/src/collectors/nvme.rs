//! `nvme`: reads `<sysfs>/class/nvme/<device>/{serial,model,state,firmware_rev}`; produces
//! `node_nvme_info{device,firmware_revision,model,serial,state}` (constant 1), as
//! node_exporter 1.5. A missing attribute is exported as "" (node_exporter fails the scrape).
use std::path::PathBuf;

use super::{
    CollectorContext, CollectorError, NodeCollector,
    sysfs::{Samples, attr, list_dir},
};
use crate::emit::Out;

#[derive(Debug)]
pub struct Nvme {
    class: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Nvme {
        class: ctx.paths.sys("class/nvme"),
    }))
}

/// One controller's info series. Values are trimmed of surrounding blanks (the kernel pads
/// serial and model with spaces).
pub fn info(m: &mut Samples, device: &str, serial: &str, model: &str, state: &str, fw: &str) {
    m.gauge(
        "node_nvme_info",
        "Non-numeric data from /sys/class/nvme/<device>, value is always 1.",
        &[
            ("device", device),
            ("firmware_revision", fw.trim()),
            ("model", model.trim()),
            ("serial", serial.trim()),
            ("state", state.trim()),
        ],
        1.0,
    );
}

impl NodeCollector for Nvme {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let mut m = Samples::default();
        for dev in list_dir(&self.class)? {
            let d = self.class.join(&dev);
            let a = |f: &str| attr(&d.join(f)).unwrap_or_default();
            info(
                &mut m,
                &dev,
                &a("serial"),
                &a("model"),
                &a("state"),
                &a("firmware_rev"),
            );
        }
        m.emit(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_labels_are_trimmed() {
        let mut m = Samples::default();
        info(&mut m, "nvme0", "S4 ", "Samsung  ", "live", "2B2Q");
        assert_eq!(
            m.get(
                "node_nvme_info",
                &[
                    ("device", "nvme0"),
                    ("firmware_revision", "2B2Q"),
                    ("model", "Samsung"),
                    ("serial", "S4"),
                    ("state", "live")
                ]
            ),
            Some(1.0)
        );
    }
}

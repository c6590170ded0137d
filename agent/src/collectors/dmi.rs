//! `dmi`: reads `<sysfs>/class/dmi/id/*` once at start (DMI data does not change while the
//! system runs, as node_exporter 1.5 reads it once too); produces
//! `node_dmi_info{bios_date,bios_release,bios_vendor,bios_version,board_*,chassis_*,
//! product_*,system_vendor}` (constant 1), with a label for each attribute that could be read
//! (root-only ones such as `product_serial` are left out when not readable).
use super::{CollectorContext, CollectorError, NodeCollector, sysfs::Samples};
use crate::emit::Out;

#[derive(Debug)]
pub struct Dmi {
    labels: Vec<(String, String)>,
}

/// (sysfs file, label) in node_exporter's label order.
pub const FIELDS: &[(&str, &str)] = &[
    ("bios_date", "bios_date"),
    ("bios_release", "bios_release"),
    ("bios_vendor", "bios_vendor"),
    ("bios_version", "bios_version"),
    ("board_asset_tag", "board_asset_tag"),
    ("board_name", "board_name"),
    ("board_serial", "board_serial"),
    ("board_vendor", "board_vendor"),
    ("board_version", "board_version"),
    ("chassis_asset_tag", "chassis_asset_tag"),
    ("chassis_serial", "chassis_serial"),
    ("chassis_vendor", "chassis_vendor"),
    ("chassis_version", "chassis_version"),
    ("product_family", "product_family"),
    ("product_name", "product_name"),
    ("product_serial", "product_serial"),
    ("product_sku", "product_sku"),
    ("product_uuid", "product_uuid"),
    ("product_version", "product_version"),
    ("sys_vendor", "system_vendor"),
];

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    let dir = ctx.paths.sys("class/dmi/id");
    let mut labels = Vec::new();
    for (file, label) in FIELDS {
        if let Ok(raw) = std::fs::read(dir.join(file)) {
            let text = String::from_utf8_lossy(&raw);
            labels.push((label.to_string(), text.trim().to_string()));
        }
    }
    Ok(Box::new(Dmi { labels }))
}

impl NodeCollector for Dmi {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        if self.labels.is_empty() {
            return Err(CollectorError::NoData("class/dmi/id".into()));
        }
        let mut m = Samples::default();
        let l: Vec<(&str, &str)> = self
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        m.gauge(
            "node_dmi_info",
            "A metric with a constant '1' value labeled by bios_date, bios_release, bios_vendor, bios_version, board_asset_tag, board_name, board_serial, board_vendor, board_version, chassis_asset_tag, chassis_serial, chassis_vendor, chassis_version, product_family, product_name, product_serial, product_sku, product_uuid, product_version, system_vendor if provided by DMI.",
            &l,
            1.0,
        );
        m.emit(out)
    }
}

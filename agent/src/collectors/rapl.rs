//! `rapl`: reads `<sysfs>/class/powercap/<zone>/{name,energy_uj,max_energy_range_uj}` (Intel
//! RAPL power zones); produces `node_rapl_<name>_joules_total{index,path}` counters, as
//! node_exporter 1.5: `package-0` becomes name `package`, index `0`; a name without an index
//! suffix gets the count of earlier zones of that name; `path` is the zone's sysfs path.
//! With `--collector.rapl.enable-zone-label`: one `node_rapl_joules_total{index,path,rapl_zone}`.
use std::{collections::HashMap, path::PathBuf};

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector,
    sysfs::{Samples, attr, list_dir},
};
use crate::emit::{Kind, Out};

#[derive(Debug)]
pub struct Rapl {
    class: PathBuf,
    zone_label: bool,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Rapl {
        class: ctx.paths.sys("class/powercap"),
        zone_label: ctx.settings.rapl.enable_zone_label,
    }))
}

/// Splits `package-0` into (0, "package"); otherwise uses the usage count.
pub fn index_and_name(counts: &HashMap<String, usize>, name: &str) -> (usize, String) {
    let parts: Vec<&str> = name.split('-').collect();
    if parts.len() == 2
        && let Ok(i) = parts[1].parse::<usize>()
    {
        return (i, parts[0].to_string());
    }
    (counts.get(name).copied().unwrap_or(0), name.to_string())
}

/// A metric-name-safe form of a zone name.
fn metric_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub fn microjoules(text: &str) -> Result<f64, LineError> {
    text.trim()
        .parse::<u64>()
        .map(|v| v as f64 / 1e6)
        .map_err(|_| LineError::new(1, format!("{:?} is not a microjoule count", text.trim())))
}

impl NodeCollector for Rapl {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let mut m = Samples::default();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for zone in list_dir(&self.class)? {
            let dir = self.class.join(&zone);
            let Some(raw_name) = attr(&dir.join("name")) else {
                continue;
            };
            let (index, name) = index_and_name(&counts, raw_name.trim());
            let max = dir.join("max_energy_range_uj");
            let max_text = super::read_file(&max)?;
            microjoules(&max_text).map_err(|e| e.at(&max))?;
            counts.insert(name.clone(), index + 1);
            let energy = dir.join("energy_uj");
            let text = super::read_file(&energy)?;
            let joules = microjoules(&text).map_err(|e| e.at(&energy))?;
            let part = metric_part(&name);
            let idx = index.to_string();
            let path = dir.display().to_string();
            if self.zone_label {
                m.add(
                    "node_rapl_joules_total",
                    "Current RAPL value in joules",
                    Kind::Counter,
                    &[
                        ("index", idx.as_str()),
                        ("path", path.as_str()),
                        ("rapl_zone", name.as_str()),
                    ],
                    joules,
                );
            } else {
                m.add(
                    &format!("node_rapl_{part}_joules_total"),
                    &format!("Current RAPL {name} value in joules"),
                    Kind::Counter,
                    &[("index", idx.as_str()), ("path", path.as_str())],
                    joules,
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
    fn zone_names_and_indexes() {
        let mut c = HashMap::new();
        assert_eq!(index_and_name(&c, "package-1"), (1, "package".to_string()));
        assert_eq!(index_and_name(&c, "dram"), (0, "dram".to_string()));
        c.insert("dram".to_string(), 1);
        assert_eq!(index_and_name(&c, "dram"), (1, "dram".to_string()));
        assert_eq!(index_and_name(&c, "a-b-2"), (0, "a-b-2".to_string()));
        assert_eq!(microjoules("240422366267\n").unwrap(), 240422.366267);
        assert!(microjoules("-1").is_err());
        assert_eq!(metric_part("a-b"), "a_b");
    }
}

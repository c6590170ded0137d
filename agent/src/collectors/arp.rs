//! `arp`: reads `<procfs>/net/arp`; produces `node_arp_entries{device}`: ARP table entries
//! per interface (`--collector.arp.device-include` / `-exclude` select devices).
use std::path::PathBuf;

use regex::Regex;

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector, read_file, settings_regex,
};
use crate::emit::{Kind, Out};

#[derive(Debug)]
pub struct Arp {
    path: PathBuf,
    include: Option<Regex>,
    exclude: Option<Regex>,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Arp {
        path: ctx.paths.proc("net/arp"),
        include: settings_regex("arp.device_include", &ctx.settings.arp.device_include)?,
        exclude: settings_regex("arp.device_exclude", &ctx.settings.arp.device_exclude)?,
    }))
}

/// Entries per device, in order of first appearance.
pub fn parse(text: &str) -> Result<Vec<(&str, f64)>, LineError> {
    let mut v: Vec<(&str, f64)> = Vec::with_capacity(4);
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let Some(dev) = line.split_ascii_whitespace().nth(5) else {
            return Err(LineError::new(i + 1, "fewer than 6 columns"));
        };
        match v.iter_mut().find(|(d, _)| *d == dev) {
            Some((_, n)) => *n += 1.0,
            None => v.push((dev, 1.0)),
        }
    }
    Ok(v)
}

impl NodeCollector for Arp {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let text = read_file(&self.path)?;
        let devs = parse(&text).map_err(|e| e.at(&self.path))?;
        let mut f = out.family("node_arp_entries", "ARP entries by device", Kind::Gauge)?;
        for (d, n) in devs {
            if self.exclude.as_ref().is_some_and(|re| re.is_match(d))
                || self.include.as_ref().is_some_and(|re| !re.is_match(d))
            {
                continue;
            }
            f.sample(&[("device", d)], n)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_device() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n10.0.0.1 0x1 0x2 aa:bb:cc:dd:ee:ff * eth0\n10.0.0.2 0x1 0x2 aa:bb:cc:dd:ee:fe * eth0\n10.1.0.1 0x1 0x2 aa:bb:cc:dd:ee:fd * eth1\n";
        assert_eq!(parse(t).unwrap(), vec![("eth0", 2.0), ("eth1", 1.0)]);
        assert_eq!(parse("h\n1 2 3\n").unwrap_err().line, 2);
    }
}

//! `netdev`: reads `<procfs>/net/dev` and `<sysfs>/class/net/<dev>/statistics/rx_nohandler`;
//! produces `node_network_{receive,transmit}_<field>_total{device}` (`bytes`, `packets`,
//! `errs`, `drop`, `fifo`, `frame`, `compressed`, `multicast`, `nohandler`; `colls`,
//! `carrier`). `--collector.netdev.device-include` / `-exclude` select devices.
use std::path::PathBuf;

use regex::Regex;

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector, parse_f64, read_file,
    settings_regex,
};
use crate::emit::{Kind, Out};

/// `/proc/net/dev` columns after the device name, in kernel order (net/core/net-procfs.c).
const FIELDS: [&str; 16] = [
    "receive_bytes",
    "receive_packets",
    "receive_errs",
    "receive_drop",
    "receive_fifo",
    "receive_frame",
    "receive_compressed",
    "receive_multicast",
    "transmit_bytes",
    "transmit_packets",
    "transmit_errs",
    "transmit_drop",
    "transmit_fifo",
    "transmit_colls",
    "transmit_carrier",
    "transmit_compressed",
];

#[derive(Debug)]
pub struct Netdev {
    path: PathBuf,
    class_net: PathBuf,
    include: Option<Regex>,
    exclude: Option<Regex>,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    let s = &ctx.settings.netdev;
    Ok(Box::new(Netdev {
        path: ctx.paths.proc("net/dev"),
        class_net: ctx.paths.sys("class/net"),
        include: settings_regex("netdev.device_include", &s.device_include)?,
        exclude: settings_regex("netdev.device_exclude", &s.device_exclude)?,
    }))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Device<'a> {
    pub name: &'a str,
    pub values: [f64; 16],
}

/// Parses `/proc/net/dev` (two header lines, then `name: 16 numbers`).
pub fn parse(text: &str) -> Result<Vec<Device<'_>>, LineError> {
    let mut devs = Vec::with_capacity(8);
    for (i, line) in text.lines().enumerate().skip(2) {
        if line.trim().is_empty() {
            continue;
        }
        let Some((name, rest)) = line.split_once(':') else {
            return Err(LineError::new(i + 1, format!("no ':' in {line:?}")));
        };
        let mut values = [0.0; 16];
        let mut n = 0;
        for (k, v) in rest.split_ascii_whitespace().enumerate() {
            if k >= 16 {
                return Err(LineError::new(i + 1, "more than 16 statistics"));
            }
            values[k] = parse_f64(v, i + 1, FIELDS[k])?;
            n = k + 1;
        }
        if n != 16 {
            return Err(LineError::new(
                i + 1,
                format!("{} statistics, expected 16", n),
            ));
        }
        devs.push(Device {
            name: name.trim(),
            values,
        });
    }
    Ok(devs)
}

impl Netdev {
    fn wanted(&self, dev: &str) -> bool {
        if self.exclude.as_ref().is_some_and(|re| re.is_match(dev)) {
            return false;
        }
        self.include.as_ref().is_none_or(|re| re.is_match(dev))
    }
}

impl NodeCollector for Netdev {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let text = read_file(&self.path)?;
        let mut devs = parse(&text).map_err(|e| e.at(&self.path))?;
        devs.retain(|d| self.wanted(d.name));
        let mut name = String::with_capacity(64);
        let mut help = String::with_capacity(64);
        for (k, field) in FIELDS.iter().enumerate() {
            name.clear();
            name.push_str("node_network_");
            name.push_str(field);
            name.push_str("_total");
            help.clear();
            help.push_str("Network device statistic ");
            help.push_str(field);
            help.push('.');
            let mut f = out.family(&name, &help, Kind::Counter)?;
            for d in &devs {
                f.sample(&[("device", d.name)], d.values[k])?;
            }
            drop(f);
            if k == 7 {
                // rx_nohandler is not in /proc/net/dev; the kernel exports it in sysfs.
                let nohandler: Vec<(&str, f64)> = devs
                    .iter()
                    .filter_map(|d| {
                        let p = self.class_net.join(d.name).join("statistics/rx_nohandler");
                        let v = std::fs::read_to_string(p)
                            .ok()?
                            .trim()
                            .parse::<f64>()
                            .ok()?;
                        Some((d.name, v))
                    })
                    .collect();
                if !nohandler.is_empty() {
                    let mut f = out.family(
                        "node_network_receive_nohandler_total",
                        "Network device statistic receive_nohandler.",
                        Kind::Counter,
                    )?;
                    for (d, v) in nohandler {
                        f.sample(&[("device", d)], v)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:    1234      10    0    0    0     0          0         0     1234      10    0    0    0     0       0          0\n  eth0:359497684  251424    1    2    3     4          5         6  4696363   53424    7    8    9    10      11         12\n";

    #[test]
    fn parses_devices() {
        let d = parse(DEV).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].name, "lo");
        assert_eq!(d[1].name, "eth0");
        assert_eq!(d[1].values[0], 359497684.0);
        assert_eq!(d[1].values[15], 12.0);
    }

    #[test]
    fn names_the_bad_line() {
        let bad = DEV.replace("359497684", "lots");
        assert_eq!(parse(&bad).unwrap_err().line, 4);
        assert_eq!(parse("a\nb\neth0 1 2\n").unwrap_err().line, 3);
        assert_eq!(parse("a\nb\neth0: 1 2\n").unwrap_err().line, 3);
    }
}

//! `netdev`: reads `<procfs>/net/dev` and `<sysfs>/class/net/<dev>/statistics/rx_nohandler`;
//! produces `node_network_{receive,transmit}_<field>_total{device}` (`bytes`, `packets`,
//! `errs`, `drop`, `fifo`, `frame`, `compressed`, `multicast`, `nohandler`; `colls`,
//! `carrier`). `--collector.netdev.device-include` / `-exclude` select devices.
//! With `--collector.netdev.enable-detailed-metrics` the counters are the kernel's individual
//! ones from `<sysfs>/class/net/<dev>/statistics/` under node_exporter's netlink names
//! (`receive_crc_errors`, `collisions`, …); with `--collector.netdev.address-info`,
//! getifaddrs(3) gives `node_network_address_info{device,address,netmask,scope}`.
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
    address_info: bool,
    detailed: bool,
    nohandler: bool,
}

/// Detailed mode: node_exporter's netlink statistic names and the sysfs file of each
/// (`struct rtnl_link_stats64`).
const DETAILED: [(&str, &str); 24] = [
    ("receive_packets", "rx_packets"),
    ("transmit_packets", "tx_packets"),
    ("receive_bytes", "rx_bytes"),
    ("transmit_bytes", "tx_bytes"),
    ("receive_errors", "rx_errors"),
    ("transmit_errors", "tx_errors"),
    ("receive_dropped", "rx_dropped"),
    ("transmit_dropped", "tx_dropped"),
    ("multicast", "multicast"),
    ("collisions", "collisions"),
    ("receive_length_errors", "rx_length_errors"),
    ("receive_over_errors", "rx_over_errors"),
    ("receive_crc_errors", "rx_crc_errors"),
    ("receive_frame_errors", "rx_frame_errors"),
    ("receive_fifo_errors", "rx_fifo_errors"),
    ("receive_missed_errors", "rx_missed_errors"),
    ("transmit_aborted_errors", "tx_aborted_errors"),
    ("transmit_carrier_errors", "tx_carrier_errors"),
    ("transmit_fifo_errors", "tx_fifo_errors"),
    ("transmit_heartbeat_errors", "tx_heartbeat_errors"),
    ("transmit_window_errors", "tx_window_errors"),
    ("receive_compressed", "rx_compressed"),
    ("transmit_compressed", "tx_compressed"),
    ("receive_nohandler", "rx_nohandler"),
];

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    let s = &ctx.settings.netdev;
    Ok(Box::new(Netdev {
        path: ctx.paths.proc("net/dev"),
        class_net: ctx.paths.sys("class/net"),
        include: settings_regex("netdev.device_include", &s.device_include)?,
        exclude: settings_regex("netdev.device_exclude", &s.device_exclude)?,
        address_info: s.address_info,
        detailed: s.enable_detailed_metrics,
        nohandler: s.netlink,
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

/// One address of an interface: (device, address, prefix length, scope).
pub type Address = (String, std::net::IpAddr, u32, &'static str);

/// node_exporter's scope names for an address.
pub fn scope(ip: &std::net::IpAddr) -> &'static str {
    use std::net::IpAddr;
    let link_local = match ip {
        IpAddr::V4(a) => a.is_loopback() || a.is_link_local(),
        IpAddr::V6(a) => {
            a.is_loopback()
                || (a.segments()[0] & 0xffc0) == 0xfe80
                || (a.is_multicast() && (a.segments()[0] & 0x000f) == 2)
        }
    };
    if link_local {
        return "link-local";
    }
    if let IpAddr::V6(a) = ip
        && a.is_multicast()
        && (a.segments()[0] & 0x000f) == 1
    {
        return "interface-local";
    }
    let global = match ip {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_broadcast() || a.is_multicast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
    };
    if global { "global" } else { "" }
}

/// The interfaces' IPv4 and IPv6 addresses from getifaddrs(3).
fn addresses() -> Result<Vec<Address>, CollectorError> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(CollectorError::Other(format!(
            "getifaddrs: {}",
            std::io::Error::last_os_error()
        )));
    }
    let mut v = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned; its pointers are valid
        // until freeifaddrs, and sockaddrs are read as the type their family says.
        unsafe {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
                continue;
            }
            let name = std::ffi::CStr::from_ptr(ifa.ifa_name)
                .to_string_lossy()
                .into_owned();
            let (ip, bits) = match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    let m = if ifa.ifa_netmask.is_null() {
                        0
                    } else {
                        (*(ifa.ifa_netmask as *const libc::sockaddr_in))
                            .sin_addr
                            .s_addr
                            .count_ones()
                    };
                    (
                        IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))),
                        m,
                    )
                }
                libc::AF_INET6 => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    let m = if ifa.ifa_netmask.is_null() {
                        0
                    } else {
                        (*(ifa.ifa_netmask as *const libc::sockaddr_in6))
                            .sin6_addr
                            .s6_addr
                            .iter()
                            .map(|b| b.count_ones())
                            .sum()
                    };
                    (IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)), m)
                }
                _ => continue,
            };
            let sc = scope(&ip);
            v.push((name, ip, bits, sc));
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(v)
}

impl Netdev {
    fn update_detailed(
        &self,
        out: &mut Out<'_, '_>,
        devs: &[Device<'_>],
    ) -> Result<(), CollectorError> {
        let mut values: Vec<Vec<Option<f64>>> = Vec::with_capacity(devs.len());
        for d in devs {
            let dir = self.class_net.join(d.name).join("statistics");
            values.push(
                DETAILED
                    .iter()
                    .map(|(_, file)| {
                        super::read_text(dir.join(file))
                            .ok()
                            .and_then(|t| t.trim().parse::<f64>().ok())
                    })
                    .collect(),
            );
        }
        let mut name = String::with_capacity(64);
        let mut help = String::with_capacity(64);
        for (k, (stat, _)) in DETAILED.iter().enumerate() {
            if !values.iter().any(|v| v[k].is_some()) {
                continue;
            }
            name.clear();
            name.push_str("node_network_");
            name.push_str(stat);
            name.push_str("_total");
            help.clear();
            help.push_str("Network device statistic ");
            help.push_str(stat);
            help.push('.');
            let mut f = out.family(&name, &help, Kind::Counter)?;
            for (d, v) in devs.iter().zip(&values) {
                if let Some(x) = v[k] {
                    f.sample(&[("device", d.name)], x)?;
                }
            }
        }
        Ok(())
    }
}

impl NodeCollector for Netdev {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let text = read_file(&self.path)?;
        let mut devs = parse(&text).map_err(|e| e.at(&self.path))?;
        devs.retain(|d| self.wanted(d.name));
        if self.address_info {
            let addrs = addresses()?;
            let mut f = out.family(
                "node_network_address_info",
                "node network address by device",
                Kind::Gauge,
            )?;
            for (dev, ip, bits, sc) in addrs.iter().filter(|a| self.wanted(&a.0)) {
                let (ip, bits) = (ip.to_string(), bits.to_string());
                f.sample(
                    &[
                        ("address", ip.as_str()),
                        ("device", dev.as_str()),
                        ("netmask", bits.as_str()),
                        ("scope", *sc),
                    ],
                    1.0,
                )?;
            }
        }
        if self.detailed {
            return self.update_detailed(out, &devs);
        }
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
            if k == 7 && self.nohandler {
                // rx_nohandler is not in /proc/net/dev; the kernel exports it in sysfs.
                let nohandler: Vec<(&str, f64)> = devs
                    .iter()
                    .filter_map(|d| {
                        let p = self.class_net.join(d.name).join("statistics/rx_nohandler");
                        let v = super::read_text(p).ok()?.trim().parse::<f64>().ok()?;
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
    fn scopes_as_node_exporter() {
        let s = |a: &str| scope(&a.parse().unwrap());
        assert_eq!(s("127.0.0.1"), "link-local");
        assert_eq!(s("::1"), "link-local");
        assert_eq!(s("fe80::fc:ff:fe00:1"), "link-local");
        assert_eq!(s("169.254.1.1"), "link-local");
        assert_eq!(s("192.0.2.2"), "global");
        assert_eq!(s("fd00::2"), "global");
        assert_eq!(s("ff01::1"), "interface-local");
    }

    #[test]
    fn names_the_bad_line() {
        let bad = DEV.replace("359497684", "lots");
        assert_eq!(parse(&bad).unwrap_err().line, 4);
        assert_eq!(parse("a\nb\neth0 1 2\n").unwrap_err().line, 3);
        assert_eq!(parse("a\nb\neth0: 1 2\n").unwrap_err().line, 3);
    }
}

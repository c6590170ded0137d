//! `time`: the system clock (`node_time_seconds`), the local time zone
//! (`node_time_zone_offset_seconds{time_zone}`), and the clocksources from
//! `<sysfs>/devices/system/clocksource/clocksource<N>/{available,current}_clocksource`
//! (`node_time_clocksource_{available,current}_info{clocksource,device}`).
use std::{path::PathBuf, time::SystemTime};

use super::{CollectorContext, CollectorError, NodeCollector, read_file};
use crate::emit::{Kind, Out};

#[derive(Debug)]
pub struct Time {
    clocksource: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Time {
        clocksource: ctx.paths.sys("devices/system/clocksource"),
    }))
}

/// The local zone's abbreviation and offset east of UTC at `secs`, as localtime(3) says.
fn zone(secs: i64) -> (String, f64) {
    // SAFETY: localtime_r only reads the environment/zoneinfo and fill `tm`.
    unsafe {
        let t: libc::time_t = secs as libc::time_t;
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() || tm.tm_zone.is_null() {
            return ("UTC".into(), 0.0);
        }
        let name = std::ffi::CStr::from_ptr(tm.tm_zone)
            .to_string_lossy()
            .into_owned();
        (name, tm.tm_gmtoff as f64)
    }
}

impl NodeCollector for Time {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        out.gauge(
            "node_time_seconds",
            "System time in seconds since epoch (1970).",
            now,
        )?;
        let (tz, offset) = zone(now as i64);
        out.family(
            "node_time_zone_offset_seconds",
            "System time zone offset in seconds.",
            Kind::Gauge,
        )?
        .sample(&[("time_zone", tz.as_str())], offset)?;

        let mut sources: Vec<(String, String, String)> = Vec::new();
        let entries = match std::fs::read_dir(&self.clocksource) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(CollectorError::Io {
                    path: self.clocksource.clone(),
                    source,
                });
            }
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(dev) = name.strip_prefix("clocksource") else {
                continue;
            };
            let avail = read_file(&e.path().join("available_clocksource"))?;
            let cur = read_file(&e.path().join("current_clocksource"))?;
            sources.push((dev.to_string(), avail, cur.trim().to_string()));
        }
        sources.sort();
        let mut f = out.family(
            "node_time_clocksource_available_info",
            "Available clocksources read from '/sys/devices/system/clocksource'.",
            Kind::Gauge,
        )?;
        for (dev, avail, _) in &sources {
            for cs in avail.split_ascii_whitespace() {
                f.sample(&[("clocksource", cs), ("device", dev.as_str())], 1.0)?;
            }
        }
        drop(f);
        let mut f = out.family(
            "node_time_clocksource_current_info",
            "Current clocksource read from '/sys/devices/system/clocksource'.",
            Kind::Gauge,
        )?;
        for (dev, _, cur) in &sources {
            f.sample(
                &[("clocksource", cur.as_str()), ("device", dev.as_str())],
                1.0,
            )?;
        }
        Ok(())
    }
}

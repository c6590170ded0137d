//! `thermal_zone`: reads `<sysfs>/class/thermal/thermal_zone<N>/{type,temp}` and
//! `<sysfs>/class/thermal/cooling_device<N>/{type,cur_state,max_state}`; produces
//! `node_thermal_zone_temp{zone,type}` (Celsius), `node_cooling_device_cur_state{name,type}`
//! and `node_cooling_device_max_state{name,type}`, as node_exporter 1.5.
//!
//! A zone or device whose files cannot be read (sensor asleep: ENODATA/EAGAIN/EINVAL) is
//! skipped, as procfs does; a value that is not a number fails the collector naming the file.
use std::path::{Path, PathBuf};

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector,
    sysfs::{Samples, attr, list_dir},
};
use crate::emit::Out;

#[derive(Debug)]
pub struct ThermalZone {
    class: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(ThermalZone {
        class: ctx.paths.sys("class/thermal"),
    }))
}

fn int(text: &str, what: &str) -> Result<f64, LineError> {
    text.trim()
        .parse::<i64>()
        .map(|v| v as f64)
        .map_err(|_| LineError::new(1, format!("{what}: {:?} is not an integer", text.trim())))
}

/// One zone: `temp` in milli-degrees Celsius.
pub fn zone(m: &mut Samples, name: &str, ty: &str, temp: &str) -> Result<(), LineError> {
    let t = int(temp, "temp")?;
    m.gauge(
        "node_thermal_zone_temp",
        "Zone temperature in Celsius",
        &[("zone", name), ("type", ty)],
        t / 1000.0,
    );
    Ok(())
}

/// One cooling device: its current and maximum throttle states.
pub fn cooling_device(
    m: &mut Samples,
    name: &str,
    ty: &str,
    cur: &str,
    max: &str,
) -> Result<(), (&'static str, LineError)> {
    let cur = int(cur, "cur_state").map_err(|e| ("cur_state", e))?;
    let max = int(max, "max_state").map_err(|e| ("max_state", e))?;
    let l = [("name", name), ("type", ty)];
    m.gauge(
        "node_cooling_device_cur_state",
        "Current throttle state of the cooling device",
        &l,
        cur,
    );
    m.gauge(
        "node_cooling_device_max_state",
        "Maximum throttle state of the cooling device",
        &l,
        max,
    );
    Ok(())
}

fn numbered<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let n = name.strip_prefix(prefix)?;
    n.starts_with(|c: char| c.is_ascii_digit()).then_some(n)
}

impl NodeCollector for ThermalZone {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let mut m = Samples::default();
        for entry in list_dir(&self.class)? {
            let dir: &Path = &self.class.join(&entry);
            if let Some(n) = numbered(&entry, "thermal_zone") {
                // procfs requires type, policy and temp; an unreadable one skips the zone.
                let (Some(ty), Some(_policy), Some(temp)) = (
                    attr(&dir.join("type")),
                    attr(&dir.join("policy")),
                    attr(&dir.join("temp")),
                ) else {
                    continue;
                };
                zone(&mut m, n, &ty, &temp).map_err(|e| e.at(&dir.join("temp")))?;
            } else if let Some(n) = numbered(&entry, "cooling_device") {
                let (Some(ty), Some(cur), Some(max)) = (
                    attr(&dir.join("type")),
                    attr(&dir.join("cur_state")),
                    attr(&dir.join("max_state")),
                ) else {
                    continue;
                };
                cooling_device(&mut m, n, &ty, &cur, &max)
                    .map_err(|(file, e)| e.at(&dir.join(file)))?;
            }
        }
        m.emit(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_and_device_values() {
        let mut m = Samples::default();
        zone(&mut m, "0", "acpitz", "27800\n").unwrap();
        cooling_device(&mut m, "1", "intel_powerclamp", "-1", "50").unwrap();
        assert_eq!(
            m.get(
                "node_thermal_zone_temp",
                &[("zone", "0"), ("type", "acpitz")]
            ),
            Some(27.8)
        );
        let l = [("name", "1"), ("type", "intel_powerclamp")];
        assert_eq!(m.get("node_cooling_device_cur_state", &l), Some(-1.0));
        assert_eq!(m.get("node_cooling_device_max_state", &l), Some(50.0));
    }

    #[test]
    fn garbage_is_an_error() {
        let mut m = Samples::default();
        assert!(zone(&mut m, "0", "x", "hot").is_err());
        assert_eq!(
            cooling_device(&mut m, "0", "x", "1", "").unwrap_err().0,
            "max_state"
        );
        assert_eq!(numbered("thermal_zone12", "thermal_zone"), Some("12"));
        assert_eq!(numbered("thermal_zonex", "thermal_zone"), None);
    }
}

//! `hwmon`: reads `<sysfs>/class/hwmon/hwmon*/` (and each chip's `device/`) sensor files
//! (`temp1_input`, `in0_max`, `fan1_alarm`, ...); produces node_exporter 1.5's
//! `node_hwmon_*` families with labels `chip`, `sensor`: `node_hwmon_temp_celsius`,
//! `node_hwmon_in_volts`, `node_hwmon_fan_rpm`, `node_hwmon_power_average_watt`, ...
//! plus `node_hwmon_chip_names{chip,chip_name}` and `node_hwmon_sensor_label{chip,sensor,label}`.
//!
//! Units as the kernel documents them (Documentation/hwmon/sysfs-interface.rst): milli-degrees,
//! millivolts, milliamperes, microwatts, microjoules, milli-percent (humidity is exported
//! divided by 1e6 as node_exporter does). Values that are not numbers are skipped, as
//! node_exporter does (some drivers write text or refuse reads).
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    sync::LazyLock,
};

use regex::Regex;

use super::{
    CollectorContext, CollectorError, NodeCollector,
    sysfs::{AttrDir, Samples, list_dir},
};
use crate::emit::{Kind, Out};

#[derive(Debug)]
pub struct Hwmon {
    class: PathBuf,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    Ok(Box::new(Hwmon {
        class: ctx.paths.sys("class/hwmon"),
    }))
}

const SENSOR_TYPES: &[&str] = &[
    "vrm",
    "beep_enable",
    "update_interval",
    "in",
    "cpu",
    "fan",
    "pwm",
    "temp",
    "curr",
    "power",
    "energy",
    "humidity",
    "intrusion",
];

static FILENAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?P<type>[^0-9]+)(?P<id>[0-9]*)?(_(?P<property>.+))?$").expect("valid regex")
});

/// Splits a sensor file name: `temp1_crit_alarm` -> ("temp", 1, "crit_alarm").
pub fn explode_filename(name: &str) -> Option<(String, u64, String)> {
    let c = FILENAME.captures(name)?;
    let id = match c.name("id").map(|m| m.as_str()) {
        None | Some("") => 0,
        Some(d) => d.parse().ok()?,
    };
    Some((
        c["type"].to_string(),
        id,
        c.name("property").map_or("", |m| m.as_str()).to_string(),
    ))
}

/// node_exporter's `cleanMetricName`: lower case, `[^a-z0-9:_]` to `_`, trimmed of `_`.
pub fn clean_name(s: &str) -> String {
    let lower = s.to_lowercase();
    let replaced: String = lower
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == ':' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    replaced.trim_matches('_').to_string()
}

/// Sensor data of one chip: sensor (`temp1`) -> element (`input`, `crit`, `""`) -> text.
pub type SensorData = BTreeMap<String, BTreeMap<String, String>>;

/// Adds the files of `dir` that name a known sensor type to `data`.
fn collect_sensor_data(dir: &Path, data: &mut SensorData) -> Result<(), CollectorError> {
    let names = list_dir(dir)?;
    let files = AttrDir::open(dir).map_err(|source| CollectorError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut raw = Vec::new();
    for name in names {
        let Some((ty, id, prop)) = explode_filename(&name) else {
            continue;
        };
        if !SENSOR_TYPES.contains(&ty.as_str()) {
            continue;
        }
        if files.read(&name, &mut raw).is_err() {
            continue;
        }
        let text = String::from_utf8_lossy(&raw);
        data.entry(format!("{ty}{id}"))
            .or_default()
            .insert(prop, text.trim_matches('\n').to_string());
    }
    Ok(())
}

/// The stable chip name: `<bus>_<device>` from the `device` link, else the `name` file, else
/// the hwmon directory's own name.
fn chip_name(dir: &Path) -> Option<String> {
    if let Ok(dev) = fs::canonicalize(dir.join("device")) {
        let dev_name = dev.file_name().map(|n| clean_name(&n.to_string_lossy()));
        let dev_type = dev
            .parent()
            .and_then(Path::file_name)
            .map(|n| clean_name(&n.to_string_lossy()));
        match (dev_type, dev_name) {
            (Some(t), Some(n)) if !t.is_empty() && !n.is_empty() => {
                return Some(format!("{t}_{n}"));
            }
            (_, Some(n)) if !n.is_empty() => return Some(n),
            _ => {}
        }
    }
    if let Some(n) = human_chip_name(dir) {
        return Some(n);
    }
    let real = fs::canonicalize(dir).ok()?;
    let n = clean_name(&real.file_name()?.to_string_lossy());
    (!n.is_empty()).then_some(n)
}

fn human_chip_name(dir: &Path) -> Option<String> {
    let raw = fs::read(dir.join("name")).ok()?;
    let n = clean_name(&String::from_utf8_lossy(&raw));
    (!n.is_empty()).then_some(n)
}

/// Turns one chip's sensor data into node_exporter's families.
pub fn sensor_metrics(chip: &str, data: &SensorData, m: &mut Samples) {
    for (sensor, elements) in data {
        let Some((ty, _, _)) = explode_filename(sensor) else {
            continue;
        };
        let ty = ty.as_str();
        let labels = [("chip", chip), ("sensor", sensor.as_str())];
        if let Some(label) = elements.get("label") {
            m.gauge(
                "node_hwmon_sensor_label",
                "Label for given chip and sensor",
                &[("chip", chip), ("sensor", sensor), ("label", label)],
                1.0,
            );
        }
        let plain = elements.get("").map(String::as_str);
        match ty {
            "beep_enable" => {
                let v = if plain == Some("1") { 1.0 } else { 0.0 };
                m.gauge(
                    "node_hwmon_beep_enabled",
                    "Hardware beep enabled",
                    &labels,
                    v,
                );
                continue;
            }
            "vrm" => {
                if let Some(v) = plain.and_then(|p| p.parse::<f64>().ok()) {
                    m.gauge(
                        "node_hwmon_voltage_regulator_version",
                        "Hardware voltage regulator",
                        &labels,
                        v,
                    );
                }
                continue;
            }
            "update_interval" => {
                if let Some(v) = plain.and_then(|p| p.parse::<f64>().ok()) {
                    m.gauge(
                        "node_hwmon_update_interval_seconds",
                        "Hardware monitor update interval",
                        &labels,
                        v * 0.001,
                    );
                }
                continue;
            }
            _ => {}
        }
        for (element, value) in elements {
            if element == "label" {
                continue;
            }
            let mut name = format!("node_hwmon_{ty}");
            if element == "input" {
                if plain.is_some() {
                    name.push_str("_input");
                }
            } else if !element.is_empty() {
                name.push('_');
                name.push_str(element);
            }
            let Ok(v) = value.trim().parse::<f64>() else {
                continue;
            };
            let el = element.as_str();
            if el == "fault" || el == "alarm" {
                m.gauge(
                    &name,
                    &format!("Hardware sensor {el} status ({ty})"),
                    &labels,
                    v,
                );
            } else if el == "beep" {
                m.gauge(
                    &format!("{name}_enabled"),
                    "Hardware monitor sensor has beeping enabled",
                    &labels,
                    v,
                );
            } else if ty == "in" || ty == "cpu" {
                m.gauge(
                    &format!("{name}_volts"),
                    &format!("Hardware monitor for voltage ({el})"),
                    &labels,
                    v * 0.001,
                );
            } else if ty == "temp" && el != "type" {
                let el = if el.is_empty() { "input" } else { el };
                m.gauge(
                    &format!("{name}_celsius"),
                    &format!("Hardware monitor for temperature ({el})"),
                    &labels,
                    v * 0.001,
                );
            } else if ty == "curr" {
                m.gauge(
                    &format!("{name}_amps"),
                    &format!("Hardware monitor for current ({el})"),
                    &labels,
                    v * 0.001,
                );
            } else if ty == "energy" {
                m.add(
                    &format!("{name}_joule_total"),
                    &format!("Hardware monitor for joules used so far ({el})"),
                    Kind::Counter,
                    &labels,
                    v / 1e6,
                );
            } else if ty == "power" && el == "accuracy" {
                m.gauge(
                    &name,
                    "Hardware monitor power meter accuracy, as a ratio",
                    &labels,
                    v / 1e6,
                );
            } else if ty == "power"
                && matches!(
                    el,
                    "average_interval" | "average_interval_min" | "average_interval_max"
                )
            {
                m.gauge(
                    &format!("{name}_seconds"),
                    &format!("Hardware monitor power usage update interval ({el})"),
                    &labels,
                    v * 0.001,
                );
            } else if ty == "power" {
                m.gauge(
                    &format!("{name}_watt"),
                    &format!("Hardware monitor for power usage in watts ({el})"),
                    &labels,
                    v / 1e6,
                );
            } else if ty == "humidity" {
                m.gauge(
                    &name,
                    &format!(
                        "Hardware monitor for humidity, as a ratio (multiply with 100.0 to get the humidity as a percentage) ({el})"
                    ),
                    &labels,
                    v / 1e6,
                );
            } else if ty == "fan" && matches!(el, "input" | "min" | "max" | "target") {
                m.gauge(
                    &format!("{name}_rpm"),
                    &format!("Hardware monitor for fan revolutions per minute ({el})"),
                    &labels,
                    v,
                );
            } else {
                m.gauge(
                    &name,
                    &format!("Hardware monitor {ty} element {el}"),
                    &labels,
                    v,
                );
            }
        }
    }
}

impl NodeCollector for Hwmon {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let mut m = Samples::default();
        let mut last_err = None;
        for entry in list_dir(&self.class)? {
            let dir = self.class.join(&entry);
            if !dir.is_dir() {
                continue;
            }
            let Some(chip) = chip_name(&dir) else {
                last_err = Some(CollectorError::parse(
                    &dir,
                    0,
                    "could not derive a monitoring name (no device link, name file or directory name)",
                ));
                continue;
            };
            let mut data = SensorData::new();
            if let Err(e) = collect_sensor_data(&dir, &mut data) {
                last_err = Some(e);
                continue;
            }
            let device = dir.join("device");
            if device.exists()
                && let Err(e) = collect_sensor_data(&device, &mut data)
            {
                last_err = Some(e);
                continue;
            }
            if let Some(human) = human_chip_name(&dir) {
                m.gauge(
                    "node_hwmon_chip_names",
                    "Annotation metric for human-readable chip names",
                    &[("chip", &chip), ("chip_name", &human)],
                    1.0,
                );
            }
            sensor_metrics(&chip, &data, &mut m);
        }
        m.emit(out)?;
        last_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explodes_sensor_file_names() {
        assert_eq!(
            explode_filename("temp1_crit_alarm"),
            Some(("temp".into(), 1, "crit_alarm".into()))
        );
        assert_eq!(
            explode_filename("beep_enable"),
            Some(("beep_enable".into(), 0, String::new()))
        );
        assert_eq!(
            explode_filename("in0_input"),
            Some(("in".into(), 0, "input".into()))
        );
        assert_eq!(explode_filename("99"), None);
    }

    #[test]
    fn cleans_names_like_node_exporter() {
        assert_eq!(clean_name("ACPI Thermal-Zone\n"), "acpi_thermal_zone");
        assert_eq!(clean_name("coretemp.0"), "coretemp_0");
    }

    #[test]
    fn maps_elements_to_node_exporter_families() {
        let mut data = SensorData::new();
        for (s, e, v) in [
            ("temp1", "input", "55000"),
            ("temp1", "crit_alarm", "0"),
            ("temp1", "label", "Package id 0"),
            ("temp3", "input", "bogus"),
            ("in0", "input", "1024"),
            ("fan1", "beep", "1"),
            ("fan1", "input", "1200"),
            ("pwm1", "", "128"),
            ("power1", "average", "12500000"),
            ("energy1", "input", "123000000"),
            ("humidity1", "input", "45000"),
        ] {
            data.entry(s.into()).or_default().insert(e.into(), v.into());
        }
        let mut m = Samples::default();
        sensor_metrics("c", &data, &mut m);
        let l = |s: &'static str| [("chip", "c"), ("sensor", s)];
        assert_eq!(m.get("node_hwmon_temp_celsius", &l("temp1")), Some(55.0));
        assert_eq!(
            m.get("node_hwmon_temp_crit_alarm_celsius", &l("temp1")),
            Some(0.0)
        );
        assert_eq!(m.get("node_hwmon_temp_celsius", &l("temp3")), None);
        assert_eq!(m.get("node_hwmon_in_volts", &l("in0")), Some(1.024));
        assert_eq!(m.get("node_hwmon_fan_beep_enabled", &l("fan1")), Some(1.0));
        assert_eq!(m.get("node_hwmon_fan_rpm", &l("fan1")), Some(1200.0));
        assert_eq!(m.get("node_hwmon_pwm", &l("pwm1")), Some(128.0));
        assert_eq!(
            m.get("node_hwmon_power_average_watt", &l("power1")),
            Some(12.5)
        );
        assert_eq!(
            m.get("node_hwmon_energy_joule_total", &l("energy1")),
            Some(123.0)
        );
        assert_eq!(m.get("node_hwmon_humidity", &l("humidity1")), Some(0.045));
        assert_eq!(
            m.get(
                "node_hwmon_sensor_label",
                &[
                    ("chip", "c"),
                    ("sensor", "temp1"),
                    ("label", "Package id 0")
                ]
            ),
            Some(1.0)
        );
    }
}

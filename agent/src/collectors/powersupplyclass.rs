//! `powersupplyclass`: reads every attribute file of `<sysfs>/class/power_supply/<supply>/`;
//! produces node_exporter 1.5's `node_power_supply_<attr>{power_supply}` gauges (µV, µA,
//! µWh, µAh, µW converted to volts, amperes, watt-hours, ampere-hours, watts; tenths of a
//! degree to Celsius) and `node_power_supply_info{power_supply,type,status,...}`.
//! `--collector.powersupply.ignored-supplies` (regexp) skips supplies by name.
use std::{collections::BTreeMap, path::PathBuf};

use regex::Regex;

use super::{
    CollectorContext, CollectorError, LineError, NodeCollector,
    sysfs::{AttrDir, Samples, list_dir},
};
use crate::emit::Out;

#[derive(Debug)]
pub struct PowerSupplyClass {
    class: PathBuf,
    ignored: Regex,
}

pub fn new(ctx: &CollectorContext) -> Result<Box<dyn NodeCollector>, CollectorError> {
    let re = &ctx.settings.powersupplyclass.ignored_supplies;
    let ignored = Regex::new(re).map_err(|e| {
        CollectorError::parse(
            std::path::Path::new("--collector.powersupply.ignored-supplies"),
            0,
            e.to_string(),
        )
    })?;
    Ok(Box::new(PowerSupplyClass {
        class: ctx.paths.sys("class/power_supply"),
        ignored,
    }))
}

/// (sysfs attribute, metric suffix, divisor).
const NUMERIC: &[(&str, &str, f64)] = &[
    ("authentic", "authentic", 1.0),
    ("calibrate", "calibrate", 1.0),
    ("capacity", "capacity", 1.0),
    ("capacity_alert_max", "capacity_alert_max", 1.0),
    ("capacity_alert_min", "capacity_alert_min", 1.0),
    ("cycle_count", "cyclecount", 1.0),
    ("online", "online", 1.0),
    ("present", "present", 1.0),
    ("time_to_empty_now", "time_to_empty_seconds", 1.0),
    ("time_to_full_now", "time_to_full_seconds", 1.0),
    ("current_boot", "current_boot", 1e6),
    ("current_max", "current_max", 1e6),
    ("current_now", "current_ampere", 1e6),
    ("energy_empty", "energy_empty", 1e6),
    ("energy_empty_design", "energy_empty_design", 1e6),
    ("energy_full", "energy_full", 1e6),
    ("energy_full_design", "energy_full_design", 1e6),
    ("energy_now", "energy_watthour", 1e6),
    ("voltage_boot", "voltage_boot", 1e6),
    ("voltage_max", "voltage_max", 1e6),
    ("voltage_max_design", "voltage_max_design", 1e6),
    ("voltage_min", "voltage_min", 1e6),
    ("voltage_min_design", "voltage_min_design", 1e6),
    ("voltage_now", "voltage_volt", 1e6),
    ("voltage_ocv", "voltage_ocv", 1e6),
    ("charge_control_limit", "charge_control_limit", 1e6),
    ("charge_control_limit_max", "charge_control_limit_max", 1e6),
    ("charge_counter", "charge_counter", 1e6),
    ("charge_empty", "charge_empty", 1e6),
    ("charge_empty_design", "charge_empty_design", 1e6),
    ("charge_full", "charge_full", 1e6),
    ("charge_full_design", "charge_full_design", 1e6),
    ("charge_now", "charge_ampere", 1e6),
    ("charge_term_current", "charge_term_current", 1e6),
    ("constant_charge_current", "constant_charge_current", 1e6),
    (
        "constant_charge_current_max",
        "constant_charge_current_max",
        1e6,
    ),
    ("constant_charge_voltage", "constant_charge_voltage", 1e6),
    (
        "constant_charge_voltage_max",
        "constant_charge_voltage_max",
        1e6,
    ),
    ("precharge_current", "precharge_current", 1e6),
    ("input_current_limit", "input_current_limit", 1e6),
    ("power_now", "power_watt", 1e6),
    ("temp", "temp_celsius", 10.0),
    ("temp_alert_max", "temp_alert_max_celsius", 10.0),
    ("temp_alert_min", "temp_alert_min_celsius", 10.0),
    ("temp_ambient", "temp_ambient_celsius", 10.0),
    ("temp_ambient_max", "temp_ambient_max_celsius", 10.0),
    ("temp_ambient_min", "temp_ambient_min_celsius", 10.0),
    ("temp_max", "temp_max_celsius", 10.0),
    ("temp_min", "temp_min_celsius", 10.0),
];

/// Text attributes that become labels of `node_power_supply_info`.
const INFO: &[&str] = &[
    "type",
    "capacity_level",
    "charge_type",
    "health",
    "manufacturer",
    "model_name",
    "serial_number",
    "status",
    "technology",
    "usb_type",
    "scope",
];

/// One supply: attribute file -> content. Returns the attribute that failed to parse.
pub fn supply_metrics(
    m: &mut Samples,
    name: &str,
    attrs: &BTreeMap<String, String>,
) -> Result<(), (String, LineError)> {
    for (file, suffix, div) in NUMERIC {
        let Some(text) = attrs.get(*file) else {
            continue;
        };
        let v = text.trim().parse::<i64>().map_err(|_| {
            (
                file.to_string(),
                LineError::new(1, format!("{:?} is not an integer", text.trim())),
            )
        })?;
        m.gauge(
            &format!("node_power_supply_{suffix}"),
            &format!("{suffix} value of /sys/class/power_supply/<power_supply>."),
            &[("power_supply", name)],
            v as f64 / div,
        );
    }
    let mut labels: Vec<(&str, &str)> = vec![("power_supply", name)];
    for key in INFO {
        if let Some(v) = attrs.get(*key).filter(|v| !v.is_empty()) {
            labels.push((key, v.as_str()));
        }
    }
    m.gauge(
        "node_power_supply_info",
        "info of /sys/class/power_supply/<power_supply>.",
        &labels,
        1.0,
    );
    Ok(())
}

impl NodeCollector for PowerSupplyClass {
    fn update(&self, out: &mut Out<'_, '_>) -> Result<(), CollectorError> {
        let mut m = Samples::default();
        for name in list_dir(&self.class)? {
            if self.ignored.is_match(&name) {
                continue;
            }
            let dir = self.class.join(&name);
            // Not a directory (a stray file in the class): skipped.
            let Ok(files) = AttrDir::open(&dir) else {
                continue;
            };
            // Only the attributes exported are read (each read is a driver call).
            // Unreadable attributes (EINVAL, ENODATA from the driver) are skipped.
            let attrs = files.texts(
                NUMERIC
                    .iter()
                    .map(|(f, _, _)| *f)
                    .chain(INFO.iter().copied()),
            );
            supply_metrics(&mut m, &name, &attrs).map_err(|(f, e)| e.at(&dir.join(f)))?;
        }
        m.emit(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_units_and_builds_info() {
        let attrs: BTreeMap<String, String> = [
            ("type", "Battery"),
            ("status", "Discharging"),
            ("voltage_now", "12229000"),
            ("temp", "312"),
            ("cycle_count", "7"),
            ("model_name", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut m = Samples::default();
        supply_metrics(&mut m, "BAT0", &attrs).unwrap();
        let l = [("power_supply", "BAT0")];
        assert_eq!(m.get("node_power_supply_voltage_volt", &l), Some(12.229));
        assert_eq!(m.get("node_power_supply_temp_celsius", &l), Some(31.2));
        assert_eq!(m.get("node_power_supply_cyclecount", &l), Some(7.0));
        assert_eq!(
            m.get(
                "node_power_supply_info",
                &[
                    ("power_supply", "BAT0"),
                    ("type", "Battery"),
                    ("status", "Discharging")
                ]
            ),
            Some(1.0)
        );
    }

    #[test]
    fn bad_integer_names_the_attribute() {
        let attrs: BTreeMap<String, String> = [("capacity".to_string(), "lots".to_string())]
            .into_iter()
            .collect();
        let (file, e) = supply_metrics(&mut Samples::default(), "B", &attrs).unwrap_err();
        assert_eq!(file, "capacity");
        assert!(e.msg.contains("lots"));
    }
}

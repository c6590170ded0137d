//! The textfile and sysfs/hardware collectors against the hand-written fixture tree
//! `tests/fixtures/hw` (hwmon chips, thermal zones, cpufreq, power supplies, network devices,
//! NVMe controllers, md arrays, bonds, RAPL zones, EDAC controllers, DMI, `*.prom` files):
//! golden exposition, side by side with the real node_exporter 1.5 on the same tree, the
//! empty-root "no data" case, and malformed input failing only its collector.
mod common;

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{Agent, Exposition, http_get, repo_root};

/// The collectors this file covers, all default-enabled in node_exporter 1.5.
const COLLECTORS: &[&str] = &[
    "textfile",
    "hwmon",
    "thermal_zone",
    "cpufreq",
    "powersupplyclass",
    "netclass",
    "nvme",
    "mdadm",
    "bonding",
    "rapl",
    "edac",
    "dmi",
    "infiniband",
    "fibrechannel",
    "tapestats",
    "nfs",
    "nfsd",
    "zfs",
    "xfs",
    "ipvs",
    "selinux",
    "btrfs",
    "bcache",
];

/// Collectors left out of the side-by-side run, with the reason: node_exporter's selinux
/// collector asks libselinux about the running system and ignores `--path.*`, so it cannot
/// read a fixture tree.
const NOT_SIDE_BY_SIDE: &[&str] = &["selinux"];

fn hw() -> PathBuf {
    repo_root().join("tests/fixtures/hw")
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hostlens-hw-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Flags selecting exactly [`COLLECTORS`] over `root`'s `sys` and `proc`.
fn args(root: &Path, textfile_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "--path.sysfs".into(),
        root.join("sys").display().to_string(),
        "--path.procfs".into(),
        root.join("proc").display().to_string(),
        "--path.rootfs".into(),
        root.display().to_string(),
        "--collector.textfile.directory".into(),
        textfile_dir.display().to_string(),
        "--collector.disable-defaults".into(),
    ];
    v.extend(COLLECTORS.iter().map(|c| format!("--collector.{c}")));
    v
}

fn start_hostlens(args: &[String]) -> Agent {
    let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
    a.push("--probe.disable-defaults");
    Agent::start(&a)
}

/// The exposition without what varies between runs and checkouts: durations, the agent's
/// own metrics, file mtimes, and the fixture's absolute path (replaced by `<hw>`).
fn stable(text: &str) -> String {
    let root = hw().display().to_string();
    let mut out = String::new();
    for line in text.lines() {
        let name = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .unwrap_or(line);
        if [
            "node_scrape_collector_duration_seconds",
            "hostlens_",
            "process_",
        ]
        .iter()
        .any(|v| name.starts_with(v))
            || line.starts_with("node_textfile_mtime_seconds{")
        {
            continue;
        }
        out.push_str(&line.replace(&root, "<hw>"));
        out.push('\n');
    }
    out
}

fn read(path: &Path) -> f64 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn hw_fixture_matches_golden_exposition() {
    let root = hw();
    let agent = start_hostlens(&args(&root, &root.join("textfile")));
    let text = agent.get("/metrics").text();
    common::assert_golden("hw.prom", &stable(&text));
    let e = Exposition::parse(&text);
    for c in COLLECTORS {
        assert_eq!(
            e.get(&format!(
                "node_scrape_collector_success{{collector=\"{c}\"}}"
            )),
            Some(1.0),
            "{c}"
        );
    }
    // Values straight from the fixture files, in node_exporter's units.
    let sys = root.join("sys");
    assert_eq!(
        e.get("node_hwmon_temp_celsius{chip=\"platform_coretemp_0\",sensor=\"temp1\"}"),
        Some(read(&sys.join("class/hwmon/hwmon0/temp1_input")) / 1000.0)
    );
    assert_eq!(
        e.get("node_thermal_zone_temp{type=\"acpitz\",zone=\"1\"}"),
        Some(read(&sys.join("class/thermal/thermal_zone1/temp")) / 1000.0)
    );
    assert_eq!(
        e.get("node_cpu_scaling_frequency_hertz{cpu=\"1\"}"),
        Some(read(&sys.join("devices/system/cpu/cpu1/cpufreq/scaling_cur_freq")) * 1000.0)
    );
    assert_eq!(
        e.get("node_power_supply_voltage_volt{power_supply=\"BAT0\"}"),
        Some(read(&sys.join("class/power_supply/BAT0/voltage_now")) / 1e6)
    );
    assert_eq!(
        e.get("node_network_mtu_bytes{device=\"bond0\"}"),
        Some(read(&sys.join("class/net/bond0/mtu")))
    );
    assert_eq!(e.get("node_bonding_slaves{master=\"bond0\"}"), Some(2.0));
    assert_eq!(e.get("node_bonding_active{master=\"bond0\"}"), Some(1.0));
    assert_eq!(
        e.get("node_md_blocks_synced{device=\"md6\"}"),
        Some(16775552.0)
    );
    assert_eq!(
        e.get("node_md_state{device=\"md201\",state=\"check\"}"),
        Some(1.0)
    );
    assert_eq!(
        e.get("node_edac_csrow_correctable_errors_total{controller=\"0\",csrow=\"unknown\"}"),
        Some(read(
            &sys.join("devices/system/edac/mc/mc0/ce_noinfo_count")
        ))
    );
    assert_eq!(e.types["node_rapl_package_joules_total"], "counter");
    // textfile: bad.prom and stamped.prom skipped (scrape error), a.prom and b.prom merged.
    assert_eq!(e.get("node_textfile_scrape_error"), Some(1.0));
    assert_eq!(e.get("good_before_error"), None);
    assert_eq!(e.get("with_timestamp"), None);
    assert_eq!(
        e.get("shared_untyped{from=\"a\"}"),
        Some(1.0),
        "first file wins"
    );
    assert_eq!(e.get("shared_untyped{from=\"b\"}"), Some(2.0));
    assert_eq!(
        e.get("backup_runs_total{job=\"mail\"}"),
        None,
        "conflicting HELP"
    );
    assert_eq!(e.types["job_duration_seconds"], "histogram");
    let tf = root.join("textfile");
    let mtimes: Vec<&String> = e
        .samples
        .keys()
        .filter(|k| k.starts_with("node_textfile_mtime_seconds"))
        .collect();
    assert_eq!(
        mtimes,
        [
            &format!(
                "node_textfile_mtime_seconds{{file=\"{}\"}}",
                tf.join("a.prom").display()
            ),
            &format!(
                "node_textfile_mtime_seconds{{file=\"{}\"}}",
                tf.join("b.prom").display()
            ),
        ]
    );
    std::thread::sleep(Duration::from_millis(100));
    let log = agent.log();
    for want in [
        "bad.prom",
        "line 3",
        "stamped.prom",
        "timestamps",
        "shared_untyped",
    ] {
        assert!(log.contains(want), "log should mention {want:?}:\n{log}");
    }
}

#[test]
fn promtool_accepts_the_hw_exposition() {
    let root = hw();
    let agent = start_hostlens(&args(&root, &root.join("textfile")));
    let text = agent.get("/metrics").text();
    let report = common::promtool_check(&text);
    assert!(report.trim().is_empty(), "promtool: {report}");
}

#[test]
fn empty_root_is_no_data_for_every_collector() {
    let empty = tempdir("empty");
    let agent = start_hostlens(&args(&empty, &PathBuf::new()));
    let e = agent.scrape();
    for c in COLLECTORS {
        assert_eq!(
            e.get(&format!(
                "node_scrape_collector_success{{collector=\"{c}\"}}"
            )),
            Some(1.0),
            "{c}"
        );
    }
    let own: Vec<&String> = e
        .samples
        .keys()
        .filter(|k| {
            !k.starts_with("node_scrape_collector_")
                && !k.starts_with("hostlens_")
                && !k.starts_with("process_")
        })
        .collect();
    // The textfile collector always reports its error flag (an empty directory setting is
    // not an error, node_exporter 1.5's default), and selinux reports that it is disabled.
    assert_eq!(
        own,
        [
            &"node_selinux_enabled".to_string(),
            &"node_textfile_scrape_error".to_string()
        ]
    );
    assert_eq!(e.get("node_selinux_enabled"), Some(0.0));
    assert_eq!(e.get("node_textfile_scrape_error"), Some(0.0));
}

#[test]
fn malformed_sources_fail_only_their_collector() {
    let root = tempdir("bad");
    let w = |rel: &str, text: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    w("sys/class/thermal/thermal_zone0/type", "acpitz\n");
    w("sys/class/thermal/thermal_zone0/policy", "step_wise\n");
    w("sys/class/thermal/thermal_zone0/temp", "hot\n");
    w(
        "proc/mdstat",
        "md0 : active raid1 sda[0]\n      lots blocks [1/1] [U]\n\n\n",
    );
    w("sys/class/net/eth9/mtu", "1500\n");
    w("sys/class/net/eth9/operstate", "up\n");
    let tf = root.join("tf");
    w("tf/x.prom", "ok_metric 1\n");
    // A file redefining a collector's family: merged once, the collector's series win.
    w(
        "tf/y.prom",
        "# HELP node_network_mtu_bytes Network device property: mtu_bytes\n# TYPE node_network_mtu_bytes gauge\nnode_network_mtu_bytes{device=\"eth9\"} 9\nnode_network_mtu_bytes{device=\"eth8\"} 7\n",
    );
    let agent = start_hostlens(&args(&root, &tf));
    let e = agent.scrape();
    let success = |c: &str| {
        e.get(&format!(
            "node_scrape_collector_success{{collector=\"{c}\"}}"
        ))
    };
    assert_eq!(success("thermal_zone"), Some(0.0));
    assert_eq!(success("mdadm"), Some(0.0));
    assert_eq!(success("netclass"), Some(1.0));
    assert_eq!(success("textfile"), Some(1.0));
    assert_eq!(
        e.get("node_network_mtu_bytes{device=\"eth9\"}"),
        Some(1500.0)
    );
    assert_eq!(e.get("node_network_mtu_bytes{device=\"eth8\"}"), Some(7.0));
    assert_eq!(
        e.text.matches("# TYPE node_network_mtu_bytes ").count(),
        1,
        "{}",
        e.text
    );
    assert_eq!(e.get("ok_metric"), Some(1.0));
    assert_eq!(e.get("node_textfile_scrape_error"), Some(0.0));
    std::thread::sleep(Duration::from_millis(100));
    let log = agent.log();
    for want in [
        format!(
            "{}:1",
            root.join("sys/class/thermal/thermal_zone0/temp").display()
        ),
        format!("{}:2", root.join("proc/mdstat").display()),
    ] {
        assert!(log.contains(&want), "log should name {want}:\n{log}");
    }
}

/// The real node_exporter, started on a free loopback port and killed on drop.
struct NodeExporter {
    child: Child,
    port: u16,
}

impl NodeExporter {
    fn start(args: &[String]) -> NodeExporter {
        let bin = [
            "/usr/bin/prometheus-node-exporter",
            "/usr/bin/node_exporter",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("node_exporter not installed: run `cargo xtask setup` (prometheus-node-exporter)");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node_exporter");
        let ne = NodeExporter { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get(port, "/metrics", &[]).is_err() {
            assert!(Instant::now() < deadline, "node_exporter did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        ne
    }

    fn text(&self) -> String {
        http_get(self.port, "/metrics", &[]).unwrap().text()
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// family -> (HELP, TYPE), and series -> value, for the families the compared collectors
/// produce.
fn families(text: &str) -> (BTreeMap<String, (String, String)>, BTreeMap<String, f64>) {
    let skip = |n: &str| {
        [
            "go_",
            "promhttp_",
            "process_",
            "hostlens_",
            "node_exporter_build_info",
        ]
        .iter()
        .any(|p| n.starts_with(p))
            || n.starts_with("node_scrape_collector_duration_seconds")
    };
    let mut fams: BTreeMap<String, (String, String)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (n, h) = rest.split_once(' ').unwrap_or((rest, ""));
            if !skip(n) {
                fams.entry(n.into()).or_default().0 = h.into();
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (n, t) = rest.split_once(' ').unwrap();
            if !skip(n) {
                fams.entry(n.into()).or_default().1 = t.into();
            }
        }
    }
    let e = Exposition::parse(text);
    let samples = e.samples.into_iter().filter(|(k, _)| !skip(k)).collect();
    (fams, samples)
}

#[test]
fn hw_fixture_matches_node_exporter_side_by_side() {
    side_by_side(&[]);
}

#[test]
fn collector_settings_match_node_exporter() {
    // Every per-collector flag, away from its default.
    side_by_side(&[
        "--collector.netclass.ignored-devices=^veth",
        "--collector.netclass.ignore-invalid-speed",
        "--collector.powersupply.ignored-supplies=^AC$",
        "--collector.rapl.enable-zone-label",
        "--collector.bcache.priorityStats",
        "--collector.ipvs.backend-labels=local_address,proto",
        "--collector.tapestats.ignored-devices=^st0$",
    ]);
}

/// Runs hostlens and node_exporter over the fixture tree with the same flags and requires
/// the same families (HELP, TYPE), series and values.
fn side_by_side(extra: &[&str]) {
    let root = hw();
    let mut a: Vec<String> = args(&root, &root.join("textfile"))
        .into_iter()
        .filter(|f| {
            !NOT_SIDE_BY_SIDE
                .iter()
                .any(|c| *f == format!("--collector.{c}"))
        })
        .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    let agent = start_hostlens(&a);
    let ne = NodeExporter::start(&a);
    let (ours_f, ours_s) = families(&agent.get("/metrics").text());
    let (theirs_f, theirs_s) = families(&ne.text());
    // Same families with the same HELP and TYPE.
    assert_eq!(ours_f, theirs_f);
    // Same series (names and label sets) with the same values (NaN equal to NaN).
    assert_eq!(
        ours_s.keys().collect::<Vec<_>>(),
        theirs_s.keys().collect::<Vec<_>>()
    );
    for (k, v) in &ours_s {
        let t = theirs_s[k];
        assert!(
            v == &t || (v.is_nan() && t.is_nan()),
            "{k}: hostlens {v}, node_exporter {t}"
        );
    }
    assert!(ours_s.len() > 200, "the fixture should produce many series");
}

#[test]
fn live_machine_matches_node_exporter() {
    // This machine's real /proc, /sys and / with every collector of this file; most find no
    // hardware here, netclass reads the real network devices (values are constants: MTU,
    // flags, addresses). The textfile directory is set to upstream's default (none), not
    // Debian's.
    let mut a: Vec<String> = vec![
        "--collector.disable-defaults".into(),
        "--collector.textfile.directory=".into(),
    ];
    a.extend(COLLECTORS.iter().map(|c| format!("--collector.{c}")));
    let mut ours_args: Vec<&str> = a.iter().map(String::as_str).collect();
    ours_args.push("--probe.disable-defaults");
    let agent = Agent::start(&ours_args);
    let ne = NodeExporter::start(&a);
    // node_exporter reports a collector without its source as failed (success 0), hostlens
    // as "no data" (success 1), so the success series are compared apart.
    let not_success = |(k, _): &(String, f64)| !k.starts_with("node_scrape_collector_success");
    let (ours_f, ours_s) = families(&agent.get("/metrics").text());
    let (theirs_f, theirs_s) = families(&ne.text());
    let ours_s: BTreeMap<String, f64> = ours_s.into_iter().filter(not_success).collect();
    let theirs_s: BTreeMap<String, f64> = theirs_s.into_iter().filter(not_success).collect();
    assert_eq!(ours_f, theirs_f);
    // Values that move between two scrapes on real hardware (counters, temperatures,
    // frequencies, energy) are compared by series only; the rest must be equal.
    let volatile = [
        "node_network_carrier_changes_total",
        "node_network_carrier_up_changes_total",
        "node_network_carrier_down_changes_total",
        "node_hwmon_",
        "node_thermal_zone_temp",
        "node_cooling_device_cur_state",
        "node_cpu_frequency_hertz",
        "node_cpu_scaling_frequency_hertz",
        "node_power_supply_",
        "node_rapl_",
        "node_md_blocks_synced",
        "node_edac_",
        "node_infiniband_",
        "node_fibrechannel_",
        "node_tape_",
        "node_nfs",
        "node_zfs_",
        "node_xfs_",
        "node_ipvs_",
        "node_btrfs_",
        "node_bcache_",
    ];
    assert_eq!(
        ours_s.keys().collect::<Vec<_>>(),
        theirs_s.keys().collect::<Vec<_>>()
    );
    for (k, v) in &ours_s {
        if volatile.iter().any(|p| k.starts_with(p)) {
            continue;
        }
        assert_eq!(*v, theirs_s[k], "{k}");
    }
    assert!(
        ours_s.keys().any(|k| k.starts_with("node_network_up{")),
        "this machine has network devices"
    );
}

/// Textfiles built to exhaust the agent: one whose series would each be padded with 20,000
/// label names (4·10⁸ pairs: gigabytes), one sample with 200 labels, and three valid files
/// that together pass the per-scrape label-pair budget. The first two are skipped as parse
/// errors naming the limit, the third valid file is skipped for the budget; the others are
/// exported, the scrape answers, and the agent's memory stays bounded.
#[test]
fn textfile_bombs_are_skipped_and_memory_stays_bounded() {
    let dir = tempdir("tfbomb");
    let explode: String = (0..20_000)
        .map(|i| format!("m{{l{i}=\"x\"}} 1\n"))
        .collect();
    std::fs::write(dir.join("a_explode.prom"), explode).unwrap();
    let wide: Vec<String> = (0..200).map(|i| format!("l{i}=\"x\"")).collect();
    std::fs::write(
        dir.join("b_wide.prom"),
        format!("wide{{{}}} 1\n", wide.join(",")),
    )
    .unwrap();
    // 40,000 samples × 5 label names = 200,000 pairs per file; the third passes the scrape's
    // 500,000.
    for (file, family) in [
        ("c_ok.prom", "ok_c"),
        ("d_ok.prom", "ok_d"),
        ("e_ok.prom", "ok_e"),
    ] {
        let text: String = (0..40_000)
            .map(|i| format!("{family}{{a=\"1\",b=\"1\",c=\"1\",d=\"1\",i=\"{i}\"}} 1\n"))
            .collect();
        std::fs::write(dir.join(file), text).unwrap();
    }
    let agent = Agent::start(&[
        "--collector.disable-defaults",
        "--collector.textfile",
        "--collector.textfile.directory",
        dir.to_str().unwrap(),
        "--probe.disable-defaults",
    ]);
    let e = agent.scrape();
    assert_eq!(e.get("node_textfile_scrape_error"), Some(1.0));
    let count = |family: &str| {
        e.samples
            .keys()
            .filter(|k| k.starts_with(&format!("{family}{{")))
            .count()
    };
    assert_eq!(count("m"), 0, "the padding bomb is skipped");
    assert_eq!(count("wide"), 0, "the 200-label sample's file is skipped");
    assert_eq!(count("ok_c"), 40_000);
    assert_eq!(count("ok_d"), 40_000);
    assert_eq!(count("ok_e"), 0, "past the per-scrape budget");
    let log = agent.log();
    for (file, why) in [
        ("a_explode.prom", "label pairs"),
        ("b_wide.prom", "more than 128 labels"),
        ("e_ok.prom", "limit"),
    ] {
        assert!(
            log.lines().any(|l| l.contains(file) && l.contains(why)),
            "no error naming {file} and {why:?}:\n{log}"
        );
    }
    let rss = e.get("process_resident_memory_bytes").unwrap();
    eprintln!(
        "textfile bombs: agent RSS {:.0} MiB after the scrape",
        rss / 1048576.0
    );
    assert!(rss < 300.0 * 1024.0 * 1024.0, "RSS {rss}");
    std::fs::remove_dir_all(&dir).unwrap();
}

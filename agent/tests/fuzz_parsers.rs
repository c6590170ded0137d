//! Property tests feeding arbitrary and mutated text to every collector parse function and
//! the Prometheus text parser: they must return `Ok` or an error naming a line, never panic,
//! and never return more than the input can hold. A few hundred cases each, so this runs in
//! `cargo test` in well under a minute.
use std::collections::BTreeMap;

use hostlens::{
    collectors::{
        bcache, bonding, btrfs, cpufreq, edac, fibrechannel, hwmon, infiniband, ipvs, loadavg,
        mdadm, meminfo, netclass, nfs, nfsd, powersupplyclass, rapl, selinux, sysfs::Samples,
        tapestats, textfile, thermal_zone, xfs, zfs,
    },
    textparse::{self, Limits},
};
use proptest::prelude::*;

/// Valid inputs the mutations start from, so that cases reach deep into the parsers.
const SEEDS: &[&str] = &[
    "0.50 0.47 0.20 1/79 4454\n",
    "MemTotal:       24684096 kB\nActive(anon):  10 kB\nHugePages_Total:       0\n",
    "# HELP a A \\\\ help\\n\n# TYPE a gauge\na{x=\"1\\\"\",y=\"\"} 1.5\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 1\ns_count 1\nb NaN\n",
    "Personalities : [raid1]\nmd6 : active raid1 sdb2[2](F) sdc[1](S) sda2[0]\n      195310144 blocks [2/1] [U_]\n      [=>....]  recovery =  8.5% (16775552/195310144) finish=17.0min\n\nmd4 : inactive raid1 sda3[0](F)\n      4883648 blocks [2/2] [UU]\n\nunused devices: <none>\n",
    "temp1_crit_alarm",
    "0x1303",
    "1800000\n",
    "net 18628 1 18627 6\nrpc 4329785 3 4338291\nproc2 3 1 2 3\nproc4 2 7 8\nrc 0 6 18622\nth 8 0 0.000\nra 32 0 0 0 0 0 0 0 0 0 0 5\nproc4ops 5 0 0 0 7 8\n",
    "40 Gb/sec (4X QDR)",
    "4: ACTIVE",
    "rate:\t\t1.1M/sec\ndirty:\t\t20.4G\ntarget:\t\t20.4G\nproportional:\t427.5k\nchange:\t\t-321.5k/sec\n",
    "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\nTCP  C0A80016:0CEA wlc\n  -> C0A85216:0CEA      Tunnel  100    248        2\nFWM  10001000 wlc\n  -> [2620:0000:0000:0000:0000:0000:0000:0002]:0050 Route 1 0 3\n",
    "extent_alloc 1 2 3 4\nabt 1 2 3 4\nrw 7 8\nvnodes 1 2 3 4 5 6 7 8\n",
    "6 1 0x01 91 4368 5266997922 97951858082072\nname type data\nhits 4 8772612\ndataset_name 7 p/d\nnread nwritten reads writes wtime wlentime wupdate rtime rlentime rupdate wcnt rcnt\n1 2 3 4 5 6 7 8 9 10 11 12\n",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9_{}=\",.#: \\n\\t+\\-\\\\()\\[\\]/%]{0,300}",
        (
            prop::sample::select(SEEDS),
            any::<prop::sample::Index>(),
            "[\\x00-\\x7f]{0,8}",
            0usize..4,
        )
            .prop_map(|(seed, at, insert, cut)| {
                // Insert random bytes at a char boundary and drop a few chars after it.
                let chars: Vec<char> = seed.chars().collect();
                let i = at.index(chars.len() + 1);
                let mut s: String = chars[..i].iter().collect();
                s.push_str(&insert);
                s.extend(chars.iter().skip(i + cut));
                s
            }),
    ]
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn loadavg_never_panics(s in text()) {
        let _ = loadavg::parse(&s);
    }

    #[test]
    fn meminfo_never_panics(s in text()) {
        if let Ok(f) = meminfo::parse(&s) {
            prop_assert!(f.len() <= s.lines().count());
        }
    }

    #[test]
    fn textparse_never_panics_and_stays_bounded(s in text()) {
        match textparse::parse(
            &s,
            Limits {
                max_samples: 50,
                ..Limits::default()
            },
        ) {
            Ok(fams) => {
                let n: usize = fams.iter().map(|f| f.samples.len()).sum();
                prop_assert!(n <= 50);
            }
            Err(e) => prop_assert!(e.line >= 1 && e.line <= s.split('\n').count()),
        }
    }

    #[test]
    fn textfile_parse_and_merge_never_panic(a in text(), b in text()) {
        let mut files = Vec::new();
        for (name, t) in [("a.prom", &a), ("b.prom", &b)] {
            if let Ok(f) = textfile::parse_file(t) {
                files.push((name.to_string(), f));
            }
        }
        let _ = textfile::merge(&files);
    }

    #[test]
    fn wildcard_never_panics(p in "[a-c*?\\[\\]^\\\\-]{0,12}", n in "[a-c\\-\\]]{0,12}") {
        let _ = textfile::wildcard_match(&p, &n);
    }

    #[test]
    fn mdadm_never_panics(s in text()) {
        let _ = mdadm::parse(&s);
    }

    #[test]
    fn zfs_never_panics(s in text()) {
        let _ = zfs::parse_kstat(&s, &["3", "4"]);
        let _ = zfs::parse_pool_io(&s);
        let _ = xfs::metrics(&mut Samples::default(), "sda", &s);
        let _ = ipvs::parse_stats(&s);
        let _ = ipvs::parse_backends(&s);
        let _ = selinux::config_mode(&s);
        let _ = selinux::current_mode(&s);
        let _ = bcache::dehumanize(&s);
        let _ = bcache::writeback(&s);
        let _ = bcache::priority_stats(&s);
        let _ = ipvs::label_mask(&s);
        let _ = btrfs::uint(&s);
    }

    #[test]
    fn nfs_and_nfsd_never_panic(s in text()) {
        let _ = nfs::metrics(&mut Samples::default(), &s);
        let _ = nfsd::metrics(&mut Samples::default(), &s);
    }

    #[test]
    fn hwmon_never_panics(name in text(), value in text()) {
        let _ = hwmon::clean_name(&name);
        if let Some((ty, id, prop)) = hwmon::explode_filename(&name) {
            let mut data = hwmon::SensorData::new();
            data.entry(format!("{ty}{id}")).or_default().insert(prop, value);
            hwmon::sensor_metrics("chip", &data, &mut Samples::default());
        }
    }

    #[test]
    fn sysfs_number_parsers_never_panic(s in text()) {
        let _ = cpufreq::khz(&s);
        let _ = netclass::parse_int(&s);
        let _ = rapl::microjoules(&s);
        let _ = rapl::index_and_name(&Default::default(), &s);
        let _ = edac::count(&s);
        let _ = bonding::count(s.lines());
        let _ = infiniband::state_id(&s);
        let _ = infiniband::rate(&s);
        let _ = infiniband::counter(&s);
        let _ = fibrechannel::stat(&s);
        let _ = tapestats::value(&s);
        let mut m = Samples::default();
        let _ = thermal_zone::zone(&mut m, "0", "t", &s);
        let _ = thermal_zone::cooling_device(&mut m, "0", "t", &s, &s);
    }

    #[test]
    fn attribute_maps_never_panic(
        pairs in prop::collection::vec(
            (prop::sample::select(&["speed", "mtu", "flags", "operstate", "address", "type",
                "capacity", "voltage_now", "temp", "status", "cycle_count", "power_now"][..]),
             text()),
            0..8)
    ) {
        let attrs: BTreeMap<String, String> =
            pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let mut m = Samples::default();
        let _ = netclass::device_metrics(&mut m, "eth0", &attrs, false);
        let _ = powersupplyclass::supply_metrics(&mut m, "BAT0", &attrs);
    }
}

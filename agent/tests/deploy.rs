//! The deployment artifacts, each validated by the real tool that consumes it:
//! `systemd-analyze verify` / `security` for the unit, `promtool check rules|config` and
//! `promtool test rules` for the Prometheus files, `kubernetes-validate` for deploy/, and the
//! Grafana dashboard's queries against the README metrics reference and a live agent.
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::Command,
};

use common::{Agent, privileged, repo_root, run_ok};

fn read(rel: &str) -> String {
    let p = repo_root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hostlens-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn output(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The unit with ExecStart pointing at the binary under test (verify checks that it exists).
fn unit_copy() -> (PathBuf, PathBuf) {
    let dir = scratch("unit");
    let unit = read("systemd/hostlens.service").replace(
        "ExecStart=/usr/bin/hostlens ",
        &format!("ExecStart={} ", common::bin().display()),
    );
    assert!(unit.contains(&common::bin().display().to_string()));
    let path = dir.join("hostlens.service");
    std::fs::write(&path, unit).unwrap();
    (dir, path)
}

#[test]
fn systemd_unit_verifies_clean_and_exposure_is_at_most_4_as_the_readme_says() {
    let (dir, unit) = unit_copy();
    let (ok, text) = output(Command::new("systemd-analyze").arg("verify").arg(&unit));
    assert!(
        ok && text.trim().is_empty(),
        "systemd-analyze verify:\n{text}"
    );

    let (_, text) = output(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&unit),
    );
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for hostlens.service:")
                .nth(1)
        })
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(score <= 4.0, "exposure {score} > 4.0:\n{text}");
    let readme = read("README.md");
    let recorded = format!("exposure level **{score:.1}**");
    assert!(
        readme.contains(&recorded),
        "README.md must record the measured score as `{recorded}`"
    );
    // Type=notify, reload by SIGHUP, the state directory for the remote-write queue.
    let unit_text = read("systemd/hostlens.service");
    for needed in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=hostlens",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        // read-only, not yes: the filesystem collector must stat the real /home.
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        // adjtimex for the timex collector, netlink for tcpstat and netdev.address_info,
        // memlock for BPF maps on kernels before 5.11.
        "adjtimex",
        "AF_NETLINK",
        "LimitMEMLOCK=infinity",
    ] {
        assert!(unit_text.contains(needed), "the unit lacks {needed}");
    }
    // ProtectClock= would filter the adjtimex the timex collector reads the clock with.
    assert!(
        !unit_text.lines().any(|l| l.starts_with("ProtectClock=")),
        "ProtectClock= breaks the timex collector"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn prometheus_rules_pass_promtool_check_and_unit_tests() {
    let config = repo_root().join("config");
    let out = run_ok(
        Command::new("promtool")
            .args(["check", "rules", "recording_rules.yml", "alert_rules.yml"])
            .current_dir(&config),
    );
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run_ok(
        Command::new("promtool")
            .args(["test", "rules", "tests/rules_test.yml"])
            .current_dir(&config),
    );
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert of the file has a unit test.
    let rules = read("config/alert_rules.yml");
    let tests = read("config/tests/rules_test.yml");
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            assert!(
                tests.contains(&format!(
                    "alertname: {name}\n        exp_alerts:\n          - exp_labels"
                )),
                "alert {name} has no firing test in config/tests/rules_test.yml"
            );
            assert!(
                tests.contains(&format!("alertname: {name}\n        exp_alerts: []")),
                "alert {name} has no silent test in config/tests/rules_test.yml"
            );
        }
    }
}

/// Debian's Prometheus (2.42) is built without Kubernetes service discovery, so its promtool
/// rejects `kubernetes_sd_configs`. The job's relabelling is then checked by replacing the
/// discovery with a static target carrying the same `__meta_*` labels a pod would have.
#[test]
fn prometheus_example_config_passes_promtool() {
    let dir = scratch("promcfg");
    let text = read("config/prometheus.yml");
    for f in ["recording_rules.yml", "alert_rules.yml"] {
        std::fs::copy(repo_root().join("config").join(f), dir.join(f)).unwrap();
    }
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, &text).unwrap();
    let (ok, out) = output(
        Command::new("promtool")
            .arg("check")
            .arg("config")
            .arg(&path),
    );
    let text = if ok {
        text
    } else {
        assert!(
            out.contains("field kubernetes_sd_configs not found"),
            "promtool rejects the example for another reason:\n{out}"
        );
        let sd_start = text.find("    kubernetes_sd_configs:").unwrap();
        let sd_end = text[sd_start..].find("    relabel_configs:").unwrap() + sd_start;
        let fake = "    static_configs:\n      - targets: [\"10.0.0.7\"]\n        labels:\n          __meta_kubernetes_pod_annotation_prometheus_io_scrape: \"true\"\n          __meta_kubernetes_pod_annotation_prometheus_io_port: \"9100\"\n          __meta_kubernetes_pod_annotation_prometheus_io_path: /metrics\n          __meta_kubernetes_pod_node_name: node-1\n";
        format!("{}{fake}{}", &text[..sd_start], &text[sd_end..])
    };
    std::fs::write(&path, &text).unwrap();
    let out = run_ok(
        Command::new("promtool")
            .arg("check")
            .arg("config")
            .arg(&path),
    );
    assert!(
        out.contains("SUCCESS") && out.contains("2 rule files found"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The `hostlens-daemonset` job of config/prometheus.yml, with its pod discovery replaced by
/// static targets carrying the labels Kubernetes discovery gives a pod.
fn daemonset_job_with_pods(pods: &[(&str, &str, &str)]) -> String {
    let text = read("config/prometheus.yml");
    let start = text.find("  - job_name: hostlens-daemonset").unwrap();
    let job = &text[start..];
    let sd_start = job.find("    kubernetes_sd_configs:").unwrap();
    let sd_end = job.find("    relabel_configs:").unwrap();
    let mut fake = String::from("    static_configs:\n");
    for (address, scrape, node) in pods {
        let port = address.rsplit(':').next().unwrap();
        fake.push_str(&format!(
            "      - targets: [\"{}\"]\n        labels:\n          __meta_kubernetes_pod_annotation_prometheus_io_scrape: \"{scrape}\"\n          __meta_kubernetes_pod_annotation_prometheus_io_port: \"{port}\"\n          __meta_kubernetes_pod_annotation_prometheus_io_path: /metrics\n          __meta_kubernetes_pod_node_name: {node}\n",
            // A pod's discovered address has the container port, or none.
            address.rsplit_once(':').unwrap().0,
        ));
    }
    format!("{}{fake}{}", &job[..sd_start], &job[sd_end..])
}

#[test]
fn prometheus_daemonset_job_relabels_annotated_pods_onto_the_agent() {
    let agent = Agent::start(&["--probe.disable-defaults"]);
    let addr = format!("127.0.0.1:{}", agent.port);
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n{}",
        daemonset_job_with_pods(&[
            (&addr, "true", "node-1"),
            ("127.0.0.2:1", "false", "node-2")
        ])
    );
    let prom = common::prom::Prometheus::start("k8s", &config);
    let targets = prom.scraped_targets("hostlens-daemonset");
    assert_eq!(
        targets.len(),
        1,
        "the pod without the annotation is dropped: {targets:?}"
    );
    let t = &targets[0];
    assert_eq!(t["health"], "up", "{t:?}");
    assert_eq!(t["labels"]["instance"], "node-1");
    assert_eq!(t["labels"]["node"], "node-1");
    assert_eq!(t["scrapeUrl"], format!("http://{addr}/metrics"));
}

fn kubernetes_validate() -> PathBuf {
    let local = repo_root().join("target/tools/kv/bin/kubernetes-validate");
    if local.exists() {
        return local;
    }
    which("kubernetes-validate")
        .unwrap_or_else(|| panic!("kubernetes-validate is not installed: run `cargo xtask setup`"))
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|p| p.exists())
    })
}

/// The Kubernetes version the manifests are validated against.
const KUBERNETES: &str = "1.36.0";

fn yaml_docs(rel: &str) -> Vec<serde_yaml::Value> {
    use serde::Deserialize as _;
    serde_yaml::Deserializer::from_str(&read(rel))
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .collect()
}

fn get<'a>(v: &'a serde_yaml::Value, path: &str) -> &'a serde_yaml::Value {
    path.split('.').fold(v, |v, k| match k.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[k],
    })
}

fn keys(v: &serde_yaml::Value) -> BTreeSet<String> {
    v.as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn kubernetes_manifests_validate_and_agree_with_each_other() {
    let kv = kubernetes_validate();
    let deploy = repo_root().join("deploy");
    let (ok, out) = output(
        Command::new(&kv)
            .args(["--strict", "-k", KUBERNETES])
            .args(["daemonset.yaml", "service.yaml"])
            .current_dir(&deploy),
    );
    assert!(ok, "kubernetes-validate:\n{out}");
    for kind in [
        "namespace/monitoring",
        "serviceaccount/hostlens",
        "configmap/hostlens",
        "daemonset/hostlens",
        "service/hostlens",
    ] {
        assert!(
            out.contains(&format!("passed for resource {kind}")),
            "{kind}:\n{out}"
        );
    }
    // The custom resources: kubernetes-validate has no schema for them and says so (a warning,
    // not a pass). They are checked below against the operator's CRD fields used here.
    for (file, kind) in [
        ("podmonitor.yaml", "PodMonitor"),
        ("servicemonitor.yaml", "ServiceMonitor"),
    ] {
        let (_, out) = output(
            Command::new(&kv)
                .args(["--strict", "-k", KUBERNETES, file])
                .current_dir(&deploy),
        );
        assert!(
            out.contains(&format!("Couldn't find schema for kind {kind}")),
            "kubernetes-validate learnt the CRDs: validate them there instead:\n{out}"
        );
    }

    let docs = yaml_docs("deploy/daemonset.yaml");
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let pod = get(ds, "spec.template");
    let spec = &pod["spec"];
    let c = get(spec, "containers.0");
    assert_eq!(spec["hostPID"], true);
    assert_ne!(c["securityContext"]["privileged"], true);
    // Same capabilities as the systemd unit, no more.
    let added: BTreeSet<String> = c["securityContext"]["capabilities"]["add"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| format!("CAP_{}", v.as_str().unwrap()))
        .collect();
    let unit = read("systemd/hostlens.service");
    let unit_caps: BTreeSet<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(added, unit_caps);
    assert_eq!(
        c["securityContext"]["capabilities"]["drop"][0].as_str(),
        Some("ALL")
    );
    // --path.* flags point at read-only host mounts.
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let mounts: BTreeMap<&str, bool> = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["mountPath"].as_str().unwrap(),
                m["readOnly"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    for flag in ["procfs", "sysfs", "rootfs"] {
        let value = args
            .iter()
            .find_map(|a| a.strip_prefix(&format!("--path.{flag}=")))
            .unwrap_or_else(|| panic!("--path.{flag} not set"));
        assert_eq!(
            mounts.get(value),
            Some(&true),
            "{value} is not a read-only mount"
        );
    }
    for p in ["/sys/fs/bpf", "/sys/kernel/tracing"] {
        assert_eq!(mounts.get(p), Some(&true), "{p} is not a read-only mount");
    }
    assert_eq!(
        get(c, "livenessProbe.httpGet.path").as_str(),
        Some("/healthz")
    );
    assert_eq!(
        get(c, "readinessProbe.httpGet.path").as_str(),
        Some("/readyz")
    );
    assert!(c["resources"]["limits"]["memory"].is_string());
    assert_eq!(get(spec, "tolerations.0.operator").as_str(), Some("Exists"));
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"].as_str(), Some("true"));
    let port_name = get(c, "ports.0.name").as_str().unwrap();
    assert_eq!(
        ann["prometheus.io/port"].as_str().unwrap(),
        get(c, "ports.0.containerPort")
            .as_u64()
            .unwrap()
            .to_string()
    );
    let pod_labels = &pod["metadata"]["labels"];

    // The Service and the operator's monitors select these pods, by port name.
    let svc = &yaml_docs("deploy/service.yaml")[0];
    let selects = |sel: &serde_yaml::Value| {
        let m = sel.as_mapping().expect("a label selector");
        assert!(!m.is_empty());
        m.iter().all(|(k, v)| &pod_labels[k] == v)
    };
    assert!(selects(&svc["spec"]["selector"]));
    assert_eq!(
        get(svc, "spec.ports.0.targetPort").as_str(),
        Some(port_name)
    );
    // Fields of monitoring.coreos.com/v1 (prometheus-operator's CRDs) used here.
    let pod_monitor_spec: BTreeSet<&str> = [
        "selector",
        "podMetricsEndpoints",
        "namespaceSelector",
        "jobLabel",
    ]
    .into();
    let endpoint: BTreeSet<&str> = [
        "port",
        "path",
        "interval",
        "scheme",
        "tlsConfig",
        "basicAuth",
        "relabelings",
    ]
    .into();
    let relabel: BTreeSet<&str> = [
        "sourceLabels",
        "targetLabel",
        "regex",
        "action",
        "replacement",
    ]
    .into();
    // One resource per file, so that applying the directory's files one by one never makes
    // both (every node scraped twice).
    let monitors: Vec<serde_yaml::Value> = ["deploy/podmonitor.yaml", "deploy/servicemonitor.yaml"]
        .iter()
        .map(|f| {
            let docs = yaml_docs(f);
            assert_eq!(docs.len(), 1, "{f}: one resource");
            docs.into_iter().next().unwrap()
        })
        .collect();
    for m in monitors {
        assert_eq!(m["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
        let (eps, spec_keys, labels): (&str, BTreeSet<&str>, &serde_yaml::Value) =
            match m["kind"].as_str() {
                Some("PodMonitor") => ("podMetricsEndpoints", pod_monitor_spec.clone(), pod_labels),
                Some("ServiceMonitor") => (
                    "endpoints",
                    ["selector", "endpoints", "namespaceSelector", "jobLabel"].into(),
                    &svc["metadata"]["labels"],
                ),
                other => panic!("unexpected kind {other:?}"),
            };
        for k in keys(&m["spec"]) {
            assert!(
                spec_keys.contains(k.as_str()),
                "{:?}: unknown spec.{k}",
                m["kind"]
            );
        }
        let sel = get(&m, "spec.selector.matchLabels").as_mapping().unwrap();
        assert!(
            sel.iter().all(|(k, v)| &labels[k] == v),
            "{:?} selects nothing",
            m["kind"]
        );
        for ep in m["spec"][eps].as_sequence().unwrap() {
            for k in keys(ep) {
                assert!(
                    endpoint.contains(k.as_str()),
                    "{:?}: unknown endpoint key {k}",
                    m["kind"]
                );
            }
            assert_eq!(ep["port"].as_str(), Some(port_name));
            for r in ep["relabelings"].as_sequence().into_iter().flatten() {
                for k in keys(r) {
                    assert!(relabel.contains(k.as_str()), "unknown relabeling key {k}");
                }
            }
            // The job the targets end up with must be one the rules and the dashboard select
            // (job=~"hostlens.*"): the operator's default is <namespace>/<name> for a
            // PodMonitor and the Service's name for a ServiceMonitor.
            let relabelled = ep["relabelings"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter(|r| r["targetLabel"].as_str() == Some("job"))
                .filter_map(|r| r["replacement"].as_str())
                .next_back()
                .map(str::to_string);
            let job = relabelled.unwrap_or_else(|| match m["kind"].as_str() {
                Some("PodMonitor") => format!(
                    "{}/{}",
                    m["metadata"]["namespace"].as_str().unwrap(),
                    m["metadata"]["name"].as_str().unwrap()
                ),
                _ => svc["metadata"]["name"].as_str().unwrap().to_string(),
            });
            assert!(
                job.starts_with("hostlens"),
                "{:?} targets get job {job:?}, which job=~\"hostlens.*\" does not match",
                m["kind"]
            );
        }
    }
    for f in ["config/alert_rules.yml", "config/grafana-dashboard.json"] {
        assert!(
            read(f).contains("hostlens.*"),
            "{f} no longer selects job=~\"hostlens.*\""
        );
    }
}

/// Metric names in a PromQL expression: identifiers that are not functions, keywords, label
/// names (inside `{}` or grouping clauses), durations or Grafana variables.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
    ];
    // Written `sum by (x) (...)`: not followed by `(` directly.
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let b = expr.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_to = |i: usize, close: u8| -> usize {
        let mut j = i + 1;
        let mut in_str = false;
        while j < b.len() {
            match b[j] {
                b'\\' if in_str => j += 1,
                b'"' => in_str = !in_str,
                c if c == close && !in_str => return j + 1,
                _ => {}
            }
            j += 1;
        }
        j
    };
    while i < b.len() {
        let c = b[i];
        if c == b'"' {
            i = skip_to(i, b'"');
        } else if c == b'{' {
            i = skip_to(i, b'}');
        } else if c == b'[' {
            i = skip_to(i, b']');
        } else if c == b'$' {
            i += 1;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
        } else if c.is_ascii_digit() || c == b'.' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let word = &expr[start..i];
            let mut j = i;
            while j < b.len() && b[j] == b' ' {
                j += 1;
            }
            let call = j < b.len() && b[j] == b'(';
            if KEYWORDS.contains(&word) {
                if call {
                    i = skip_to(j, b')');
                }
            } else if !call && !AGGREGATIONS.contains(&word) {
                names.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn promql_name_extraction() {
    assert_eq!(
        metric_names(
            r#"sum by (a, b) (rate(x_total{c="d{e}", f=~"$g"}[$__rate_interval])) / on (a) y offset 5m > bool 2^20"#
        ),
        ["x_total", "y"].map(String::from).into()
    );
    assert_eq!(
        metric_names("histogram_quantile(0.95, sum by (le) (rate(h_bucket[5m])))"),
        ["h_bucket"].map(String::from).into()
    );
}

/// Documented families that appear only with traffic or an enabled feature, so a freshly
/// started agent does not serve them.
const NEED_TRAFFIC_OR_FEATURE: &[(&str, &str)] = &[
    (
        "http_server_request_duration_seconds",
        "needs HTTP requests to a traced server",
    ),
    (
        "http_client_request_duration_seconds",
        "needs outgoing HTTP requests",
    ),
    (
        "tcp_connections_opened_total",
        "needs TCP connections after the agent started",
    ),
    ("tcp_connect_failures_total", "needs a failed connect"),
    ("tcp_retransmits_total", "needs retransmissions"),
    ("tcp_resets_total", "needs resets"),
    ("tcp_rtt_seconds", "needs RTT samples"),
    (
        "hostlens_remote_write_requests_total",
        "needs a remote-write endpoint configured",
    ),
    (
        "hostlens_remote_write_samples_total",
        "needs a remote-write endpoint configured",
    ),
];

/// Made by Prometheus, not by any exporter.
const SYNTHETIC: &[&str] = &["up"];

/// Families named in README's "Metrics reference" table (`node_memory_*` is a prefix).
fn readme_families() -> Vec<String> {
    let readme = read("README.md");
    let start = readme
        .find("## Metrics reference")
        .expect("a metrics reference");
    let section = &readme[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |e| e + 3);
    let mut out = Vec::new();
    for line in section[..end].lines().filter(|l| l.starts_with("| `")) {
        let first = line.split('|').nth(1).unwrap_or("");
        out.extend(first.split('`').skip(1).step_by(2).map(str::to_string));
    }
    out
}

fn covers(doc: &[String], family: &str) -> bool {
    doc.iter().any(|d| match d.strip_suffix('*') {
        Some(prefix) => family.starts_with(prefix),
        None => d == family,
    })
}

/// The family a sample name belongs to: histogram/summary series drop their suffix.
fn family_of(name: &str, known: impl Fn(&str) -> bool) -> String {
    if known(name) {
        return name.to_string();
    }
    for suffix in ["_bucket", "_count", "_sum"] {
        if let Some(base) = name.strip_suffix(suffix)
            && known(base)
        {
            return base.to_string();
        }
    }
    name.to_string()
}

#[test]
fn dashboard_queries_use_documented_families_served_by_a_live_agent() {
    if !privileged("dashboard_queries_use_documented_families_served_by_a_live_agent") {
        return;
    }
    let dash: serde_json::Value =
        serde_json::from_str(&read("config/grafana-dashboard.json")).expect("valid JSON");
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&dash, &mut exprs);
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    let mut names = BTreeSet::new();
    for e in &exprs {
        // Grafana's label_values(metric, label): the metric is the first argument.
        match e.trim().strip_prefix("label_values(") {
            Some(args) => names.extend(metric_names(args.split(',').next().unwrap_or(""))),
            None => names.extend(metric_names(e)),
        }
    }
    let doc = readme_families();
    let agent = Agent::start(&[]);
    let served = agent.scrape();
    let mut report = BTreeSet::new();
    for name in &names {
        if SYNTHETIC.contains(&name.as_str()) {
            continue;
        }
        let family = family_of(name, |f| covers(&doc, f));
        assert!(
            covers(&doc, &family),
            "the dashboard uses {name}, which README.md's metrics reference does not document"
        );
        if let Some((_, why)) = NEED_TRAFFIC_OR_FEATURE.iter().find(|(f, _)| *f == family) {
            report.insert(format!("{family}: documented; not required live ({why})"));
            continue;
        }
        assert!(
            served.types.contains_key(&family),
            "the dashboard uses {family}, documented but not served by a live agent"
        );
    }
    eprintln!(
        "dashboard families not checked live:\n  {}",
        report.into_iter().collect::<Vec<_>>().join("\n  ")
    );
    // And the other way round: every family a default agent serves is in the reference.
    let undocumented: Vec<&String> = served.types.keys().filter(|f| !covers(&doc, f)).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in README.md's metrics reference: {undocumented:?}"
    );
    // The families every agent serves are really there (the check above is not vacuous).
    for f in [
        "node_load1",
        "syscalls_total",
        "hostlens_probe_attached",
        "process_cpu_seconds_total",
    ] {
        assert!(names.contains(f), "the dashboard should use {f}");
        assert!(served.types.contains_key(f));
    }
}

/// The DaemonSet's arguments and ConfigMap, and the unit's ExecStart with the shipped config,
/// start the real binary (host paths mapped back to this host's).
#[test]
fn daemonset_and_unit_command_lines_run_the_agent() {
    let dir = scratch("cmdlines");
    let host = |s: &str| {
        s.replace("/host/proc", "/proc")
            .replace("/host/sys", "/sys")
            .replace("/host/root", "/")
    };
    let docs = yaml_docs("deploy/daemonset.yaml");
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let cfg = dir.join("hostlens.yaml");
    std::fs::write(&cfg, host(cm["data"]["hostlens.yaml"].as_str().unwrap())).unwrap();
    let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let args: Vec<String> = get(ds, "spec.template.spec.containers.0.args")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| host(a.as_str().unwrap()))
        .filter(|a| !a.starts_with("--web.listen-address"))
        .map(|a| a.replace("/etc/hostlens/hostlens.yaml", cfg.to_str().unwrap()))
        .collect();
    assert!(args.iter().any(|a| a.starts_with("--config.file=")));

    let unit = read("systemd/hostlens.service");
    let exec: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=/usr/bin/hostlens "))
        .unwrap()
        .split_whitespace()
        .map(|a| {
            a.replace(
                "/etc/hostlens/hostlens.yaml",
                repo_root().join("config/hostlens.yaml").to_str().unwrap(),
            )
        })
        .collect();

    for args in [args, exec] {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let agent = Agent::start(&refs);
        let e = agent.scrape();
        assert!(e.get("node_load1").is_some(), "{args:?}");
        for (series, v) in &e.samples {
            if series.starts_with("node_scrape_collector_success") {
                assert_eq!(*v, 1.0, "{series} with {args:?}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The alert and recording rules query only families the README documents, and recorded
/// series they define.
#[test]
fn rules_use_documented_families() {
    let doc = readme_families();
    let mut recorded = BTreeSet::new();
    let mut exprs = Vec::new();
    for file in ["config/recording_rules.yml", "config/alert_rules.yml"] {
        let rules: serde_yaml::Value = serde_yaml::from_str(&read(file)).unwrap();
        for g in rules["groups"].as_sequence().unwrap() {
            for r in g["rules"].as_sequence().unwrap() {
                if let Some(name) = r["record"].as_str() {
                    recorded.insert(name.to_string());
                }
                exprs.push(r["expr"].as_str().unwrap().to_string());
            }
        }
    }
    let mut families = BTreeSet::new();
    for e in &exprs {
        for name in metric_names(e) {
            if recorded.contains(&name) || SYNTHETIC.contains(&name.as_str()) {
                continue;
            }
            let family = family_of(&name, |f| covers(&doc, f));
            assert!(
                covers(&doc, &family),
                "a rule uses {name}, which README.md's metrics reference does not document"
            );
            families.insert(family);
        }
    }
    for f in [
        "node_memory_MemAvailable_bytes",
        "hostlens_probe_attached",
        "http_server_request_duration_seconds",
        "tcp_retransmits_total",
        "hostlens_remote_write_samples_total",
    ] {
        assert!(
            families.contains(f),
            "the rules should use {f}: {families:?}"
        );
    }
}

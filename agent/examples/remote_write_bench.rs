//! Remote-write encoding benchmark, run by `cargo xtask bench`: encode + snappy-compress
//! throughput (samples/s) and bytes per sample for Remote-Write 1.0 and 2.0 (encode: each
//! series' borrowed labels and sample to protobuf bytes, as hostlens does when it queues a
//! series; for 2.0 also the symbols-table request built from those bytes), over batches of
//! `max_samples_per_send` (2000) series shaped like hostlens' own (node_exporter-style
//! families, histogram buckets, external labels). Prints a Markdown table.
use std::time::{Duration, Instant};

use hostlens::remote_write::{
    codec::{self, Batch, BatchSeries},
    proto::{Label, MetricMetadata, Sample, TimeSeries, v1_type},
};

const SERIES: usize = 20_000;
const BATCH: usize = 2_000;
const MIN_TIME: Duration = Duration::from_millis(1500);

fn label(n: &str, v: &str) -> Label {
    Label {
        name: n.into(),
        value: v.into(),
    }
}

/// Series like a node's: cpu x mode counters, filesystem gauges, an HTTP latency histogram
/// by route and status, each with instance and job.
fn series() -> Vec<(TimeSeries, MetricMetadata)> {
    let mut out = Vec::with_capacity(SERIES);
    let ts = 1_790_000_000_000i64;
    let meta = |t: i32, name: &str, help: &str| MetricMetadata {
        r#type: t,
        metric_family_name: name.into(),
        help: help.into(),
        unit: String::new(),
    };
    let mut i = 0u64;
    while out.len() < SERIES {
        let k = out.len();
        let (labels, m) = match k % 3 {
            0 => (
                vec![
                    label("__name__", "node_cpu_seconds_total"),
                    label("cpu", &(i % 64).to_string()),
                    label(
                        "mode",
                        [
                            "idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice",
                        ][(i % 8) as usize],
                    ),
                ],
                meta(
                    v1_type::COUNTER,
                    "node_cpu_seconds_total",
                    "Seconds the CPUs spent in each mode.",
                ),
            ),
            1 => (
                vec![
                    label("__name__", "node_filesystem_avail_bytes"),
                    label("device", &format!("/dev/nvme0n1p{}", i % 97)),
                    label("fstype", "ext4"),
                    label("mountpoint", &format!("/srv/volume-{}", i % 97)),
                ],
                meta(
                    v1_type::GAUGE,
                    "node_filesystem_avail_bytes",
                    "Filesystem space available to non-root users in bytes.",
                ),
            ),
            _ => (
                vec![
                    label("__name__", "http_server_request_duration_seconds_bucket"),
                    label(
                        "http_request_method",
                        ["GET", "POST", "PUT"][(i % 3) as usize],
                    ),
                    label(
                        "http_response_status_code",
                        ["200", "404", "500", "302"][(i % 4) as usize],
                    ),
                    label("http_route", &format!("/api/v1/items/{}", i % 50)),
                    label(
                        "le",
                        [
                            "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5",
                            "5", "10", "+Inf",
                        ][(i % 12) as usize],
                    ),
                    label("process_name", "nginx"),
                ],
                meta(
                    v1_type::HISTOGRAM,
                    "http_server_request_duration_seconds",
                    "Duration of HTTP server requests.",
                ),
            ),
        };
        let mut labels = labels;
        labels.push(label("instance", "node-17.example.internal:9100"));
        labels.push(label("job", "hostlens"));
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        i += 1;
        out.push((
            TimeSeries {
                labels,
                samples: vec![Sample {
                    value: (i as f64) * 1.37 + (i % 7) as f64 * 1e6,
                    timestamp: ts + (i as i64 % 15) * 1000,
                }],
            },
            m,
        ));
    }
    out
}

/// One batch: the series with the index of their metadata, and the metadata.
struct Input {
    series: Vec<(TimeSeries, u32)>,
    metadata: Vec<MetricMetadata>,
}

/// What hostlens does per series: its labels (borrowed strings) encoded once into protobuf
/// bytes with the sample (at queue time), the batch being those bytes.
fn encode_batch(input: &Input) -> Batch {
    let mut b = Batch {
        metadata: input.metadata.clone(),
        ..Batch::default()
    };
    let mut fields = Vec::new();
    let mut refs: Vec<(&str, &str)> = Vec::new();
    for (s, m) in &input.series {
        refs.clear();
        refs.extend(s.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())));
        fields.clear();
        codec::put_labels(&refs, &mut fields);
        let start = b.buf.len() as u32;
        codec::put_series(&fields, s.samples[0], &mut b.buf);
        b.series.push(BatchSeries {
            start,
            end: b.buf.len() as u32,
            samples: 1,
            meta: Some(*m),
            created: 0,
        });
    }
    b
}

fn main() {
    let all = series();
    let inputs: Vec<Input> = all
        .chunks(BATCH)
        .map(|c| {
            let mut metadata: Vec<MetricMetadata> = Vec::new();
            let series = c
                .iter()
                .map(|(s, m)| {
                    let i = metadata.iter().position(|x| x == m).unwrap_or_else(|| {
                        metadata.push(m.clone());
                        metadata.len() - 1
                    });
                    (s.clone(), i as u32)
                })
                .collect();
            Input { series, metadata }
        })
        .collect();
    // The hand encoding is prost's, byte for byte.
    for (inp, c) in inputs.iter().zip(all.chunks(BATCH)) {
        let series: Vec<TimeSeries> = c.iter().map(|(s, _)| s.clone()).collect();
        assert_eq!(encode_batch(inp).buf, Batch::from_series(&series, &[]).buf);
    }
    println!(
        "| message | samples/s (encode + snappy) | bytes/sample (compressed) | bytes/sample (protobuf) |"
    );
    println!("|---|---|---|---|");
    for (name, v2) in [
        ("Remote-Write 1.0 `prometheus.WriteRequest`", false),
        ("Remote-Write 2.0 `io.prometheus.write.v2.Request`", true),
    ] {
        let mut samples = 0u64;
        let mut raw_bytes = 0u64;
        let mut bytes = 0u64;
        let start = Instant::now();
        let mut rounds = 0;
        while start.elapsed() < MIN_TIME || rounds == 0 {
            for inp in &inputs {
                let b = encode_batch(inp);
                let body = if v2 {
                    let raw = codec::encode_v2(&b);
                    raw_bytes += raw.len() as u64;
                    codec::compress(&raw)
                } else {
                    raw_bytes += b.buf.len() as u64;
                    codec::compress(&b.buf)
                };
                samples += b.samples() as u64;
                bytes += body.len() as u64;
            }
            rounds += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} |",
            samples as f64 / secs,
            bytes as f64 / samples as f64,
            raw_bytes as f64 / samples as f64
        );
    }
}

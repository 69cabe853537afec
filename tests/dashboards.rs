//! The Grafana dashboard (`deploy/grafana/origin.json`) and the Prometheus alerts
//! (`deploy/prometheus/alerts.yaml`) name only metrics Origin exports: every metric in their
//! PromQL is in a real scrape of a running Origin after a push and a pull, and every label
//! they match or group by is on one of the expression's metrics.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;

/// Series Prometheus adds to every target itself (not in Origin's scrape).
const PROMETHEUS_SERIES: [&str; 1] = ["up"];
/// Labels Prometheus adds to every series of a target.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// PromQL words that are not metric names: operators, modifiers and aggregations (functions
/// are told apart by the `(` that follows them).
const KEYWORDS: [&str; 26] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "atan2",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];
/// Keywords whose parenthesised list that follows holds label names.
const LABEL_LIST_KEYWORDS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// What one PromQL expression names: metric names and label names.
#[derive(Debug, Default)]
struct Names {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_ident(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit()
}

/// The metric and label names of a PromQL expression, Grafana variables (`$x`, `${x}`) left
/// out. An identifier is a label inside `{...}` or in the list after `by`, `on`, ...; a
/// function when `(` follows it; a keyword or aggregation by name; otherwise a metric.
fn promql_names(expr: &str) -> Names {
    let b = expr.as_bytes();
    let mut names = Names::default();
    let (mut i, mut braces) = (0, 0usize);
    // One entry per open parenthesis: true when it holds a list of labels.
    let mut parens: Vec<bool> = Vec::new();
    let mut label_list_next = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'$' => {
                i += 1;
                if b.get(i) == Some(&b'{') {
                    while i < b.len() && b[i] != b'}' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    while i < b.len() && is_ident(b[i]) {
                        i += 1;
                    }
                }
            }
            b'{' => (braces, i) = (braces + 1, i + 1),
            b'}' => (braces, i) = (braces.saturating_sub(1), i + 1),
            b'(' => {
                parens.push(std::mem::take(&mut label_list_next));
                i += 1;
            }
            b')' => (_, i) = (parens.pop(), i + 1),
            // Numbers and durations: 0.99, 1e9, 5m, 1h30m.
            c if c.is_ascii_digit() || c == b'.' => {
                while i < b.len() && (is_ident(b[i]) || b[i] == b'.') {
                    i += 1;
                }
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
                let word = &expr[start..i];
                let next = b[i..].iter().find(|c| !c.is_ascii_whitespace());
                if braces > 0 || parens.last() == Some(&true) {
                    names.labels.insert(word.to_string());
                } else if LABEL_LIST_KEYWORDS.contains(&word) {
                    label_list_next = true;
                } else if !KEYWORDS.contains(&word) && next != Some(&b'(') {
                    names.metrics.insert(word.to_string());
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Every PromQL expression of the dashboard: the panels' targets (rows' nested panels
/// included) and the variables' `label_values(expr, label)` queries.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    fn panels(list: &serde_json::Value, out: &mut Vec<String>) {
        for p in list.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push(t["expr"].as_str().expect("a target's expr").to_string());
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] != "query" {
            continue;
        }
        let query = v["query"]["query"].as_str().or(v["query"].as_str());
        let query = query.expect("a query variable's query");
        // label_values(expr, label): the expression, and the label as a `by` list.
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .expect("query variables use label_values(expr, label)");
        let (expr, label) = inner.rsplit_once(',').expect("label_values names a metric");
        out.push(format!("count by ({label}) ({expr})"));
    }
    out
}

/// The `expr:` values of a rules file: one line, or a `|`/`>` block (the lines indented
/// deeper than the key).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let Some(value) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let block: Vec<&str> = lines[n + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .copied()
                .collect();
            out.push(block.join("\n"));
        } else {
            out.push(value.trim_matches(|c| c == '"' || c == '\'').to_string());
        }
    }
    out
}

/// The scrape's series names, histograms and summaries as the names PromQL sees
/// (`_bucket`, `_sum`, `_count`), with the label names each series carries.
fn exported(scrape: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in scrape.lines() {
        if let Some(decl) = line.strip_prefix("# TYPE ") {
            let (name, kind) = decl.split_once(' ').expect("# TYPE name kind");
            let suffixes: &[&str] = match kind {
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                _ => &[""],
            };
            for s in suffixes {
                names.entry(format!("{name}{s}")).or_default();
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).expect("a sample line");
            let labels = names.entry(line[..end].to_string()).or_default();
            if let Some(set) = line[end..].strip_prefix('{') {
                let set = &set[..set.rfind('}').expect("a closed label set")];
                // Label values here are Origin's own (no commas or `=` inside).
                for pair in set.split(',').filter(|p| !p.is_empty()) {
                    labels.insert(pair.split('=').next().unwrap_or("").to_string());
                }
            }
        }
    }
    for s in PROMETHEUS_SERIES {
        names.entry(s.to_string()).or_default();
    }
    names
}

/// What is wrong with an expression against a scrape: metric names not exported, and
/// labels none of its metrics carry (checked only when one of them has samples to show).
fn problems(expr: &str, scrape: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let names = promql_names(expr);
    let mut out = Vec::new();
    if names.metrics.is_empty() {
        out.push("names no metric".to_string());
    }
    let mut labels: BTreeSet<&str> = TARGET_LABELS.into_iter().collect();
    let mut sampled = false;
    for m in &names.metrics {
        match scrape.get(m) {
            None => out.push(format!("metric {m} is not in the scrape")),
            Some(l) => {
                sampled |= !l.is_empty();
                labels.extend(l.iter().map(String::as_str));
            }
        }
    }
    if sampled {
        for l in names.labels.iter().filter(|l| !labels.contains(l.as_str())) {
            out.push(format!("label {l} is on none of {:?}", names.metrics));
        }
    }
    out
}

fn read(path: &str) -> String {
    let path = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A scrape after a push, a pull and a readiness probe, so the per-request series exist.
fn scrape_after_traffic() -> String {
    let srv = Server::start();
    let layer = bytes(7, 50_000);
    let (_, manifest) = srv.push_image("dash/app", "v1", std::slice::from_ref(&layer));
    let pulled = srv.request(
        "GET",
        "/v2/dash/app/manifests/v1",
        &[("Accept", OCI_MANIFEST)],
        b"",
    );
    assert_eq!(pulled.status, 200);
    assert_eq!(
        pulled.header("docker-content-digest"),
        Some(manifest.as_str())
    );
    let blob = srv.get(&format!("/v2/dash/app/blobs/{}", digest(&layer)));
    assert_eq!((blob.status, blob.body.len()), (200, layer.len()));
    assert_eq!(srv.get("/readyz").status, 200);
    let r = srv.get("/metrics");
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).expect("a UTF-8 scrape")
}

/// Every expression of both files names only exported metrics and labels; and the check
/// itself rejects a name that does not exist, a suffix on a non-histogram and a wrong label.
#[test]
fn dashboard_and_alerts_name_only_exported_metrics() {
    let scrape = exported(&scrape_after_traffic());
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/origin.json")).expect("dashboard JSON");
    let sources = [
        ("deploy/grafana/origin.json", dashboard_exprs(&dashboard)),
        (
            "deploy/prometheus/alerts.yaml",
            rule_exprs(&read("deploy/prometheus/alerts.yaml")),
        ),
    ];
    // The panels and rules the files hold: a parser finding nothing must not pass.
    assert!(sources[0].1.len() >= 30, "{:?}", sources[0].1);
    assert!(sources[1].1.len() >= 9, "{:?}", sources[1].1);
    let mut failures = Vec::new();
    let mut used = BTreeSet::new();
    for (file, exprs) in &sources {
        for expr in exprs {
            used.extend(promql_names(expr).metrics);
            for p in problems(expr, &scrape) {
                failures.push(format!("{file}: {p}\n    in: {expr}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The panels the issue asks for are there (a file emptied by mistake fails here).
    for m in [
        "origin_http_requests_total",
        "origin_http_request_duration_seconds_bucket",
        "origin_http_received_bytes_total",
        "origin_http_sent_bytes_total",
        "origin_upload_sessions_open",
        "origin_gc_bytes_reclaimed_total",
        "origin_gc_failures_total",
        "origin_storage_ready",
        "origin_s3_requests_total",
        "origin_s3_retries_total",
        "origin_mirror_blob_fetches_total",
        "origin_webhook_queue_depth",
        "origin_webhook_dropped_total",
    ] {
        assert!(used.contains(m), "no panel or rule uses {m}");
    }
    for bad in [
        "sum(rate(origin_bogus_total[5m]))",
        "rate(origin_http_requests_total_bucket[5m])",
        "histogram_quantile(0.9, sum by (le) (rate(origin_http_request_duration_seconds_bucket{grop=\"blobs\"}[5m])))",
        "sum by (operation) (rate(origin_http_requests_total[5m]))",
    ] {
        assert!(!problems(bad, &scrape).is_empty(), "not caught: {bad}");
    }
}

/// The tokenizer tells metrics from functions, aggregations, labels, strings, numbers,
/// durations and Grafana variables.
#[test]
fn promql_names_finds_metrics_and_labels() {
    let n = promql_names(
        "histogram_quantile(0.99, sum by (group, le) (rate(a_bucket{job=~\"$job\",x=\"b{c}\"}[${__rate_interval}])))\
         / on (instance) group_left (v) max(b_info offset 5m) * 1e9 > bool 1h30m and c:recorded",
    );
    let metrics: Vec<&str> = n.metrics.iter().map(String::as_str).collect();
    assert_eq!(metrics, ["a_bucket", "b_info", "c:recorded"]);
    let labels: Vec<&str> = n.labels.iter().map(String::as_str).collect();
    assert_eq!(labels, ["group", "instance", "job", "le", "v", "x"]);
}

//! Prometheus' text exposition format (0.0.4), written by hand for the control
//! plane's and the agent's `/metrics`: counters, gauges and histograms with labels,
//! named by Prometheus' conventions (base units, `_total`, `_seconds`, `_bytes`).
//!
//! Why not the `prometheus-client` crate: it writes OpenMetrics text, which
//! `promtool check metrics` (what operators lint scrapes with, and what the tests
//! run) reads as a different format; and the two exporters need only this much.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Label pairs, in the order they are written.
pub type Labels = Vec<(&'static str, String)>;

/// One metric family being written: `# HELP`, `# TYPE`, then its samples.
pub struct Exposition {
    out: String,
}

impl Default for Exposition {
    fn default() -> Self {
        Self::new()
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('"', "\\\"")
}

fn label_text(labels: &[(&'static str, String)], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// A float the way Prometheus writes it.
fn num(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl Exposition {
    pub fn new() -> Self {
        Self { out: String::new() }
    }

    fn head(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// A counter family (`name` ends in `_total`).
    pub fn counter(&mut self, name: &str, help: &str, samples: &[(Labels, f64)]) {
        self.family(name, help, "counter", samples);
    }

    pub fn gauge(&mut self, name: &str, help: &str, samples: &[(Labels, f64)]) {
        self.family(name, help, "gauge", samples);
    }

    fn family(&mut self, name: &str, help: &str, kind: &str, samples: &[(Labels, f64)]) {
        self.head(name, help, kind);
        for (labels, v) in samples {
            let _ = writeln!(self.out, "{name}{} {}", label_text(labels, None), num(*v));
        }
    }

    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.head(name, help, "histogram");
        let series = h.series.lock().unwrap_or_else(|p| p.into_inner());
        for (labels, s) in series.iter() {
            let mut cumulative = 0;
            for (i, le) in h.buckets.iter().enumerate() {
                cumulative += s.counts[i];
                let _ = writeln!(
                    self.out,
                    "{name}_bucket{} {cumulative}",
                    label_text(labels, Some(("le", &num(*le))))
                );
            }
            let _ = writeln!(
                self.out,
                "{name}_bucket{} {}",
                label_text(labels, Some(("le", "+Inf"))),
                s.count
            );
            let _ = writeln!(
                self.out,
                "{name}_sum{} {}",
                label_text(labels, None),
                num(s.sum)
            );
            let _ = writeln!(
                self.out,
                "{name}_count{} {}",
                label_text(labels, None),
                s.count
            );
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[derive(Debug, Clone, Default)]
struct Series {
    /// Per bucket (not cumulative); observations above the last bucket only count.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A histogram family: fixed bucket bounds, one series per label set.
#[derive(Debug)]
pub struct Histogram {
    buckets: Vec<f64>,
    series: Mutex<BTreeMap<Labels, Series>>,
}

impl Histogram {
    pub fn new(buckets: &[f64]) -> Self {
        Self {
            buckets: buckets.to_vec(),
            series: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn observe(&self, labels: Labels, v: f64) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let s = series.entry(labels).or_insert_with(|| Series {
            counts: vec![0; self.buckets.len()],
            ..Series::default()
        });
        if let Some(i) = self.buckets.iter().position(|le| v <= *le) {
            s.counts[i] += 1;
        }
        s.sum += v;
        s.count += 1;
    }
}

/// A counter family with labels.
#[derive(Debug, Default)]
pub struct CounterVec {
    series: Mutex<BTreeMap<Labels, u64>>,
}

impl CounterVec {
    pub fn inc(&self, labels: Labels) {
        self.add(labels, 1);
    }

    pub fn add(&self, labels: Labels, n: u64) {
        *self
            .series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(labels)
            .or_insert(0) += n;
    }

    pub fn samples(&self) -> Vec<(Labels, f64)> {
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(l, v)| (l.clone(), *v as f64))
            .collect()
    }
}

/// A gauge family with labels (the last value set).
#[derive(Debug, Default)]
pub struct GaugeVec {
    series: Mutex<BTreeMap<Labels, f64>>,
}

impl GaugeVec {
    pub fn set(&self, labels: Labels, v: f64) {
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(labels, v);
    }

    pub fn samples(&self) -> Vec<(Labels, f64)> {
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(l, v)| (l.clone(), *v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_cumulative_with_inf_sum_and_count() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(vec![("route", "/a".into())], 0.05);
        h.observe(vec![("route", "/a".into())], 0.5);
        h.observe(vec![("route", "/a".into())], 7.0);
        let mut e = Exposition::new();
        e.histogram("x_seconds", "X.", &h);
        assert_eq!(
            e.finish(),
            "# HELP x_seconds X.\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{route=\"/a\",le=\"0.1\"} 1\n\
             x_seconds_bucket{route=\"/a\",le=\"1\"} 2\n\
             x_seconds_bucket{route=\"/a\",le=\"+Inf\"} 3\n\
             x_seconds_sum{route=\"/a\"} 7.55\n\
             x_seconds_count{route=\"/a\"} 3\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition::new();
        e.gauge("g", "G.", &[(vec![("k", "a\"b\\c\nd".into())], 1.0)]);
        assert!(e.finish().contains(r#"g{k="a\"b\\c\nd"} 1"#));
    }
}

//! A `metrics` recorder kept in this process, so that `stats` and
//! `--metrics` can print what the libraries counted while the command ran.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// Count and sum of a histogram's samples.
#[derive(Debug, Default)]
struct Samples {
    count: AtomicU64,
    /// The sum, as `f64` bits.
    sum: AtomicU64,
}

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut current = self.sum.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(current) + value).to_bits();
            match self.sum.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
    }
}

/// Every counter and histogram registered, by full key.
#[derive(Debug, Default)]
pub(crate) struct Local {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<BTreeMap<String, Arc<Samples>>>,
}

/// One metric as printed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct Reading {
    /// `name{label="value",…}`.
    pub(crate) metric: String,
    /// A counter's value, or a histogram's number of samples.
    pub(crate) count: u64,
    /// A histogram's sum (seconds for durations); absent for counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sum: Option<f64>,
}

fn full_name(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={:?}", l.key(), l.value()))
        .collect();
    if labels.is_empty() {
        key.name().to_owned()
    } else {
        format!("{}{{{}}}", key.name(), labels.join(","))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Recorder for Local {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let cell = lock(&self.counters)
            .entry(full_name(key))
            .or_default()
            .clone();
        Counter::from_arc(cell)
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let cell = lock(&self.histograms)
            .entry(full_name(key))
            .or_default()
            .clone();
        Histogram::from_arc(cell)
    }
}

static LOCAL: OnceLock<&'static Local> = OnceLock::new();

/// Installs the recorder for this process (once); later calls return the
/// same one. `None` if another recorder was installed first.
pub(crate) fn install() -> Option<&'static Local> {
    if let Some(local) = LOCAL.get() {
        return Some(local);
    }
    let local: &'static Local = Box::leak(Box::default());
    metrics::set_global_recorder(local).ok()?;
    Some(*LOCAL.get_or_init(|| local))
}

impl Local {
    /// Everything counted so far, sorted by name; metrics never touched
    /// are left out.
    pub(crate) fn readings(&self) -> Vec<Reading> {
        let mut out: Vec<Reading> = lock(&self.counters)
            .iter()
            .map(|(metric, v)| Reading {
                metric: metric.clone(),
                count: v.load(Ordering::Relaxed),
                sum: None,
            })
            .collect();
        out.extend(lock(&self.histograms).iter().map(|(metric, s)| Reading {
            metric: metric.clone(),
            count: s.count.load(Ordering::Relaxed),
            sum: Some(f64::from_bits(s.sum.load(Ordering::Relaxed))),
        }));
        out.retain(|r| r.count > 0);
        out.sort_by(|a, b| a.metric.cmp(&b.metric));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_sums_by_labelled_name() {
        let local = Local::default();
        metrics::with_local_recorder(&local, || {
            metrics::counter!("c_total", "op" => "get").increment(2);
            metrics::counter!("c_total", "op" => "get").increment(1);
            metrics::histogram!("h_seconds").record(0.5);
            metrics::histogram!("h_seconds").record(0.25);
        });
        let readings = local.readings();
        assert_eq!(
            readings,
            [
                Reading {
                    metric: r#"c_total{op="get"}"#.into(),
                    count: 3,
                    sum: None
                },
                Reading {
                    metric: "h_seconds".into(),
                    count: 2,
                    sum: Some(0.75)
                },
            ]
        );
    }
}

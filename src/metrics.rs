//! Metrics for Prometheus: `--metrics ADDR` on `mount` and `serve` serves
//! `GET /metrics` in the OpenMetrics text format (prometheus-client).
//!
//! Two kinds of figures:
//! - FUSE operations, counted and timed by the fuser adapter as they are served:
//!   `vaultfs_fuse_operations_total{op}`, `vaultfs_fuse_errors_total{op}` and the
//!   histogram `vaultfs_fuse_operation_seconds{op}`.
//! - Everything `.vaultfs/stats.json` shows, read from the same counters at each scrape
//!   (a [`Snapshot`] closure returning that JSON): so the two never disagree. Counters
//!   keep their `stats.json` names with `vaultfs_` before and `_total` after
//!   (`vaultfs_cache_hits_total`, `vaultfs_bytes_served_total`); levels are gauges
//!   (`vaultfs_cache_bytes`); the store's calls are `vaultfs_store_requests_total{op}`,
//!   its bytes `vaultfs_store_bytes_total{direction}`, its failed calls
//!   `vaultfs_store_errors_total`; tasks are `vaultfs_tasks{kind,status}`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::Value;

/// The label of a FUSE operation.
type OpLabel = [(&'static str, &'static str); 1];

fn latency_histogram() -> Histogram {
    // 20 µs to ~5 s.
    Histogram::new(exponential_buckets(20e-6, 3.5, 11))
}

/// Counts and times of the FUSE operations served.
#[derive(Debug)]
pub struct FuseMetrics {
    ops: Family<OpLabel, Counter>,
    errors: Family<OpLabel, Counter>,
    latency: Family<OpLabel, Histogram, fn() -> Histogram>,
}

impl FuseMetrics {
    /// Starts timing one operation; the guard records it when dropped.
    pub fn start(self: &Arc<Self>, op: &'static str) -> OpTimer {
        OpTimer {
            metrics: self.clone(),
            op,
            start: Instant::now(),
        }
    }

    /// Counts a failed operation.
    pub fn error(&self, op: &'static str) {
        self.errors.get_or_create(&[("op", op)]).inc();
    }
}

/// See [`FuseMetrics::start`].
#[derive(Debug)]
pub struct OpTimer {
    metrics: Arc<FuseMetrics>,
    op: &'static str,
    start: Instant,
}

impl OpTimer {
    /// Counts the operation as failed (it is counted and timed all the same).
    pub fn failed(&self) {
        self.metrics.error(self.op);
    }
}

impl Drop for OpTimer {
    fn drop(&mut self) {
        let l = [("op", self.op)];
        self.metrics.ops.get_or_create(&l).inc();
        self.metrics
            .latency
            .get_or_create(&l)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

/// What `stats.json` would show now.
pub type Snapshot = Box<dyn Fn() -> Value + Send + Sync>;

/// The registry of a process: FUSE figures, and the snapshot read at each scrape.
pub struct Metrics {
    registry: Registry,
    pub fuse: Arc<FuseMetrics>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Fields of `stats.json` that only grow: counters. Every other number is a gauge.
const COUNTERS: &[&str] = &[
    "cache_hits",
    "cache_misses",
    "cache_waits",
    "disk_hits",
    "chunk_fetches",
    "chunk_fetch_bytes",
    "chunk_loaded_bytes",
    "fetch_errors",
    "prefetches_queued",
    "prefetches_dropped",
    "failures_remembered",
    "evictions",
    "reads",
    "bytes_served",
];

/// The store's call counts of `stats.json`'s `backend` object that are requests.
const STORE_OPS: &[&str] = &[
    "get",
    "get_range",
    "put",
    "delete",
    "delete_many",
    "list",
    "head",
];

struct StatsCollector(Snapshot);

impl std::fmt::Debug for StatsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatsCollector")
    }
}

fn number(v: &Value) -> Option<f64> {
    v.as_f64()
}

impl Collector for StatsCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = (self.0)();
        let Some(fields) = stats.as_object() else {
            return Ok(());
        };
        for (k, v) in fields {
            let Some(n) = number(v) else { continue };
            let name = format!("vaultfs_{k}");
            let help = format!("stats.json field {k}");
            if COUNTERS.contains(&k.as_str()) {
                let c = ConstCounter::new(n as u64);
                c.encode(enc.encode_descriptor(&name, &help, None, c.metric_type())?)?;
            } else {
                let g = ConstGauge::new(n);
                g.encode(enc.encode_descriptor(&name, &help, None, g.metric_type())?)?;
            }
        }
        if let Some(b) = fields.get("backend").and_then(Value::as_object) {
            let c = ConstCounter::new(0u64);
            let mut m = enc.encode_descriptor(
                "vaultfs_store_requests",
                "calls of the object store, by operation",
                None,
                c.metric_type(),
            )?;
            for op in STORE_OPS {
                let n = b.get(*op).and_then(Value::as_u64).unwrap_or(0);
                let labels = [("op", *op)];
                ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
            }
            let mut m = enc.encode_descriptor(
                "vaultfs_store_bytes",
                "bytes read from and written to the object store",
                None,
                c.metric_type(),
            )?;
            for (dir, key) in [("read", "get_bytes"), ("write", "put_bytes")] {
                let n = b.get(key).and_then(Value::as_u64).unwrap_or(0);
                let labels = [("direction", dir)];
                ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
            }
            let n = b.get("errors").and_then(Value::as_u64).unwrap_or(0);
            let e = ConstCounter::new(n);
            e.encode(enc.encode_descriptor(
                "vaultfs_store_errors",
                "calls of the object store that failed",
                None,
                e.metric_type(),
            )?)?;
        }
        if let Some(tasks) = fields.get("tasks").and_then(Value::as_array) {
            let g = ConstGauge::new(0i64);
            let mut m = enc.encode_descriptor(
                "vaultfs_tasks",
                "tasks known to this process, by kind and status",
                None,
                g.metric_type(),
            )?;
            for t in tasks {
                let (Some(kind), Some(status), Some(n)) = (
                    t["kind"].as_str(),
                    t["status"].as_str(),
                    t["count"].as_i64(),
                ) else {
                    continue;
                };
                let labels = [("kind", kind.to_string()), ("status", status.to_string())];
                ConstGauge::new(n).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// `stats.json`'s `tasks`: how many tasks of each kind are in each status.
pub fn task_counts<'a>(tasks: impl Iterator<Item = (&'a str, &'a str)>) -> Value {
    let mut counts: std::collections::BTreeMap<(&str, &str), u64> = Default::default();
    for t in tasks {
        *counts.entry(t).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((kind, status), count)| serde_json::json!({"kind": kind, "status": status, "count": count}))
        .collect()
}

impl Metrics {
    /// A registry whose scrapes read `snapshot`.
    pub fn new(snapshot: Snapshot) -> Arc<Metrics> {
        let fuse = Arc::new(FuseMetrics {
            ops: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        });
        let mut registry = Registry::default();
        registry.register(
            "vaultfs_fuse_operations",
            "FUSE operations served, by operation",
            fuse.ops.clone(),
        );
        registry.register(
            "vaultfs_fuse_errors",
            "FUSE operations answered with an error, by operation",
            fuse.errors.clone(),
        );
        registry.register(
            "vaultfs_fuse_operation_seconds",
            "time to serve a FUSE operation, by operation",
            fuse.latency.clone(),
        );
        registry.register_collector(Box::new(StatsCollector(snapshot)));
        Arc::new(Metrics { registry, fuse })
    }

    /// The text of a scrape.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Serves `GET /metrics` on `addr` from a thread of its own, for the life of the
    /// process; fails at once when the address cannot be bound.
    pub fn serve(self: &Arc<Self>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr)?;
        let bound = listener.local_addr()?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    if let Err(e) = me.answer(conn) {
                        tracing::debug!("metrics request: {e}");
                    }
                }
            })?;
        Ok(bound)
    }

    fn answer(&self, conn: TcpStream) -> std::io::Result<()> {
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        conn.set_write_timeout(Some(Duration::from_secs(5)))?;
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut request = String::new();
        reader.read_line(&mut request)?;
        // The headers: read to the blank line, ignored.
        let mut line = String::new();
        while reader.read_line(&mut line)? > 2 {
            line.clear();
        }
        let mut parts = request.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = path.split('?').next().unwrap_or("");
        let (status, kind, body) = match (method, path) {
            ("GET", "/metrics") => (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.render(),
            ),
            ("GET", _) => ("404 Not Found", "text/plain", "try /metrics\n".to_string()),
            _ => (
                "405 Method Not Allowed",
                "text/plain",
                "GET /metrics\n".to_string(),
            ),
        };
        let mut conn = conn;
        write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        conn.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapes_show_fuse_figures_and_the_snapshot() {
        let m = Metrics::new(Box::new(|| {
            serde_json::json!({
                "cache_hits": 5,
                "cache_bytes": 1024,
                "backend": {"get": 2, "get_bytes": 300, "put_bytes": 7, "errors": 1},
                "tasks": [{"kind": "ingest", "status": "running", "count": 1}],
                "note": "text is left out",
            })
        }));
        drop(m.fuse.start("read"));
        m.fuse.error("lookup");
        let text = m.render();
        for want in [
            "vaultfs_cache_hits_total 5",
            "vaultfs_cache_bytes 1024",
            "vaultfs_store_requests_total{op=\"get\"} 2",
            "vaultfs_store_bytes_total{direction=\"read\"} 300",
            "vaultfs_store_errors_total 1",
            "vaultfs_tasks{kind=\"ingest\",status=\"running\"} 1",
            "vaultfs_fuse_operations_total{op=\"read\"} 1",
            "vaultfs_fuse_errors_total{op=\"lookup\"} 1",
            "vaultfs_fuse_operation_seconds_count{op=\"read\"} 1",
        ] {
            assert!(text.contains(want), "no {want:?} in\n{text}");
        }
        assert!(!text.contains("note"));
    }
}

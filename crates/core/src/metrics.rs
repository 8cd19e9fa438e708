//! Metrics: one Prometheus registry for the whole server, rendered as text
//! at `/metrics` on the HTTP listener. Modules register their families at
//! load time.

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

pub struct Metrics {
    registry: Mutex<Registry>,
    /// Bound client sessions right now.
    pub c2s_sessions: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("jackdaw");
        let c2s_sessions = Gauge::default();
        registry.register("c2s_sessions", "Bound client sessions", c2s_sessions.clone());
        Self {
            registry: Mutex::new(registry),
            c2s_sessions,
        }
    }
}

impl Metrics {
    /// Registers a metric under `jackdaw_<name>`.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .register(name, help, metric);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

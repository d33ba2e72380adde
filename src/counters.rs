//! How a component hands its counters and gauges to `/metrics` (Prometheus
//! names) and to the statsd metrics sink (statsd names): each component
//! implements [`Counted`] beside the fields it counts in, and the daemon
//! lists the components in one [`Counters`]. So a metric added to a
//! component reaches both outputs, and no reader needs to know a
//! component's fields.
//!
//! This module is at the bottom of the tree: it imports nothing of
//! lovebeat's, so a component can implement it without a loop back up.

use std::fmt;
use std::sync::Arc;

/// Whether a metric only rises or goes up and down (Prometheus' `TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only rises; its Prometheus name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Kind {
    /// The word of Prometheus' `# TYPE` line.
    pub fn word(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One metric: how it is named where, what it measures, and its kind.
#[derive(Debug)]
pub struct Metric {
    /// The Prometheus name (`/metrics`).
    pub prometheus: &'static str,
    /// The statsd name (`[metrics]`), for the counters 1.x and its users
    /// graph there; sent as the rise since the last flush.
    pub statsd: Option<&'static str>,
    /// What it measures (`# HELP`).
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
}

/// A metric's value now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A count, written as an integer.
    Count(u64),
    /// A measure in base units (seconds, bytes), written as a float.
    Level(f64),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Count(n) => write!(f, "{n}"),
            Value::Level(x) => write!(f, "{x}"),
        }
    }
}

/// One series of a metric, read now.
#[derive(Debug, Clone)]
pub struct Reading {
    /// Which metric.
    pub metric: &'static Metric,
    /// Its labels (`kind="mail"`), none for most.
    pub labels: Vec<(&'static str, String)>,
    /// Its value.
    pub value: Value,
}

impl Reading {
    /// An unlabelled series.
    pub fn of(metric: &'static Metric, value: Value) -> Reading {
        Reading {
            metric,
            labels: Vec::new(),
            value,
        }
    }
}

/// A component that counts something about itself. It appends its
/// readings, a metric's series next to each other.
pub trait Counted: Send + Sync {
    /// Appends every series this component keeps, with its value now.
    fn read(&self, out: &mut Vec<Reading>);
}

/// Every component that counts, in the order `/metrics` writes them;
/// a component that is not configured (the S3 backup, say) is not listed.
#[derive(Clone, Default)]
pub struct Counters {
    parts: Vec<Arc<dyn Counted>>,
}

impl Counters {
    /// The components, in order.
    pub fn new(parts: Vec<Arc<dyn Counted>>) -> Counters {
        Counters { parts }
    }

    /// Every series of every component, now.
    pub fn read(&self) -> Vec<Reading> {
        let mut out = Vec::with_capacity(64);
        for p in &self.parts {
            p.read(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static A: Metric = Metric {
        prometheus: "a_total",
        statsd: Some("a"),
        help: "A.",
        kind: Kind::Counter,
    };

    struct One;
    impl Counted for One {
        fn read(&self, out: &mut Vec<Reading>) {
            out.push(Reading::of(&A, Value::Count(3)));
        }
    }

    #[test]
    fn counters_read_their_parts_in_order() {
        let c = Counters::new(vec![Arc::new(One), Arc::new(One)]);
        let r = c.read();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].value, Value::Count(3));
        assert_eq!(Value::Level(0.25).to_string(), "0.25");
        assert_eq!(Value::Level(3.0).to_string(), "3");
    }
}

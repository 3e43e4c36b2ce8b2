//! `X-Meshaudit-Source` / `X-Meshaudit-Dropped` (SPEC §6, §7): which filters
//! send, so "no traffic" can be told from "a filter that loses events".
//! Each source is two metric series, so the value is validated
//! (`namespace/pod`, Kubernetes name rules), at most `max` sources are
//! tracked (the least recently seen is forgotten past that) and a source not
//! seen for `ttl` is forgotten; forgetting a source removes its series.

use crate::lru::LruMap;
use crate::metrics::Metrics;
use std::sync::Mutex;

/// A DNS-1123 label: 1–63 of `a-z0-9-`, starting and ending alphanumeric
/// (Kubernetes namespace names).
pub fn dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A DNS-1123 subdomain: at most 253 characters of dot-separated labels
/// (Kubernetes pod names).
pub fn dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(dns_label)
}

/// `namespace/pod` when the header holds a valid one.
pub fn parse_source(value: &str) -> Option<&str> {
    let value = value.trim();
    let (ns, pod) = value.split_once('/')?;
    (dns_label(ns) && dns_subdomain(pod)).then_some(value)
}

/// The sources tracked, by when each was last seen (POSIX seconds).
pub struct Sources {
    ttl_secs: i64,
    seen: Mutex<LruMap<String, i64>>,
}

impl Sources {
    pub fn new(max: usize, ttl_secs: i64) -> Self {
        Self {
            ttl_secs,
            seen: Mutex::new(LruMap::new(max)),
        }
    }

    /// Records a batch from `header` (ignored, and counted, when invalid:
    /// a bad monitoring header must not cost the batch its events).
    pub fn record(
        &self,
        metrics: &Metrics,
        header: Option<&str>,
        dropped: Option<&str>,
        now_secs: i64,
    ) {
        let Some(raw) = header else {
            return;
        };
        let Some(source) = parse_source(raw) else {
            metrics.sources_invalid.inc();
            return;
        };
        let mut forget = Vec::new();
        {
            let mut seen = match self.seen.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            while let Some((_, &last)) = seen.peek_oldest() {
                if now_secs.saturating_sub(last) <= self.ttl_secs {
                    break;
                }
                if let Some((old, _)) = seen.pop_oldest() {
                    forget.push(old);
                }
            }
            let (last, evicted) = seen.get_or_insert_with(&source.to_owned(), || now_secs);
            *last = now_secs;
            forget.extend(evicted.map(|(old, _)| old));
        }
        for old in forget {
            // Absent series are fine: a source may never have reported drops.
            let _ = metrics.source_last_seen.remove_label_values(&[&old]);
            let _ = metrics.source_dropped.remove_label_values(&[&old]);
        }
        metrics
            .source_last_seen
            .with_label_values(&[source])
            .set(now_secs as f64);
        if let Some(dropped) = dropped.and_then(|d| d.trim().parse::<u64>().ok()) {
            metrics
                .source_dropped
                .with_label_values(&[source])
                .set(dropped as f64);
        }
    }

    pub fn tracked(&self) -> usize {
        match self.seen.lock() {
            Ok(g) => g.len(),
            Err(p) => p.into_inner().len(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kubernetes_rules() {
        assert_eq!(parse_source(" ns/pod-1 "), Some("ns/pod-1"));
        assert_eq!(parse_source("a/b.c-d"), Some("a/b.c-d"));
        for bad in [
            "",
            "ns",
            "/pod",
            "ns/",
            "NS/pod",
            "ns/-pod",
            "ns/pod/x",
            "n_s/pod",
            "ns/p\u{e9}",
            "ns/a..b",
        ] {
            assert_eq!(parse_source(bad), None, "{bad:?}");
        }
        assert!(parse_source(&format!("{}/p", "a".repeat(64))).is_none());
        assert!(parse_source(&format!("{}/p", "a".repeat(63))).is_some());
    }

    fn series(m: &Metrics) -> usize {
        m.render()
            .lines()
            .filter(|l| l.starts_with("audit_source_"))
            .count()
    }

    #[test]
    fn bounded_and_expired_with_their_series() {
        let m = Metrics::new().unwrap();
        let s = Sources::new(3, 100);
        for i in 0..10 {
            s.record(&m, Some(&format!("ns/pod-{i}")), Some("1"), 1000);
        }
        assert_eq!(s.tracked(), 3);
        assert_eq!(series(&m), 6, "{}", m.render());
        s.record(&m, Some("Bad Value"), Some("1"), 1000);
        assert_eq!(s.tracked(), 3);
        assert_eq!(m.sources_invalid.get(), 1);
        // Past the TTL, the old ones go when the next batch arrives.
        s.record(&m, Some("ns/fresh"), None, 1201);
        assert_eq!(s.tracked(), 1);
        assert_eq!(series(&m), 1, "{}", m.render());
    }
}

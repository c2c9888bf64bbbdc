//! The one Prometheus exposition path of mcpctl's servers — the bridge (`bridge::stats`), the edge
//! (`edge::metrics`) and the docker-proxy's container exporter (`dockerproxy::exporter`):
//! prometheus-client's text format 0.0.4 encoder and its content type, the writers a scrape-time
//! [`Collector`](prometheus_client::collector::Collector) uses, and the process series read from
//! /proc.
//!
//! Each server owns its metrics (names, types and labels are docs/contracts.md's) and builds a
//! `Registry` per scrape — a few boxed handles — so series computed from state when scraped need
//! no bookkeeping between scrapes. Label values and HELP text are escaped by the library.
//!
//! Must not: hold metrics itself, or write exposition text by hand.

use std::fmt;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// `text/plain; version=0.0.4; charset=utf-8`.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The registry in the Prometheus text format (0.0.4).
pub fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::with_capacity(8 * 1024);
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?;
    Ok(out)
}

/// The answer to `GET /metrics`: the registry's text, or 500 when a collector failed.
pub fn response(registry: &Registry) -> Response {
    match encode(registry) {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed",
        )
            .into_response(),
    }
}

/// A collector's counter family, one sample per label set. `name` is the exposed name, `_total`
/// included (the encoder appends that suffix itself, so it is taken off here).
pub fn counters<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    debug_assert!(name.ends_with("_total"), "{name}: a counter ends in _total");
    let base = name.strip_suffix("_total").unwrap_or(name);
    let mut family = enc.encode_descriptor(base, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A collector's unlabelled counter (`name` with `_total`, as [`counters`]).
pub fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    counters(enc, name, help, [(NO_LABELS, v)])
}

/// A collector's gauge family, one sample per label set.
pub fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A collector's unlabelled gauge.
pub fn gauge<V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: V,
) -> fmt::Result {
    gauges(enc, name, help, [(NO_LABELS, v)])
}

/// The empty label set (a sample written without braces).
const NO_LABELS: [(&str, &str); 0] = [];

/// Resident set size of this process in bytes: `VmRSS` of /proc/self/status, which the kernel
/// gives in kB — no assumption about the page size.
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    vm_rss_bytes(&status)
}

fn vm_rss_bytes(status: &str) -> Option<u64> {
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// Open file descriptors of this process (entries of /proc/self/fd).
pub fn open_fds() -> Option<u64> {
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64)
}

/// A strict reader of the text format for tests: what Prometheus (and promtool) would refuse is
/// an error here.
#[cfg(test)]
pub(crate) mod parse {
    use std::collections::BTreeMap;

    #[derive(Debug, Default)]
    pub struct Family {
        pub kind: String,
        pub help: Option<String>,
        pub samples: Vec<Sample>,
    }

    #[derive(Debug)]
    pub struct Sample {
        pub name: String,
        /// Unescaped, in exposition order.
        pub labels: Labels,
        pub value: f64,
    }

    impl Sample {
        pub fn label(&self, key: &str) -> Option<&str> {
            self.labels
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        }
    }

    fn valid_name(n: &str, colon: bool) -> bool {
        let mut cs = n.chars();
        matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
            && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
    }

    fn value(v: &str) -> Result<f64, String> {
        match v {
            "+Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            "NaN" => Ok(f64::NAN),
            _ => v.parse().map_err(|_| format!("bad value {v:?}")),
        }
    }

    type Labels = Vec<(String, String)>;

    /// `{k="v",...}` after a sample's name; returns the labels and the rest of the line.
    fn labels(s: &str) -> Result<(Labels, &str), String> {
        let mut out = Labels::new();
        let Some(mut rest) = s.strip_prefix('{') else {
            return Ok((out, s));
        };
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                return Ok((out, r));
            }
            let (key, r) = rest.split_once("=\"").ok_or("label without =\"")?;
            if !valid_name(key, false) || out.iter().any(|(k, _)| k == key) {
                return Err(format!("bad or repeated label name {key:?}"));
            }
            let mut v = String::new();
            let mut chars = r.char_indices();
            let end = loop {
                match chars.next().ok_or("unterminated label value")? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                        '\\' => v.push('\\'),
                        '"' => v.push('"'),
                        'n' => v.push('\n'),
                        c => return Err(format!("bad escape \\{c}")),
                    },
                    (_, '\n') => return Err("raw newline in a label value".into()),
                    (_, c) => v.push(c),
                }
            };
            out.push((key.to_string(), v));
            rest = &r[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }

    /// Families by name (the name on their `# TYPE` line).
    pub fn parse(text: &str) -> Result<BTreeMap<String, Family>, String> {
        let mut families: BTreeMap<String, Family> = BTreeMap::new();
        let mut current: Option<String> = None;
        if !text.is_empty() && !text.ends_with('\n') {
            return Err("no final newline".into());
        }
        for line in text.lines() {
            let bad = |why: &str| format!("{why}: {line:?}");
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').ok_or_else(|| bad("HELP"))?;
                if help.replace("\\\\", "").replace("\\n", "").contains('\\') {
                    return Err(bad("bad escape in HELP"));
                }
                let f = families.entry(name.to_string()).or_default();
                if f.help.replace(help.to_string()).is_some() {
                    return Err(bad("second HELP"));
                }
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or_else(|| bad("TYPE"))?;
                if !valid_name(name, true)
                    || !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
                {
                    return Err(bad("TYPE"));
                }
                let f = families.entry(name.to_string()).or_default();
                if !f.kind.is_empty() || !f.samples.is_empty() {
                    return Err(bad("TYPE after samples or repeated"));
                }
                f.kind = kind.to_string();
                current = Some(name.to_string());
            } else if line.starts_with('#') {
                continue;
            } else {
                let end = line.find(['{', ' ']).ok_or_else(|| bad("sample"))?;
                let name = &line[..end];
                let (labels, rest) = labels(&line[end..]).map_err(|e| bad(&e))?;
                let v = rest.strip_prefix(' ').ok_or_else(|| bad("no value"))?;
                let v = value(v.split(' ').next().unwrap_or(v)).map_err(|e| bad(&e))?;
                let fam = current
                    .as_deref()
                    .ok_or_else(|| bad("sample before TYPE"))?;
                let f = families.get_mut(fam).expect("typed");
                let ok = match f.kind.as_str() {
                    "histogram" => {
                        (name == format!("{fam}_bucket") && labels.iter().any(|(k, _)| k == "le"))
                            || name == format!("{fam}_sum")
                            || name == format!("{fam}_count")
                    }
                    "counter" => name == fam && fam.ends_with("_total"),
                    _ => name == fam,
                };
                if !valid_name(name, true) || !ok {
                    return Err(bad(&format!("sample outside its family {fam}")));
                }
                f.samples.push(Sample {
                    name: name.to_string(),
                    labels,
                    value: v,
                });
            }
        }
        Ok(families)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_in_kilobytes_from_status() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nRssAnon:\t 1000 kB\n";
        assert_eq!(vm_rss_bytes(status), Some(1234 * 1024));
        assert_eq!(vm_rss_bytes("Name:\tx\n"), None);
        assert!(resident_memory_bytes().is_some_and(|b| b > 0));
        assert!(open_fds().is_some_and(|n| n >= 3));
    }

    #[test]
    fn the_test_reader_refuses_what_prometheus_refuses() {
        for bad in [
            "x 1\n",
            "# TYPE x gauge\ny 1\n",
            "# TYPE x_total counter\nx_total{a=\"b\\q\"} 1\n",
            "# TYPE x gauge\nx{a=\"b} 1\n",
            "# TYPE x gauge\nx{a=\"1\",a=\"2\"} 1\n",
            "# TYPE x gauge\nx one\n",
            "# TYPE x gauge\nx 1",
        ] {
            assert!(parse::parse(bad).is_err(), "{bad:?}");
        }
        let f = parse::parse(
            "# HELP x_total H\\\\.\n# TYPE x_total counter\nx_total{a=\"q\\\"\\n\\\\\"} 2\n",
        )
        .unwrap();
        assert_eq!(f["x_total"].samples[0].label("a"), Some("q\"\n\\"));
        assert_eq!(f["x_total"].samples[0].value, 2.0);
    }
}

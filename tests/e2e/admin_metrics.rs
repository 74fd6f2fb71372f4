//! The admin endpoint's `/metrics` as the tests read it: a strict parser of the Prometheus text
//! format (0.0.4), lookups of the login and relay counters, and a test that the parser refuses
//! malformed lines. The endpoint tests themselves are `admin.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};

/// A parsed exposition: samples by name and label set, and each family's type.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    pub(crate) types: HashMap<String, String>,
    pub(crate) samples: HashMap<(String, BTreeMap<String, String>), f64>,
}

impl Exposition {
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples.get(&(name.to_string(), labels)).copied()
    }
}

fn metric_name_ok(n: &str) -> bool {
    let mut bytes = n.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// Parses the Prometheus text format (0.0.4) strictly: `# HELP name text`, `# TYPE name type`
/// once per family before its samples, `name{label="value",...} value` with escapes in values;
/// panics with the line on anything else.
pub(crate) fn parse_metrics(text: &str) -> Exposition {
    let mut x = Exposition::default();
    let mut helped = HashSet::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.splitn(3, ' ');
            let (what, name) = (words.next(), words.next().unwrap_or_default());
            match what {
                Some("HELP") => {
                    assert!(metric_name_ok(name), "bad HELP: {line}");
                    assert!(helped.insert(name.to_string()), "HELP twice: {line}");
                }
                Some("TYPE") => {
                    assert!(metric_name_ok(name), "bad TYPE: {line}");
                    let t = words.next().unwrap_or_default();
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "bad type: {line}"
                    );
                    let before = x.types.insert(name.to_string(), t.to_string());
                    assert!(before.is_none(), "TYPE twice: {line}");
                }
                _ => {}
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value: {line}"));
        let name = &line[..name_end];
        assert!(metric_name_ok(name), "bad metric name: {line}");
        assert!(
            x.types.contains_key(name) || histogram_part(&x, name),
            "sample before its TYPE: {line}"
        );
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(after) = rest.strip_prefix('{') {
            let mut chars = after.char_indices().peekable();
            let mut key = String::new();
            loop {
                let (i, c) = chars
                    .next()
                    .unwrap_or_else(|| panic!("open labels: {line}"));
                match c {
                    '}' if key.is_empty() => {
                        rest = &after[i + 1..];
                        break;
                    }
                    ',' if key.is_empty() => {}
                    '=' => {
                        assert_eq!(chars.next().map(|p| p.1), Some('"'), "{line}");
                        let mut value = String::new();
                        loop {
                            match chars.next().map(|p| p.1) {
                                Some('\\') => match chars.next().map(|p| p.1) {
                                    Some('n') => value.push('\n'),
                                    Some(e @ ('\\' | '"')) => value.push(e),
                                    other => panic!("bad escape {other:?}: {line}"),
                                },
                                Some('"') => break,
                                Some(c) => value.push(c),
                                None => panic!("open label value: {line}"),
                            }
                        }
                        assert!(metric_name_ok(&key), "bad label name {key:?}: {line}");
                        let k = std::mem::take(&mut key);
                        assert!(labels.insert(k, value).is_none(), "label twice: {line}");
                    }
                    c => key.push(c),
                }
            }
        }
        let mut fields = rest.split_ascii_whitespace();
        let value = fields.next().unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .unwrap_or_else(|_| panic!("bad timestamp: {line}"));
        }
        assert!(fields.next().is_none(), "trailing text: {line}");
        let before = x.samples.insert((name.to_string(), labels), value);
        assert!(before.is_none(), "duplicate sample: {line}");
    }
    x
}

/// Whether `name` is a series of a histogram family: `<family>_bucket`, `_sum` or `_count`.
fn histogram_part(x: &Exposition, name: &str) -> bool {
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|family| x.types.get(family).is_some_and(|t| t == "histogram"))
    })
}

pub(crate) fn auths(
    x: &Exposition,
    protocol: &str,
    mechanism: &str,
    class: &str,
    result: &str,
) -> f64 {
    let labels = [
        ("protocol", protocol),
        ("mechanism", mechanism),
        ("class", class),
        ("result", result),
    ];
    x.value("mailgate_authentications_total", &labels)
        .unwrap_or(0.0)
}

pub(crate) fn relays(x: &Exposition, kind: &str, result: &str) -> f64 {
    x.value(
        "mailgate_relays_total",
        &[("kind", kind), ("result", result)],
    )
    .unwrap_or(0.0)
}

#[test]
fn the_metrics_parser_refuses_malformed_lines() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{k=\"v\\\"x\"} 3\n";
    let x = parse_metrics(good);
    assert_eq!(x.value("a_total", &[("k", "v\"x")]), Some(3.0));
    let histogram = "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1.5\nh_count 2\n";
    assert_eq!(parse_metrics(histogram).value("h_count", &[]), Some(2.0));
    for bad in [
        "a_total 1\n",
        "# TYPE a counter\na{k=\"v\"}\n",
        "# TYPE a counter\na{k=v} 1\n",
        "# TYPE a counter\na 1\na 2\n",
        "# TYPE a gauge\na one\n",
        "# TYPE a wibble\n",
        "# TYPE a counter\na_bucket{le=\"1\"} 1\n",
    ] {
        let r = std::panic::catch_unwind(|| parse_metrics(bad));
        assert!(r.is_err(), "accepted {bad:?}");
    }
}

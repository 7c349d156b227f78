//! Reading the agent's `/metrics`, `/healthz` and `/readyz` the way a scraper does: plain
//! HTTP/1.1 over TCP, and a parser for the Prometheus text format (one sample per line:
//! `name{label="value",…} number`), so tests compare samples, never a whole blob.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

/// `GET path` on `addr`: (status, body). Panics when nothing answers.
pub fn get(addr: &str, path: &str) -> (u16, String) {
    try_get(addr, path).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// `GET path` on `addr`: (status, body), or the connection error.
pub fn try_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: hb\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {head:?}"));
    Ok((status, body.to_owned()))
}

/// One scrape: every sample by name and label set.
#[derive(Debug, Default)]
pub struct Scrape(BTreeMap<(String, BTreeMap<String, String>), f64>);

impl Scrape {
    /// Scrapes `addr`'s `/metrics` (which must answer 200).
    pub fn fetch(addr: &str) -> Self {
        let (status, body) = get(addr, "/metrics");
        assert_eq!(status, 200, "/metrics: {body}");
        Self::parse(&body)
    }

    /// Parses the text exposition format (comments and `# EOF` skipped).
    pub fn parse(text: &str) -> Self {
        let mut out = BTreeMap::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("sample without value: {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (
                    name,
                    parse_labels(
                        rest.strip_suffix('}')
                            .unwrap_or_else(|| panic!("unclosed label set in {line:?}")),
                    ),
                ),
                None => (series, BTreeMap::new()),
            };
            out.insert((name.to_owned(), labels), value);
        }
        Self(out)
    }

    /// The sample `name` whose labels include `labels` (0 when there is none: a counter
    /// not yet created has counted nothing). Panics when several match.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self
            .0
            .iter()
            .filter(|((n, l), _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| *v)
            .collect();
        assert!(
            found.len() <= 1,
            "{name}{labels:?} matches {} samples",
            found.len()
        );
        found.first().copied().unwrap_or(0.0)
    }

    /// Every sample's name and labels (to check what labels carry).
    pub fn series(&self) -> impl Iterator<Item = (&String, &BTreeMap<String, String>)> {
        self.0.keys().map(|(n, l)| (n, l))
    }
}

/// `a="x",b="y"` (values may hold escaped quotes and commas).
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label key");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        value.push(match e {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_owned(), value);
        rest = after[end..].trim_start_matches(',');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_with_labels_and_skips_comments() {
        let s = Scrape::parse(
            "# HELP a_total x\n# TYPE a counter\na_total{p=\"x\\\"y\",q=\"1,2\"} 3\nb 4.5\n# EOF\n",
        );
        assert_eq!(s.get("a_total", &[("p", "x\"y"), ("q", "1,2")]), 3.0);
        assert_eq!(s.get("b", &[]), 4.5);
        assert_eq!(s.get("a_total", &[("p", "z")]), 0.0);
    }
}

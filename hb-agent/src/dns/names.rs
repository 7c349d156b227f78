//! Which names a policy may resolve.
//!
//! A pattern is an exact name (`pypi.org`) or a wildcard (`*.pythonhosted.org`), which
//! matches one *or more* labels in front of the suffix (`files.pythonhosted.org`,
//! `a.b.pythonhosted.org`) but not the suffix itself. Matching ignores ASCII case and a
//! trailing dot. Internationalised names are written in their punycode (`xn--…`) form,
//! as they travel in DNS; a non-ASCII pattern is a config error.
//!
//! A queried name is judged only if it is a hostname ([`hostname`]): a label that holds
//! a dot, a NUL or any other byte outside letters, digits, `-` and `_` has no dotted
//! text that means the same name (`["evil.allowed", "test"]` prints as
//! `evil\.allowed.test`, which a suffix match would take for a name under
//! `allowed.test`), so it is refused before any pattern is asked.

/// One `allow_domains` entry, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    /// The suffix without the `*.`, e.g. `pythonhosted.org`.
    Wildcard(String),
}

impl Pattern {
    /// Parses an `allow_domains` entry; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let (wild, name) = match t.strip_prefix("*.") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, t.clone()),
        };
        if name.is_empty() {
            return Err(format!("\"{text}\" names no domain"));
        }
        if !name.is_ascii() {
            return Err(format!(
                "\"{text}\" is not ASCII: write internationalised names in punycode (xn--…)"
            ));
        }
        for label in name.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(format!(
                    "\"{text}\" is not a domain name (labels of letters, digits, '-' and '_'; \
                     '*.' only in front)"
                ));
            }
        }
        Ok(if wild {
            Pattern::Wildcard(name)
        } else {
            Pattern::Exact(name)
        })
    }

    /// Whether `name` (any case, with or without the trailing dot) matches.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.');
        match self {
            Pattern::Exact(e) => name.eq_ignore_ascii_case(e),
            Pattern::Wildcard(suffix) => {
                name.len() > suffix.len() + 1
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
                    && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

/// The name of `labels` (a name's labels as they came off the wire), lower-case and
/// dotted without the trailing dot, if every label is a hostname label: 1 to 63 bytes of
/// letters, digits, `-` and `_` (the bytes `allow_domains` patterns are made of, and
/// which no presentation form escapes). `None` for any other name.
pub fn hostname<'a>(labels: impl IntoIterator<Item = &'a [u8]>) -> Option<String> {
    let mut name = String::new();
    for label in labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return None;
        }
        if !name.is_empty() {
            name.push('.');
        }
        name.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
    }
    Some(name)
}

/// Whether any pattern matches `name`.
pub fn allowed(patterns: &[Pattern], name: &str) -> bool {
    patterns.iter().any(|p| p.matches(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).expect("pattern")
    }

    #[test]
    fn exact_names_match_in_any_case_with_or_without_the_dot() {
        assert!(p("pypi.org").matches("pypi.org"));
        assert!(p("pypi.org").matches("PyPI.Org."));
        assert!(p("PYPI.org.").matches("pypi.org"));
        assert!(!p("pypi.org").matches("evil-pypi.org"));
        assert!(!p("pypi.org").matches("files.pypi.org"));
        assert!(!p("pypi.org").matches("pypi.org.evil.com"));
    }

    #[test]
    fn wildcards_match_one_or_more_labels_but_not_the_suffix() {
        let w = p("*.pythonhosted.org");
        assert!(w.matches("files.pythonhosted.org"));
        assert!(w.matches("a.b.pythonhosted.org."));
        assert!(w.matches("FILES.PythonHosted.org"));
        assert!(!w.matches("pythonhosted.org"));
        assert!(!w.matches("evilpythonhosted.org"));
        assert!(!w.matches("pythonhosted.org.evil.com"));
    }

    #[test]
    fn only_hostname_labels_make_a_name() {
        let name = |labels: &[&[u8]]| hostname(labels.iter().copied());
        assert_eq!(
            name(&[b"Files", b"PythonHosted", b"org"]).as_deref(),
            Some("files.pythonhosted.org")
        );
        assert_eq!(
            name(&[b"_dmarc", b"x-y", b"test"]).as_deref(),
            Some("_dmarc.x-y.test")
        );
        for bad in [
            &[&b"evil.test.allowed"[..], b"test"][..],
            &[b"evil\0", b"allowed", b"test"],
            &[b"a b", b"test"],
            &[b"caf\xc3\xa9", b"test"],
            &[b"*", b"allowed", b"test"],
            &[b"", b"test"],
        ] {
            assert_eq!(name(bad), None, "{bad:?}");
        }
        let long = [b'a'; 64];
        assert_eq!(name(&[&long[..], b"test"]), None);
    }

    #[test]
    fn bad_patterns_say_why() {
        assert!(
            Pattern::parse("bücher.example")
                .expect_err("not ASCII")
                .contains("punycode")
        );
        assert!(Pattern::parse("a..b").is_err());
        assert!(Pattern::parse("*").is_err());
        assert!(Pattern::parse("a.*.b").is_err());
        assert_eq!(
            p("xn--bcher-kva.example"),
            Pattern::Exact("xn--bcher-kva.example".into())
        );
    }
}

//! Which names a policy may resolve.
//!
//! A pattern is an exact name (`pypi.org`) or a wildcard (`*.pythonhosted.org`), which
//! matches one *or more* labels in front of the suffix (`files.pythonhosted.org`,
//! `a.b.pythonhosted.org`) but not the suffix itself. Matching ignores ASCII case and a
//! trailing dot. Internationalised names are written in their punycode (`xn--…`) form,
//! as they travel in DNS; a non-ASCII pattern is a config error.

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

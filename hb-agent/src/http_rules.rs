//! HTTP rules that both the egress guard (a sandbox's own plain-HTTP requests) and the
//! broker (the requests it sends for a sandbox) apply, kept in one place so the two
//! judge a request alike.
//!
//! Owns: [`takes_no_body`]. Must never: diverge between the guard and the broker.

/// Methods that have no use for a body (GET, HEAD, OPTIONS, TRACE, DELETE): a server
/// may answer one without reading its body and read that body as the next request on
/// the connection, one nobody judged. The guard refuses such a body; the broker sends
/// none. Compared without case: methods are case-sensitive tokens, but a lenient server
/// may read `get` as GET.
pub fn takes_no_body(method: &str) -> bool {
    ["GET", "HEAD", "OPTIONS", "TRACE", "DELETE"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodiless_methods_are_the_five_in_any_case() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "DELETE", "get", "Delete"] {
            assert!(takes_no_body(m), "{m}");
        }
        for m in ["POST", "PUT", "PATCH", "post", "CONNECT", "GETS"] {
            assert!(!takes_no_body(m), "{m}");
        }
    }
}

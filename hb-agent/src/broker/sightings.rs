//! Where the `canary` and `reflection` detectors look: what a caller sends through the
//! broker, and the answer to a call that carried a credential.
//!
//! - [`outgoing`]: a request's URL, header names and values and body, searched (by the
//!   scrubber, so in every encoding it knows: raw, base64, percent, hex, JSON escapes,
//!   UTF-16) for every remembered decoy handle and for the values of the credentials of
//!   the accounts the caller holds handles for (the values it may have been shown by
//!   mistake; a sandbox is never searched for credentials it has no handle for, so this
//!   tells it nothing about other tenants' values).
//! - [`reflected`]: whether the credential a call carried comes back whole (in any of
//!   those encodings) in that call's answer. Runs of it (a key's prefix or last four
//!   characters, which dashboards and some APIs echo) are redacted from the answer but
//!   are not a reflection.
//!
//! Only live values are looked for (the token families are not run), all of them in
//! one scan that names the credential or decoy of each hit.
//! Must never: return or log the bytes it found.

use std::collections::HashSet;

use http::{HeaderName, HeaderValue};

use super::{handles::Owner, state::Shared};
use crate::scrub::{LiveId, Scrubber};

/// What a request carried that it should not have.
#[derive(Default)]
pub struct Outgoing {
    /// Decoy handles, as planted.
    pub canaries: Vec<String>,
    /// Credentials (id, integration, account) whose value the request carries.
    pub credentials: Vec<(String, String, String)>,
}

/// Searches what a caller sends (see the module header). A scan of the whole request:
/// call it off the async workers when the request is large.
pub fn outgoing(
    shared: &Shared,
    owner: Owner,
    url: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: &[u8],
) -> Outgoing {
    // The decoys' ids only (a request rarely carries one: their handles are looked up
    // below just then).
    let decoys: HashSet<LiveId> = shared
        .canaries
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .keys()
        .copied()
        .collect();
    let credentials = own_credentials(shared, owner);
    if credentials.is_empty() && decoys.is_empty() {
        return Outgoing::default();
    }
    let buf = request_text(url, headers, body);
    let (seen, credentials) = search(&shared.scrubber, &buf, &decoys, credentials);
    let canaries = if seen.is_empty() {
        Vec::new()
    } else {
        let handles = shared
            .canaries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.iter()
            .filter_map(|id| handles.get(id).cloned())
            .collect()
    };
    Outgoing {
        canaries,
        credentials,
    }
}

/// What a request sends, as one text: URL, header lines, a blank line, the body.
fn request_text(url: &str, headers: &[(HeaderName, HeaderValue)], body: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(url.len() + body.len() + 256);
    buf.extend_from_slice(url.as_bytes());
    buf.push(b'\n');
    for (name, value) in headers {
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.push(b'\n');
    }
    buf.push(b'\n');
    buf.extend_from_slice(body);
    buf
}

/// One scan of `buf` for every decoy and credential (in every encoding the scrubber
/// knows): the decoys found (by scrubber id, in id order) and the credentials found
/// (credential id, integration, account). One scan whatever their number: the
/// scrubber's automata name the value each match belongs to, so an encoded decoy needs
/// no second look to say whose it is.
fn search(
    scrubber: &Scrubber,
    buf: &[u8],
    decoys: &HashSet<LiveId>,
    credentials: Vec<(LiveId, String, String, String)>,
) -> (Vec<LiveId>, Vec<(String, String, String)>) {
    let mut wanted = decoys.clone();
    wanted.extend(credentials.iter().map(|(live, ..)| *live));
    let found = scrubber.matching_visible(buf, &wanted);
    if found.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let mut seen: Vec<LiveId> = found
        .iter()
        .filter(|id| decoys.contains(id))
        .copied()
        .collect();
    seen.sort_unstable();
    let credentials = credentials
        .into_iter()
        .filter(|(live, ..)| found.contains(live))
        .map(|(_, id, i, a)| (id, i, a))
        .collect();
    (seen, credentials)
}

/// The credentials (scrubber id, credential id, integration, account) of the accounts
/// `owner` holds handles for: every value a call of theirs was resolved to.
fn own_credentials(shared: &Shared, owner: Owner) -> Vec<(LiveId, String, String, String)> {
    let mut accounts: Vec<(String, String)> = shared
        .handles
        .listing(owner)
        .iter()
        .map(|l| (l.entry.integration.clone(), l.entry.account.clone()))
        .collect();
    accounts.sort();
    accounts.dedup();
    let protected = shared
        .protected
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    accounts
        .iter()
        .flat_map(|(i, a)| {
            shared
                .accounts
                .seen(i, a)
                .into_iter()
                .map(move |id| (id, i.clone(), a.clone()))
        })
        .filter_map(|(id, i, a)| protected.get(&id).map(|l| (*l, id, i, a)))
        .collect()
}

/// Whether the credential `credential_id` comes back whole in `body` or `headers`.
pub fn reflected(
    shared: &Shared,
    credential_id: &str,
    body: &[u8],
    headers: &[(String, String)],
) -> bool {
    let Some(live) = shared
        .protected
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(credential_id)
        .copied()
    else {
        return false;
    };
    // One view for the body and every header (building it walks every live value).
    let value = shared
        .scrubber
        .visible_values(&std::iter::once(live).collect());
    value.contains(body) || headers.iter().any(|(_, v)| value.contains(v.as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use base64::Engine as _;

    use super::*;
    use crate::secret::Secret;

    #[test]
    fn an_encoded_decoy_among_4096_is_attributed_in_one_scan() {
        let scrubber = Scrubber::new();
        let handles: Vec<String> = (0..4096)
            .map(|i| format!("hb_cred_{i:08}decoyDECOYdecoyDECOYdeco"))
            .collect();
        let secrets: Vec<Secret> = handles
            .iter()
            .map(|h| Secret::new(h.as_bytes().to_vec()))
            .collect();
        let ids = scrubber
            .register_many(secrets.iter().map(|s| ("hb_handle", s)))
            .expect("registered");
        let key = Secret::new(b"sk-own-credential-0123456789abcdef".to_vec());
        let own = scrubber.register("live_secret", &key).expect("registered");
        let decoys: HashSet<LiveId> = ids.iter().copied().collect();
        let credentials = vec![(own, "cred-1".to_owned(), "svc".to_owned(), "bot".to_owned())];
        // Decoy 3000 base64-encoded in a large body (no raw `hb_cred_` text names it),
        // and the caller's own credential percent-free but raw in a header.
        let encoded = base64::engine::general_purpose::STANDARD.encode(&handles[3000]);
        let mut body = vec![b'A'; 64 << 10];
        body.extend_from_slice(format!(" {encoded} ").as_bytes());
        let headers = [(
            HeaderName::from_static("x-key"),
            HeaderValue::from_static("sk-own-credential-0123456789abcdef"),
        )];
        let buf = request_text("https://api.test/x", &headers, &body);
        let before = scrubber.visible_scans.load(Ordering::Relaxed);
        let (seen, found) = search(&scrubber, &buf, &decoys, credentials.clone());
        assert_eq!(seen, vec![ids[3000]], "the encoded decoy, named");
        assert_eq!(found, vec![("cred-1".into(), "svc".into(), "bot".into())]);
        assert_eq!(
            scrubber.visible_scans.load(Ordering::Relaxed) - before,
            1,
            "one scan for 4,096 decoys and the credential"
        );
        // Nothing carried: nothing found, still one scan.
        let clean = request_text("https://api.test/x", &[], &body[..64 << 10]);
        let before = scrubber.visible_scans.load(Ordering::Relaxed);
        assert_eq!(
            search(&scrubber, &clean, &decoys, credentials),
            (vec![], vec![])
        );
        assert_eq!(scrubber.visible_scans.load(Ordering::Relaxed) - before, 1);
    }
}

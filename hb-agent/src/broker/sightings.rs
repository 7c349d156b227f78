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
//! Only live values are looked for (the token families are not run), one candidate
//! at a time, so a hit names its credential or decoy.
//! Must never: return or log the bytes it found.

use std::collections::HashSet;

use http::{HeaderName, HeaderValue};

use super::{handles::Owner, state::Shared};
use crate::scrub::LiveId;

/// What a request carried that it should not have.
#[derive(Default)]
pub struct Outgoing {
    /// Decoy handles, as planted.
    pub canaries: Vec<String>,
    /// Credentials (id, integration, account) whose value the request carries.
    pub credentials: Vec<(String, String, String)>,
}

/// Searches what a caller sends (see the module header).
pub fn outgoing(
    shared: &Shared,
    owner: Owner,
    url: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: &[u8],
) -> Outgoing {
    // The decoys' ids only (a request rarely carries one: their handles are copied
    // below just then).
    let all: HashSet<LiveId> = shared
        .canaries
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .keys()
        .copied()
        .collect();
    let credentials = own_credentials(shared, owner);
    if credentials.is_empty() && all.is_empty() {
        return Outgoing::default();
    }
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
    let scrubber = &shared.scrubber;
    let one = |id: LiveId| -> HashSet<LiveId> { std::iter::once(id).collect() };
    let mut out = Outgoing::default();
    if scrubber.contains_visible(&buf, &all) {
        // As planted (the common case): every `hb_cred_` string looked up; else each
        // decoy tried alone (an encoded one), at most MAX_ATTRIBUTION of them.
        let text = String::from_utf8_lossy(&buf);
        for (at, _) in text.match_indices(super::handles::PREFIX) {
            let candidate: String = text[at..]
                .chars()
                .take(super::handles::PREFIX.len() + 32)
                .collect();
            if shared.handles.decoy(&candidate).is_some() && !out.canaries.contains(&candidate) {
                out.canaries.push(candidate);
            }
        }
        if out.canaries.is_empty() {
            let canaries = shared
                .canaries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            out.canaries.extend(
                canaries
                    .iter()
                    .take(MAX_ATTRIBUTION)
                    .filter(|(id, _)| scrubber.contains_visible(&buf, &one(**id)))
                    .map(|(_, h)| h.clone()),
            );
        }
    }
    for (live, id, i, a) in credentials {
        if scrubber.contains_visible(&buf, &one(live)) {
            out.credentials.push((id, i, a));
        }
    }
    out
}

/// Decoys tried one by one to tell which an encoded sighting was.
const MAX_ATTRIBUTION: usize = 4096;

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

//! Where the `canary` and `reflection` detectors look: what a caller sends through the
//! broker, and the answers to its calls.
//!
//! - [`outgoing`]: a request's URL, header names and values and body, searched (by the
//!   scrubber, so in every encoding it knows: raw, base64, percent, hex, JSON escapes,
//!   UTF-16, and spread out with NUL bytes) for every live value on the node, in one
//!   scan: the remembered decoy handles and the values of the credentials of the
//!   accounts the caller holds handles for (the values it may have been shown by
//!   mistake) are named, and every value found is kept for the answer's view (a value
//!   the caller sent is not redacted from the answer unless it is its own, so an echo
//!   does not tell it which of its guesses is live; see `text_gate::View::answer`).
//! - [`reflected`]: whether the credential a call carried comes back whole (in any of
//!   those encodings) in that call's answer. Runs of it (a key's prefix or last four
//!   characters, which dashboards and some APIs echo) are redacted from the answer but
//!   are not a reflection.
//! - [`foreign`]: the credentials of accounts the caller holds no handle for that an
//!   answer holds and the caller did not send (a provider's key listing): redacted from
//!   the answer, and each a `reflection` of its own account.
//!
//! Only live values are looked for (the token families are not run).
//! Must never: return or log the bytes it found.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

use http::{HeaderName, HeaderValue};

use super::{
    accounts::Current,
    credentials::with_vault,
    handles::{Entry, Owner},
    state::Shared,
};
use crate::scrub::{LiveId, Scrubber, Sees};

/// What a request carried that it should not have.
#[derive(Default)]
pub struct Outgoing {
    /// Decoy handles, as planted.
    pub canaries: Vec<String>,
    /// Credentials (id, integration, account) of the caller's own accounts whose value
    /// the request carries.
    pub credentials: Vec<(String, String, String)>,
    /// Every live value the request carries (scrubber ids), whoever's it is.
    pub values: HashSet<LiveId>,
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
    let buf = request_text(url, headers, body);
    let Found {
        decoys: seen,
        credentials,
        values,
    } = search(&shared.scrubber, &buf, &decoys, credentials);
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
        values,
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

/// One scan of `buf` for every live value (in every encoding the scrubber knows): the
/// decoys found (by scrubber id, in id order), the caller's credentials found
/// (credential id, integration, account), and every value found. One scan whatever
/// their number: the scrubber's automata name the value each match belongs to, so an
/// encoded decoy needs no second look to say whose it is. (A second, only when the
/// request holds a value that is neither: the longest value at a place is the one
/// named, and a decoy or credential that is a prefix of another value must not hide.)
fn search(
    scrubber: &Scrubber,
    buf: &[u8],
    decoys: &HashSet<LiveId>,
    credentials: Vec<(LiveId, String, String, String)>,
) -> Found {
    let mut wanted = decoys.clone();
    wanted.extend(credentials.iter().map(|(live, ..)| *live));
    let values = scrubber.matching(buf, Sees::All);
    if values.is_empty() {
        return Found::default();
    }
    let found = if values.is_subset(&wanted) {
        values.clone()
    } else {
        scrubber.matching_visible(buf, &wanted)
    };
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
    Found {
        decoys: seen,
        credentials,
        values,
    }
}

/// What [`search`] found.
#[derive(Debug, Default, PartialEq)]
struct Found {
    /// Decoys, by scrubber id, in id order.
    decoys: Vec<LiveId>,
    /// The caller's own credentials (credential id, integration, account).
    credentials: Vec<(String, String, String)>,
    /// Every live value.
    values: HashSet<LiveId>,
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

/// The credentials of every account `owner` was given a handle for but `except` (the
/// call's own account), each with the entry a hit on it is charged to (see
/// `fragment_hit::Others`). The set of credentials is built once per set of accounts
/// and per vault read (`Accounts::watched`); only the entries are gathered per call.
pub fn other_accounts(
    shared: &Shared,
    owner: Owner,
    except: Option<&Entry>,
) -> Vec<(Arc<Entry>, Arc<Current>)> {
    let held: BTreeMap<(String, String), Arc<Entry>> = shared
        .handles
        .held_accounts(owner)
        .into_iter()
        .filter(|((i, a), _)| except.is_none_or(|e| e.integration != *i || e.account != *a))
        .collect();
    if held.is_empty() {
        return Vec::new();
    }
    let accounts: Vec<(String, String)> = held.keys().cloned().collect();
    shared
        .accounts
        .watched(&accounts)
        .iter()
        .filter_map(|(k, c)| held.get(k).map(|e| (e.clone(), c.clone())))
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

/// The credentials (credential id) among `found` (what an answer to `owner` holds)
/// that are of accounts `owner` holds no handle for, that its request did not carry
/// (`carried`) and that are not of the account of a credential the broker injected into
/// the call (`injected`), whatever became of `owner`'s handles since (a signal raised on
/// this answer may have ended it): not the injected value under any name it is
/// protected by (a rotated-in key is also protected under its rotation's id, and may be
/// registered twice), nor that account's other keys, as while `owner` held its handle.
/// Values the upstream exposed, not echoed (handles and decoys are not credentials; a
/// decoy has its own detector).
pub fn foreign(
    shared: &Shared,
    owner: Owner,
    found: &HashSet<LiveId>,
    carried: &HashSet<LiveId>,
    injected: &[&str],
) -> Vec<String> {
    let own: HashSet<LiveId> = own_credentials(shared, owner)
        .into_iter()
        .map(|(live, ..)| live)
        .collect();
    let mut calls: Vec<String> = injected
        .iter()
        .filter_map(|id| shared.accounts.owner_of(id))
        .flat_map(|(i, a)| shared.accounts.seen(&i, &a))
        .collect();
    calls.extend(injected.iter().map(|id| (*id).to_owned()));
    let protected = shared
        .protected
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let sent: HashSet<LiveId> = calls
        .iter()
        .filter_map(|id| protected.get(id).copied())
        .collect();
    let mut ids: Vec<String> = protected
        .iter()
        .filter(|(key, live)| {
            !key.starts_with(super::handles::PREFIX)
                && found.contains(live)
                && !own.contains(live)
                && !carried.contains(live)
                && !sent.contains(live)
        })
        .map(|(key, _)| key.clone())
        .collect();
    ids.sort();
    ids
}

/// The accounts (integration, account) of `credential_ids`: from the accounts calls
/// resolved (a rotation's pending value among them), else from the vault's metadata.
pub async fn accounts_of(shared: &Shared, credential_ids: &[String]) -> Vec<(String, String)> {
    let mut accounts = Vec::new();
    let mut unknown = Vec::new();
    for id in credential_ids {
        match shared.accounts.owner_of(id) {
            Some(account) => accounts.push(account),
            None => unknown.push(id.clone()),
        }
    }
    if !unknown.is_empty()
        && let Ok(metas) = with_vault(shared.vault.clone(), |v| v.list()).await
    {
        accounts.extend(
            metas
                .into_iter()
                .filter(|m| unknown.contains(&m.id))
                .map(|m| (m.integration, m.account)),
        );
    }
    accounts.sort();
    accounts.dedup();
    accounts
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
        let found = search(&scrubber, &buf, &decoys, credentials.clone());
        assert_eq!(found.decoys, vec![ids[3000]], "the encoded decoy, named");
        assert_eq!(
            found.credentials,
            vec![("cred-1".into(), "svc".into(), "bot".into())]
        );
        assert_eq!(found.values, HashSet::from([ids[3000], own]));
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
            Found::default()
        );
        assert_eq!(scrubber.visible_scans.load(Ordering::Relaxed) - before, 1);
    }
}

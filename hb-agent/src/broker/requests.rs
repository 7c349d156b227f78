//! `POST /v1/requests`: an HTTP call made by the broker on the caller's behalf.
//!
//! The data path of one request, one function per phase:
//! - [`parse`]: the body is read and checked (method, URL, headers, at most one of
//!   `body`/`body_base64`).
//! - [`decide`]: the caller's policy (its sandbox's, or `broker.host_policy`) judges
//!   it, before any socket opens. With a handle: the handle must be the caller's and
//!   live, the URL's host one of the integration's `hosts`, the method one of its
//!   `methods`, and the request must not bring its own credential (`Authorization`,
//!   `Proxy-Authorization`, the integration's auth header, or its auth query parameter,
//!   in any case, a header name also with `_` for `-`, a query parameter's also as PHP
//!   reads it: an **auth collision**, which revokes every handle of the execution),
//!   nor carry a body on GET, HEAD, OPTIONS, TRACE or DELETE ([`crate::http_rules::takes_no_body`])
//!   or a body whose first line reads as a request line ([`crate::http_rules::body_start`]).
//!   The URL's scheme and port must be among the integration's `schemes` (default
//!   `https`) and `ports` (default: the schemes' own), so the credential goes neither
//!   in cleartext nor to another listener on the same host; and the request may not
//!   name another method in a `_method` query parameter or form field (frameworks
//!   honour it as they do `X-HTTP-Method-Override`, refused on the way out).
//!   Without a handle the broker reaches no further than the caller could itself: only
//!   `broker.readonly_methods`, no body, and only to a name in the policy's
//!   `allow_domains` (matched as the resolver matches them) or an address in its
//!   `allow_cidrs`. A followed redirect hop is judged the same way (`Decision::hop`),
//!   and one that leaves the integration is not followed when its URL holds the
//!   credential or a run of it ([`url_holds_credential`]: a `Location` that kept the
//!   query).
//! - [`credentials_now`]: a handle stands for its integration and account, not for a
//!   value: the call carries the account's active credential as the vault holds it now
//!   (a rotation reaches handles issued before it; a revoked value is never sent).
//! - [`inject`]: the credential goes where the integration says (bearer, named header,
//!   query parameter); a credentialed request asks for the whole answer (`Range` and
//!   `If-Range` are not forwarded).
//! - [`send`]: the outbound path resolves through hb's validating resolver, connects to
//!   exactly a validated address, speaks HTTP(S) asking for `identity` encoding, and
//!   undoes any coding the upstream used anyway. [`propagation_retry`]: a 401 to a value
//!   rotated in less than the integration's `propagation_secs` ago is sent once more
//!   with the previous value, still in its grace period (and for a moment after the
//!   account's calls try the previous value first: see `propagation`). [`hold_for_rotation`]: a 401
//!   still, and the account's key is probed; a dead key's rotation is waited for (at
//!   most `hold_secs`) and the call sent once more with the new key, its handle judged
//!   again first ([`still_entitled`]).
//!   An exchange that fails gives an error that may quote the upstream (a `Location`,
//!   a `Content-Encoding`): scrubbed as its answer would be ([`upstream_error`]).
//! - [`respond`]: for a call that carried a credential, a partial answer (206,
//!   `Content-Range`, `multipart/byteranges`) is refused, and so is a body the scrubber
//!   cannot read as text (unless `broker.allow_binary_responses`); headers (names and
//!   values) and body are scrubbed (known token families, every stored credential and
//!   live handle, in their encodings, UTF-16 and UTF-32 included; for a sandbox, not
//!   the values its request carried that are not its own: see `text_gate::View::answer`;
//!   in a body or header with NUL bytes or escapes, also in its view without the NULs
//!   and with the escapes decoded, quoted-printable's too where the text declares it:
//!   [`cut_spread`]), sanitized when asked
//!   (`"sanitize": "flag"|"redact"|"block"`) and scrubbed again after that (normalising
//!   can turn look-alike characters into a credential). A run of at least 8
//!   characters of a credential the call carries (fewer for short values, see
//!   [`crate::scrub::Fragments`]), or of one of its encodings, in any case, in what the
//!   caller sent ([`refuse_fragments`], before anything is sent) or in any part of the
//!   answer but as the whole value, is a **fragment hit** (see `fragment_hit`): one
//!   fixed error, nothing of the answer, and the caller barred from the account (a cut
//!   answer would tell it which of its guesses were pieces of the key). Another account's
//!   credential in the answer that the request did not carry raises that account's
//!   `reflection` ([`unheld_in_answer`]). That work on the answer, and writing it out as
//!   JSON, runs on the blocking pool ([`AnswerScrub`]) in one of the caller's places of
//!   text work, waited for (`text_gate::wait_for_work`): never on the async workers
//!   every tenant's calls share. So do the searches of a large request (values and
//!   decoys it carries, runs of credentials: [`search_off_workers`]).
//!
//! Must never: open a connection for a request policy refused, reach a host the
//! caller's policy does not, send a credential to a host outside its integration, or
//! return a byte the scrubber has not seen.

use std::{borrow::Cow, collections::HashSet, sync::Arc};

use axum::{
    extract::State,
    response::{IntoResponse as _, Response},
};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use serde::Deserialize;
use serde_json::Value;

use super::{
    accounts::Current,
    credentials::{acting, no_credential, unknown_handle, usable_now},
    error::{ApiError, Code},
    fragment_hit,
    handles::{Entry, Owner},
    identity::Caller,
    outbound::{
        CredentialQuery, HopDecision, OutboundRequest, OutboundResponse,
        url::{Host, Target},
    },
    rotation::{detect::SeenAt, minting, probe::Verdict},
    state::{AppState, CallerOf, JsonBody, Shared},
    text_gate::View,
};
use crate::{
    config::{Auth, IntegrationConfig, PolicyConfig},
    events::EventRecord,
    scrub::LiveId,
    secret::Secret,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestIn {
    #[serde(default)]
    handle: Option<String>,
    method: String,
    url: String,
    /// Header name → value.
    #[serde(default)]
    headers: HeadersIn,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_base64: Option<String>,
    #[serde(default)]
    sanitize: Option<crate::sanitize::Mode>,
}

/// A request's `headers` object: names and string values, in the caller's order.
///
/// Read entry by entry from the caller's JSON and refused at the first value that is not
/// a string, the first name given twice, or past [`MAX_HEADERS`] names: never built
/// whole first. A JSON value tree costs the agent 30 to 40 times its text (an element of
/// `[0,0,…]` is two bytes of text and an 80-byte `Value`, in a vector that doubles), so
/// one 10 MiB request body read as a header's value grew the agent by gigabytes before
/// any check looked at it (attack review 49).
#[derive(Default)]
pub struct HeadersIn(Vec<(String, String)>);

impl<'de> Deserialize<'de> for HeadersIn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(HeaderEntries)
    }
}

/// Reads a [`HeadersIn`] one name and value at a time.
struct HeaderEntries;

impl<'de> serde::de::Visitor<'de> for HeaderEntries {
    type Value = HeadersIn;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "an object of at most {MAX_HEADERS} header names, each naming a string"
        )
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<HeadersIn, A::Error> {
        use serde::de::Error as _;
        let mut entries: Vec<(String, String)> = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            if entries.len() == MAX_HEADERS {
                return Err(A::Error::custom(format_args!(
                    "headers: a request names at most {MAX_HEADERS}"
                )));
            }
            // Two readers of one object may keep either value: neither is judged for
            // the other.
            if entries.iter().any(|(n, _)| *n == name) {
                return Err(A::Error::custom("headers: a name is given twice"));
            }
            let value = map.next_value::<String>()?;
            entries.push((name, value));
        }
        Ok(HeadersIn(entries))
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(Code::BadRequest, message)
}

fn denied(message: impl Into<String>) -> ApiError {
    ApiError::new(Code::PolicyDenied, message)
}

pub(super) fn host_matches(integration: &IntegrationConfig, host: &Host) -> bool {
    match host {
        Host::Name(name) => crate::dns::names::allowed(&integration.host_patterns, name),
        Host::Ip(_) => false,
    }
}

/// Whether the credential may go to `target`'s scheme and port (the integration's
/// `schemes` and `ports`); the host is [`host_matches`]'s.
pub(super) fn origin_matches(integration: &IntegrationConfig, target: &Target) -> bool {
    integration
        .schemes
        .iter()
        .any(|s| s == target.scheme.as_str())
        && integration.ports.contains(&target.port)
}

/// Query parameter and form field names frameworks read as the method: `_method`
/// (Rails, Laravel, Symfony, Express's method-override) and the override header names
/// as fields (ASP.NET's `HttpMethodOverride` reads `X-HTTP-Method-Override` from the
/// query and the form too). Lower case.
const METHOD_OVERRIDE_FIELDS: &[&str] = &[
    "_method",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Media types whose POST body Rack reads as form fields (`Request#POST`: `form_data?`,
/// or `parseable_data?` for `multipart/mixed` and `multipart/related`): as multipart
/// parts when the `Content-Type` names a boundary, else as a URL-encoded form (a
/// multipart type without a boundary too). No media type at all reads as a form too.
const FORM_MEDIA_TYPES: &[&str] = &[
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/mixed",
    "multipart/related",
];

/// A field name as frameworks compare it: lower case, trimmed, and `.`, space, `[` and
/// `-` read as `_` (PHP turns the first three into `_` in request variable names, so
/// `.method` and `[method` arrive as `_method`; override header names are read with
/// either separator).
fn field_key(name: &str) -> String {
    name.trim()
        .chars()
        .map(|c| match c {
            '.' | ' ' | '[' | '-' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Where the request names another method the way web frameworks read it (a
/// [`METHOD_OVERRIDE_FIELDS`] query parameter, form field or top-level JSON field, in
/// any spelling [`field_key`] folds together), if it does. Form fields are looked for
/// in a body of a [`FORM_MEDIA_TYPES`] type (in any [`media_types`] spelling) or of
/// none, as Rack reads it: read as URL-encoded, and by the `name=` of each part when
/// the type is a multipart one (quoted either way or not at all); JSON fields in a body
/// that is a JSON object (Laravel reads request input from JSON bodies), however deep
/// its values nest and whatever numbers they hold: PHP's `json_decode` reads 512 levels
/// and numbers past `f64` (as INF), where a full parse here stopped at 128 and refused
/// such a number, so the field went unseen.
fn method_override(parsed: &Parsed) -> Option<&'static str> {
    if query_overrides(&parsed.target) {
        return Some("query parameter");
    }
    if parsed.body.is_empty() {
        return None;
    }
    // The media types the upstream gets: a header the request's `Connection` names
    // (`Content-Type` too) is not sent (`headers::outgoing`).
    let sent = super::outbound::headers::outgoing(&parsed.headers).unwrap_or_default();
    let types = media_types(&sent);
    // Rack reads a POST without a media type (no `Content-Type`, or an empty one) as a
    // form (`Rack::Request#form_data?`), and `Rack::MethodOverride` takes its `_method`.
    // Express's body-parser decodes a body through iconv-lite, which drops a UTF-8 byte
    // order mark: the first field is read without it.
    let unmarked = parsed.body.strip_prefix(UTF8_BOM).unwrap_or(&parsed.body);
    let form = (types.iter().all(String::is_empty)
        || types.iter().any(|t| FORM_MEDIA_TYPES.contains(&t.as_str())))
        && url::form_urlencoded::parse(unmarked).any(|(k, _)| is_override(&k));
    let multipart = types
        .iter()
        .any(|t| t.starts_with("multipart/") && FORM_MEDIA_TYPES.contains(&t.as_str()))
        && part_names(&String::from_utf8_lossy(&parsed.body).to_ascii_lowercase())
            .any(|name| is_override(&name));
    if form || multipart {
        return Some("form field");
    }
    let json = json_texts(&parsed.body)
        .any(|text| serde_json::from_str::<NamesOverride>(&text).is_ok_and(|names| names.0));
    json.then_some("JSON field")
}

/// Whether a JSON text is an object one of whose top-level names is a method override
/// ([`is_override`]), read name by name: the values are skipped, not parsed (serde_json
/// skips without a depth limit and reads a number's syntax only), and no name is kept
/// once looked at. Collected into a map, a body of a million short names grew the agent
/// by ten times its size before the answer (attack review 49).
struct NamesOverride(bool);

impl<'de> Deserialize<'de> for NamesOverride {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(OverrideNames)
    }
}

/// Reads a [`NamesOverride`].
struct OverrideNames;

impl<'de> serde::de::Visitor<'de> for OverrideNames {
    type Value = NamesOverride;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<NamesOverride, A::Error> {
        let mut found = false;
        while let Some(name) = map.next_key::<String>()? {
            found |= is_override(&name);
            map.next_value::<serde::de::IgnoredAny>()?;
        }
        Ok(NamesOverride(found))
    }
}

const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// The texts a JSON reader may decode `body` to, without a byte order mark: UTF-8, and
/// UTF-16 and UTF-32 in either byte order (Express's body-parser decodes a JSON body in
/// any `utf-*` charset its `Content-Type` names, through iconv-lite, which drops the
/// mark). Only the UTF-8 text when the body is UTF-8: a JSON object's text in UTF-16 or
/// UTF-32 holds NUL bytes (its ASCII braces and quotes), which UTF-8 JSON never does.
fn json_texts(body: &[u8]) -> impl Iterator<Item = String> + '_ {
    let utf8 = std::str::from_utf8(body).ok().map(str::to_owned);
    let wide = (utf8.is_none() || body.contains(&0)).then(|| {
        let units16 = |be: bool| {
            let units = body.chunks_exact(2).map(move |c| {
                let pair = [c[0], c[1]];
                if be {
                    u16::from_be_bytes(pair)
                } else {
                    u16::from_le_bytes(pair)
                }
            });
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        };
        let units32 = |be: bool| {
            body.chunks_exact(4)
                .map(|c| {
                    let quad = [c[0], c[1], c[2], c[3]];
                    char::from_u32(if be {
                        u32::from_be_bytes(quad)
                    } else {
                        u32::from_le_bytes(quad)
                    })
                })
                .collect::<Option<String>>()
        };
        [units16(false), units16(true), units32(false), units32(true)]
    });
    utf8.into_iter()
        .chain(wide.into_iter().flatten().flatten())
        .map(|text| match text.strip_prefix('\u{feff}') {
            Some(unmarked) => unmarked.to_owned(),
            None => text,
        })
}

/// Whether a field `name` is one of [`METHOD_OVERRIDE_FIELDS`] as frameworks read it
/// ([`field_key`]). A name longer than [`MAX_FIELD_NAME`] is none of them and is not
/// folded (a body may name a million parts).
fn is_override(name: &str) -> bool {
    let name = name.trim();
    name.len() <= MAX_FIELD_NAME && {
        let key = field_key(name);
        METHOD_OVERRIDE_FIELDS
            .iter()
            .any(|f| f.len() == key.len() && field_key(f) == key)
    }
}

/// Whether `target`'s query names another method (a [`METHOD_OVERRIDE_FIELDS`]
/// parameter): Symfony (Laravel) reads `_method` from a POST's query string.
fn query_overrides(target: &Target) -> bool {
    let query = target.path_and_query.split_once('?').map_or("", |(_, q)| q);
    url::form_urlencoded::parse(query.as_bytes()).any(|(k, _)| is_override(&k))
}

/// Longer than any [`METHOD_OVERRIDE_FIELDS`] name (trimmed): a longer field name is
/// none of them.
const MAX_FIELD_NAME: usize = 64;

/// The names a multipart body (in lower case) may give its parts, as Rack reads them:
/// each `name=` value (quoted either way, `\` escaping the next character; or a bare
/// token, up to `;` or a blank), and the rest of each line after `Content-ID:` (Rack
/// names a part without a `name=` by it). Every occurrence counts, wherever it stands:
/// a name too many costs a false refusal, a name missed a method nobody judged.
///
/// Linear in the body, which the caller chooses and which is read on an async worker:
/// a bare token is read at most [`MAX_FIELD_NAME`] characters far (read to its end, a
/// body of `name=` repeated without a delimiter cost a scan to the body's end per
/// occurrence); a quoted name ends at the next `name=` of its quote at the latest (that
/// quote follows `=`, so no `\` escapes it); a `Content-ID` value at its line's end.
fn part_names(body: &str) -> impl Iterator<Item = Cow<'_, str>> + '_ {
    let named = body.match_indices("name=").map(|(at, _)| {
        let rest = &body[at + "name=".len()..];
        match rest.chars().next() {
            Some(q @ ('"' | '\'')) => {
                let mut name = String::new();
                let mut chars = rest[1..].chars();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => name.extend(chars.next()),
                        c if c == q => break,
                        c => name.push(c),
                    }
                }
                Cow::Owned(name)
            }
            _ => {
                let end = rest
                    .char_indices()
                    .find(|&(i, c)| i > MAX_FIELD_NAME || c == ';' || c.is_ascii_whitespace())
                    .map_or(rest.len(), |(i, _)| i);
                Cow::Borrowed(&rest[..end])
            }
        }
    });
    let ids = body.split(['\r', '\n']).filter_map(|line| {
        line.find("content-id:")
            .map(|at| Cow::Borrowed(&line[at + "content-id:".len()..]))
    });
    named.chain(ids)
}

/// The media type of each `Content-Type` the request carries, as a server reads it: the
/// value without the blanks before it (which HTTP servers strip before a framework sees
/// the value) up to its first `;`, `,` or blank (PHP ends the type at a space too:
/// `application/x-www-form-urlencoded x` fills `$_POST`), in lower case; empty for an
/// empty value.
fn media_types(headers: &[(HeaderName, HeaderValue)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n == http::header::CONTENT_TYPE)
        .map(|(_, v)| {
            let v = String::from_utf8_lossy(v.as_bytes());
            v.trim_start_matches([' ', '\t'])
                .split([';', ',', ' ', '\t'])
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase()
        })
        .collect()
}

/// What the request brings that only the broker may add, if anything.
fn collision(
    integration: &IntegrationConfig,
    headers: &[(HeaderName, HeaderValue)],
    target: &Target,
) -> Option<String> {
    // Read with `_` as `-`, as CGI-style servers read names (`X_Api_Key` and `X-Api-Key`
    // are both `HTTP_X_API_KEY`).
    let dashed = super::outbound::headers::dashed_str;
    for (name, _) in headers {
        let n = dashed(name.as_str());
        if n == "authorization" || n == "proxy-authorization" {
            return Some(format!("an {n} header"));
        }
        if matches!(&integration.auth_kind, Auth::Header(h) if dashed(h).eq_ignore_ascii_case(&n)) {
            return Some(format!("the integration's auth header {n}"));
        }
    }
    if let Auth::Query(param) = &integration.auth_kind {
        let query = target.path_and_query.split_once('?').map_or("", |(_, q)| q);
        // PHP reads `.`, ` ` and `[` in a parameter's name as `_` (`api.key` is
        // `$_GET['api_key']`): the same name to such an upstream.
        let as_php = |n: &str| n.replace(['.', ' ', '['], "_");
        for (k, _) in url::form_urlencoded::parse(query.as_bytes()) {
            if k.eq_ignore_ascii_case(param) || as_php(&k).eq_ignore_ascii_case(&as_php(param)) {
                return Some(format!("the integration's auth query parameter {param}"));
            }
        }
    }
    None
}

/// Credential headers and query parameter for one request.
pub(super) type Injected = (Vec<(HeaderName, HeaderValue)>, Option<CredentialQuery>);

/// The credential, put where the integration says.
pub(super) fn credential(
    integration: &IntegrationConfig,
    secret: &Secret,
) -> Result<Injected, ApiError> {
    let unusable = || {
        ApiError::new(
            Code::UpstreamError,
            format!(
                "the stored credential of integration \"{}\" cannot be sent as a header value",
                integration.name.get_ref()
            ),
        )
    };
    let header_value = |prefix: &[u8]| {
        let mut bytes = Vec::with_capacity(prefix.len() + secret.len());
        bytes.extend_from_slice(prefix);
        bytes.extend_from_slice(secret.expose());
        let mut v = HeaderValue::from_bytes(&bytes).map_err(|_| unusable())?;
        zeroize::Zeroize::zeroize(&mut bytes);
        v.set_sensitive(true);
        Ok::<_, ApiError>(v)
    };
    Ok(match &integration.auth_kind {
        Auth::Bearer => (
            vec![(http::header::AUTHORIZATION, header_value(b"Bearer ")?)],
            None,
        ),
        Auth::Header(name) => (
            vec![(
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| unusable())?,
                header_value(b"")?,
            )],
            None,
        ),
        Auth::Query(param) => (
            Vec::new(),
            Some(CredentialQuery {
                name: param.clone(),
                value: Secret::new(secret.expose().to_vec()),
            }),
        ),
    })
}

/// `POST /v1/requests`: the phases in order (see the module header).
pub async fn request(
    State(shared): State<AppState>,
    CallerOf(caller): CallerOf,
    JsonBody(req): JsonBody<RequestIn>,
) -> Result<Response, ApiError> {
    let (policy, owner) = match acting(&caller, &shared.config.broker.host_policy) {
        Ok(acting) => acting,
        Err(e) => {
            // A decoy tried by a caller that may use no handle at all still trips.
            if let Some(h) = &req.handle {
                super::canary::check(&shared, &caller, h, SeenAt::RequestHandle);
            }
            return Err(e);
        }
    };
    let call = Call {
        shared: &shared,
        caller: &caller,
        policy: &policy,
    };
    // A barred caller holds no live handle (and gets none): a call with a handle is
    // answered below as any dead handle's (a decoy's answer stays a made-up handle's);
    // a call without one is refused here.
    if req.handle.is_none() {
        super::credentials::refuse_barred(&shared, &caller, &policy, owner, "request")?;
    }
    let parsed = parse(req)?;
    if let Some(h) = &parsed.handle
        && super::canary::check(&shared, &caller, h, SeenAt::RequestHandle)
    {
        // Where a dead handle is refused, and with the same answer.
        return Err(unknown_handle());
    }
    let decision = decide(&call, owner, &parsed)?;
    let sensed = sense(&call, &parsed, &decision);
    let carried = inspect_outgoing(&call, owner, &parsed, &decision).await?;
    held(&call, &parsed, &decision)?;
    let usable = credentials_now(&call, &decision).await?;
    // The credentials of the caller's other accounts: watched in this call too.
    let others = super::sightings::other_accounts(
        &shared,
        owner,
        decision.credential.as_ref().map(|(e, _)| &**e),
    );
    refuse_fragments(&call, &decision, &parsed, &usable, &others).await?;
    // Every credential this call sends, in order: the answer is cut of all their runs.
    let mut sent: Vec<Arc<Current>> = first_to_try(&call, &decision, &usable)
        .into_iter()
        .collect();
    let outbound = inject(&decision, sent.first().map(|c| &**c), &parsed)?;
    let mut response = send(
        &call,
        &decision,
        &Answer::of(owner, &carried, &sent, &others),
        &parsed,
        outbound,
    )
    .await?;
    // What the upstream answered each key that reached it, for `propagation`.
    let mut answers: Vec<(String, u16)> = Vec::new();
    if let Some(first) = sent.first()
        && response.credential_sent
    {
        answers.push((first.credential_id.clone(), response.status));
    }
    if let Some(other) = propagation_retry(&call, &decision, &usable, &sent, &response).await? {
        let outbound = inject(&decision, Some(&other), &parsed)?;
        let id = other.credential_id.clone();
        sent.push(other);
        response = send(
            &call,
            &decision,
            &Answer::of(owner, &carried, &sent, &others),
            &parsed,
            outbound,
        )
        .await?;
        if response.credential_sent {
            answers.push((id, response.status));
        }
    }
    remember_answers(&call, &decision, &usable, &answers);
    let mut not_replaced = None;
    match hold_for_rotation(&call, &decision, &sent, &response).await? {
        AfterHold::Pass => {}
        AfterHold::Retry(replacement) => {
            still_entitled(&call, owner, &parsed)?;
            let outbound = inject(&decision, Some(&replacement), &parsed)?;
            sent.push(replacement);
            response = send(
                &call,
                &decision,
                &Answer::of(owner, &carried, &sent, &others),
                &parsed,
                outbound,
            )
            .await?;
        }
        AfterHold::NotReplaced(why) => not_replaced = Some(why),
    }
    if let Some(account) = &sensed {
        account.answer(response.status, response.body.len());
    }
    let answer = Answer {
        owner,
        carried: &carried,
        sent: &sent,
        others: &others,
        not_replaced,
    };
    respond(&call, &decision, &answer, &parsed, response).await
}

/// Requests up to this size (URL, headers and body) are searched on the calling task: the
/// hand-off to a blocking thread costs more than their scan.
const INLINE_SEARCH_BYTES: usize = 64 * 1024;

/// The bytes of what the caller sends that the request searches read: URL, header names
/// and values, body.
fn request_size(parsed: &Parsed) -> usize {
    let headers: usize = parsed
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    parsed.target.path_and_query.len() + headers + parsed.body.len()
}

/// Runs `search` (a search of what the caller sends) on the calling task for a request of
/// at most [`INLINE_SEARCH_BYTES`], else on the blocking pool in one of the caller's
/// places of text work (`text_gate::wait_for_work`), held until the search ends. A
/// search's cost per byte depends on the bytes: filler that matches the start of a
/// credential's encodings (a run of `A`, as base64 of NUL-padded text has) costs a hash
/// of several windows at each position, minutes for 10 MiB on a debug build. On the
/// broker's two async workers, two such calls of one sandbox held every tenant's calls
/// for as long (attack review 49); unbounded on the blocking pool, a caller's calls that
/// timed out would leave their searches running, more with each call.
async fn search_off_workers<T: Send + 'static>(
    call: &Call<'_>,
    parsed: &Parsed,
    search: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    if request_size(parsed) <= INLINE_SEARCH_BYTES {
        return Ok(search());
    }
    let working = super::text_gate::wait_for_work(call.shared, call.caller).await;
    tokio::task::spawn_blocking(move || {
        let _working = working;
        search()
    })
    .await
    .map_err(|_| ApiError::new(Code::Internal, "the request search failed"))
}

/// Phase 2b: what the caller sends, searched for decoy handles (the `canary` signal:
/// every handle of the caller is revoked, so a call made with one fails as any dead
/// handle does; a call without a handle goes on, as one carrying a real handle's text
/// would) and for the values of its own accounts' credentials (the `reflection`
/// signal; the request is refused: the broker adds credentials, it never forwards one).
/// Every live value it carries, for the answer's view.
async fn inspect_outgoing(
    call: &Call<'_>,
    owner: Owner,
    parsed: &Parsed,
    decision: &Decision<'_>,
) -> Result<HashSet<LiveId>, ApiError> {
    let shared = call.shared;
    let url = parsed.target.to_string();
    // A scan of the whole request, off the async workers when large.
    let (searcher, headers, body) = (shared.clone(), parsed.headers.clone(), parsed.body.clone());
    let found = search_off_workers(call, parsed, move || {
        super::sightings::outgoing(&searcher, owner, &url, &headers, &body)
    })
    .await?;
    for canary in &found.canaries {
        super::canary::check(shared, call.caller, canary, SeenAt::RequestContent);
    }
    if !found.canaries.is_empty() && decision.credential.is_some() {
        return Err(unknown_handle());
    }
    if !reflected_in_request(call, parsed, &found) {
        return Ok(found.values);
    }
    call.audit(
        &parsed.action,
        "policy_denied",
        "a stored credential's value",
    );
    Err(denied(
        "the request carries the value of a stored credential: the broker adds credentials \
         itself and never forwards one a caller holds",
    ))
}

/// Phase 2c: a call carrying the credential of an account under `quarantine` must be
/// read-only (a `broker.readonly_methods` method, no body, no method override) and
/// within the account's `quarantine_calls_per_minute`.
fn held(call: &Call<'_>, parsed: &Parsed, decision: &Decision<'_>) -> Result<(), ApiError> {
    let Some((entry, _)) = &decision.credential else {
        return Ok(());
    };
    let readonly = decision.readonly && !decision.has_body && method_override(parsed).is_none();
    let refusal = match call.shared.quarantines.admit(
        &entry.integration,
        &entry.account,
        entry.owner,
        readonly,
        std::time::Instant::now(),
    ) {
        Ok(()) => return Ok(()),
        Err(r) => r,
    };
    let (code, what, until) = match refusal {
        super::rotation::quarantine::Refusal::NotReadOnly(until) => {
            (Code::PolicyDenied, "read-only calls only", until)
        }
        super::rotation::quarantine::Refusal::Rate(until) => {
            (Code::RateLimited, "its calls this minute are spent", until)
        }
    };
    call.audit(&parsed.action, code.as_str(), "quarantined");
    Err(ApiError::new(
        code,
        format!(
            "integration \"{}\" account \"{}\" is quarantined by a detector until {}: {what}",
            entry.integration,
            entry.account,
            humantime::format_rfc3339_seconds(until)
        ),
    ))
}

/// The `reflection` signal for each credential of the caller's own accounts found in
/// what it sends; whether there was one.
fn reflected_in_request(
    call: &Call<'_>,
    parsed: &Parsed,
    found: &super::sightings::Outgoing,
) -> bool {
    let shared = call.shared;
    if found.credentials.is_empty() {
        return false;
    }
    for (_, integration, account) in &found.credentials {
        shared.sensor.scrub_hit(integration, account);
        super::rotation::detect::signal(
            shared,
            &super::rotation::detect::Signal {
                detector: super::rotation::detect::Detector::Reflection,
                trigger: "reflection",
                integration,
                account,
                policy: call.policy,
                caller: Some(call.caller),
                seen: SeenAt::RequestContent,
                handle: parsed
                    .handle
                    .as_deref()
                    .map(|h| shared.audit.fingerprint(h)),
                execution: None,
            },
        );
    }
    true
}

/// Phase 2a: a call with a handle is counted by its account's sensor (see
/// `rotation::sensor`); a (method, host) new to the account after its learning period
/// is the `novelty` signal. The call goes on either way.
fn sense(
    call: &Call<'_>,
    parsed: &Parsed,
    decision: &Decision<'_>,
) -> Option<Arc<super::rotation::sensor::Account>> {
    let (entry, _) = decision.credential.as_ref()?;
    let shared = call.shared;
    let account = shared.sensor.account(&entry.integration, &entry.account)?;
    let host = match &parsed.target.host {
        Host::Name(name) => std::borrow::Cow::Borrowed(name.as_str()),
        Host::Ip(ip) => std::borrow::Cow::Owned(ip.to_string()),
    };
    let now = super::rotation::sensor::unix_now();
    if account.call(
        entry.owner,
        call.policy,
        &parsed.method,
        &host,
        parsed.body.len(),
        now,
    ) {
        super::rotation::detect::signal(
            shared,
            &super::rotation::detect::Signal {
                detector: super::rotation::detect::Detector::Novelty,
                trigger: "novelty",
                integration: &entry.integration,
                account: &entry.account,
                policy: call.policy,
                caller: Some(call.caller),
                seen: SeenAt::Request,
                handle: parsed
                    .handle
                    .as_deref()
                    .map(|h| shared.audit.fingerprint(h)),
                execution: Some(&entry.execution),
            },
        );
    }
    Some(account)
}

/// Who asks, under which policy: what every phase audits with.
struct Call<'a> {
    shared: &'a AppState,
    caller: &'a Caller,
    policy: &'a str,
}

impl Call<'_> {
    fn audit(&self, action: &str, decision: &str, detail: &str) {
        self.shared
            .audit_decision(self.caller, self.policy, action, decision, detail);
    }

    /// A refusal worth an operator's attention (a caller trying to go where its policy
    /// does not, or bringing its own credential), on the event stream beside the
    /// kernel's.
    fn deny_event(&self, reason: &str, parsed: &Parsed, name: Option<String>) {
        let caller = self.caller;
        self.shared.caller_event(
            caller,
            EventRecord {
                time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                hook: "broker".into(),
                verdict: "deny".into(),
                reason: reason.into(),
                policy: self.policy.to_owned(),
                cgroup_id: caller.sandbox.as_ref().map_or(0, |s| s.cgroup_id),
                cgroup: Some(caller.cgroup.clone()),
                pid: u32::try_from(caller.pid).unwrap_or(0),
                tid: 0,
                comm: String::new(),
                family: String::new(),
                protocol: "http".into(),
                dst: parsed.target.host.to_string(),
                port: parsed.target.port,
                name,
                suppressed: 0,
                detail: None,
            },
        );
    }
}

/// A request as the caller asked for it, checked for form.
struct Parsed {
    handle: Option<String>,
    method: Method,
    target: Target,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    sanitize: Option<crate::sanitize::Mode>,
    /// `METHOD scheme://authority`, for the audit log (never the path or query).
    action: String,
}

/// Most headers a request may name. HTTP servers refuse more (hyper's and Python's
/// `http.server` at 100), and an outbound request's header map holds at most 32768:
/// building one with more panicked the call's task.
const MAX_HEADERS: usize = 100;

/// Phase 1: method, URL, headers and body read and checked; nothing judged yet.
fn parse(req: RequestIn) -> Result<Parsed, ApiError> {
    let method = Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| bad(format!("\"{}\" is not an HTTP method", req.method)))?;
    let target = Target::parse(&req.url).map_err(|e| bad(format!("url: {e}")))?;
    if req.headers.0.len() > MAX_HEADERS {
        return Err(bad(format!(
            "{} headers: a request names at most {MAX_HEADERS}",
            req.headers.0.len()
        )));
    }
    let mut headers = Vec::with_capacity(req.headers.0.len());
    for (name, value) in &req.headers.0 {
        let pair = super::outbound::headers::header(name, value)
            .map_err(|e| bad(format!("header {name}: {e}")))?;
        headers.push(pair);
    }
    let body = match (req.body, &req.body_base64) {
        (Some(_), Some(_)) => return Err(bad("give \"body\" or \"body_base64\", not both")),
        (Some(b), None) => Bytes::from(b.into_bytes()),
        (None, Some(b)) => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| bad(format!("body_base64: {e}")))?,
        ),
        (None, None) => Bytes::new(),
    };
    let action = format!(
        "{method} {}://{}",
        target.scheme.as_str(),
        target.authority()
    );
    Ok(Parsed {
        handle: req.handle,
        method,
        target,
        headers,
        body,
        sanitize: req.sanitize,
        action,
    })
}

/// Where the caller's own policy lets it go: the names its resolver answers
/// (`allow_domains`, matched by the resolver's own matcher) and the addresses of its
/// `allow_cidrs`. A policy the config does not know reaches nothing.
#[derive(Clone, Copy)]
struct Reach<'a> {
    policy: Option<&'a PolicyConfig>,
}

impl Reach<'_> {
    fn allows(&self, host: &Host) -> bool {
        let Some(p) = self.policy else { return false };
        match host {
            Host::Name(name) => crate::dns::names::allowed(&p.domains, name),
            Host::Ip(addr) => p.allow.iter().any(|net| net.contains(addr)),
        }
    }
}

/// What policy decided for a request.
struct Decision<'a> {
    /// The handle's entry and its integration, for a call with a handle.
    credential: Option<(Arc<Entry>, &'a IntegrationConfig)>,
    reach: Reach<'a>,
    /// The method is one of `broker.readonly_methods`.
    readonly: bool,
    has_body: bool,
}

impl Decision<'_> {
    /// A redirect hop, judged like a request: inside the integration (host, scheme and
    /// port) it keeps the credential, unless its query names another method (a 307 or
    /// 308 keeps a POST a POST, and the upstream's `Location` was never judged); anywhere
    /// else, or so, it goes on as a handle-less request would (read-only, no body,
    /// within the caller's reach) and without the credential.
    fn hop(&self, next: &Target) -> HopDecision {
        if let Some((_, integration)) = &self.credential
            && host_matches(integration, &next.host)
            && origin_matches(integration, next)
            && !query_overrides(next)
        {
            return HopDecision::Allow {
                keep_credential: true,
            };
        }
        if self.readonly && !self.has_body && self.reach.allows(&next.host) {
            HopDecision::Allow {
                keep_credential: false,
            }
        } else {
            HopDecision::Deny
        }
    }
}

/// Phase 2: the caller's policy judges the request; nothing has been sent.
fn decide<'a>(call: &Call<'a>, owner: Owner, parsed: &Parsed) -> Result<Decision<'a>, ApiError> {
    let config = &call.shared.config;
    let reach = Reach {
        policy: config
            .policies
            .iter()
            .find(|p| p.name.get_ref() == call.policy),
    };
    let readonly_methods = &config.broker.readonly_methods;
    let readonly = readonly_methods.iter().any(|m| m == parsed.method.as_str());
    let credential = match &parsed.handle {
        Some(h) => Some(decide_with_handle(call, owner, parsed, h)?),
        None => {
            decide_without_handle(call, parsed, reach, readonly)?;
            None
        }
    };
    Ok(Decision {
        credential,
        reach,
        readonly,
        has_body: !parsed.body.is_empty(),
    })
}

/// A call with a handle: the caller's live handle, the integration's hosts and
/// methods, and no credential of the caller's own.
fn decide_with_handle<'a>(
    call: &Call<'a>,
    owner: Owner,
    parsed: &Parsed,
    handle: &str,
) -> Result<(Arc<Entry>, &'a IntegrationConfig), ApiError> {
    let shared = call.shared;
    let (target, action) = (&parsed.target, &parsed.action);
    let Some(entry) = shared.handles.get(handle, owner) else {
        // A handle a fragment hit ended gets its bar's answer, from its owner only.
        if shared.handles.ended_by_account_bar(handle, owner) {
            return Err(bar_refused(call, parsed));
        }
        return Err(unknown_handle());
    };
    if shared
        .handles
        .account_barred(owner, &entry.integration, &entry.account)
    {
        return Err(bar_refused(call, parsed));
    }
    let integration = call
        .shared
        .config
        .integrations
        .iter()
        .find(|i| i.name.get_ref() == &entry.integration)
        .ok_or_else(unknown_handle)?;
    if !host_matches(integration, &target.host) {
        call.audit(action, "policy_denied", "host");
        return Err(denied(format!(
            "host {} is not one of integration \"{}\"'s hosts ({}): the broker will not send its credential there",
            target.host,
            entry.integration,
            integration.hosts.join(", ")
        )));
    }
    if !origin_matches(integration, target) {
        call.audit(action, "policy_denied", "scheme or port");
        return Err(denied(format!(
            "{}://{}:{} is not where integration \"{}\"'s credential may go (schemes: {}; \
             ports: {}): the broker will not send it in cleartext or to another port",
            target.scheme.as_str(),
            target.host,
            target.port,
            entry.integration,
            integration.schemes.join(", "),
            integration
                .ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if let Some(place) = method_override(parsed) {
        call.audit(action, "policy_denied", "method override");
        return Err(denied(format!(
            "a \"_method\" (or method-override) {place} asks the upstream to act as \
             another method: send that method itself, so policy judges it"
        )));
    }
    if !integration
        .methods
        .iter()
        .any(|m| m == parsed.method.as_str())
    {
        call.audit(action, "policy_denied", "method");
        return Err(denied(format!(
            "method {} is not allowed for integration \"{}\" (methods: {})",
            parsed.method,
            entry.integration,
            integration.methods.join(", ")
        )));
    }
    if let Some(what) = collision(integration, &parsed.headers, target) {
        return Err(auth_collision(call, owner, parsed, &entry, &what));
    }
    // A server may answer one of these without reading its body and read that body as
    // the next request on the connection: one policy never judged.
    if !parsed.body.is_empty() && crate::http_rules::takes_no_body(parsed.method.as_str()) {
        call.audit(action, "policy_denied", "a body on a method without one");
        return Err(denied(format!(
            "a {} request carries no body through the broker: an upstream that ignores it \
             would read it as another request, one policy never judged (send data with a \
             method that takes a body)",
            parsed.method
        )));
    }
    // Nor one whose body reads as a request: a server that answers first (a 401, a 404)
    // and keeps the connection reads it as the next one. The broker's `Connection: close`
    // ends at a front that shares its back-end connection among its clients, where that
    // request's answer is queued for another tenant's call (attack review 34); the guard
    // refuses such a body too.
    if crate::http_rules::body_start(&parsed.body, true) == crate::http_rules::BodyStart::Request {
        call.audit(action, "policy_denied", "a body that reads as a request");
        return Err(denied(
            "the body starts with an HTTP request line: an upstream that answers before \
             reading it would read it as another request, one policy never judged",
        ));
    }
    Ok((entry, integration))
}

/// A call without a handle reaches no further than the caller could by itself.
fn decide_without_handle(
    call: &Call<'_>,
    parsed: &Parsed,
    reach: Reach<'_>,
    readonly: bool,
) -> Result<(), ApiError> {
    let action = &parsed.action;
    if !readonly {
        call.audit(action, "policy_denied", "no handle: method");
        return Err(denied(format!(
            "without a handle only {} are allowed (broker.readonly_methods); \
             {} needs a handle for an integration",
            call.shared.config.broker.readonly_methods.join(", "),
            parsed.method
        )));
    }
    if !parsed.body.is_empty() {
        call.audit(action, "policy_denied", "no handle: body");
        return Err(denied(
            "a request without a handle carries no body: send data only with a handle for an \
             integration that takes it",
        ));
    }
    if !reach.allows(&parsed.target.host) {
        call.audit(action, "policy_denied", "no handle: host");
        call.deny_event("broker_host_not_in_policy", parsed, None);
        let rule = match parsed.target.host {
            Host::Name(_) => "allow_domains",
            Host::Ip(_) => "allow_cidrs",
        };
        return Err(denied(format!(
            "host {} is not in policy \"{}\"'s {rule}: without a handle the broker reaches only \
             what the caller's policy lets it reach itself",
            parsed.target.host, call.policy
        )));
    }
    Ok(())
}

/// Refuses a request that brings its own credential: every handle of the execution is
/// revoked, the refusal audited and sent as an event.
fn auth_collision(
    call: &Call<'_>,
    owner: Owner,
    parsed: &Parsed,
    entry: &Entry,
    what: &str,
) -> ApiError {
    let (shared, caller, policy) = (call.shared, call.caller, call.policy);
    // Searched before the handles go: the caller's own credentials are those of the
    // accounts it holds handles for.
    let url = parsed.target.to_string();
    let found = super::sightings::outgoing(shared, owner, &url, &parsed.headers, &parsed.body);
    reflected_in_request(call, parsed, &found);
    let revoked = shared.handles.end_execution(&entry.execution, owner);
    shared.forget_handles(&revoked);
    call.audit(&parsed.action, "auth_collision", what);
    shared.audit_execution_end(
        caller,
        policy,
        &entry.execution,
        "auth_collision",
        revoked.len(),
    );
    call.deny_event("auth_collision", parsed, Some(entry.integration.clone()));
    ApiError::new(
        Code::AuthCollision,
        format!(
            "the request brings its own credential ({what}); the broker adds \
             integration \"{}\"'s credential itself. Every handle of execution \
             \"{}\" is revoked.",
            entry.integration, entry.execution
        ),
    )
}

/// Phase 3: the credentials the handle's account has now, the active one first (none
/// for a call without a handle). A handle stands for its account, so a call made after
/// a rotation carries the new value and one made after a revocation carries none.
async fn credentials_now(
    call: &Call<'_>,
    decision: &Decision<'_>,
) -> Result<Vec<Arc<Current>>, ApiError> {
    let Some((entry, _)) = &decision.credential else {
        return Ok(Vec::new());
    };
    let usable = usable_now(call.shared, &entry.integration, &entry.account).await?;
    if usable.is_empty() {
        call.audit(&entry.integration, "no_credential", &entry.account);
        return Err(no_credential(&entry.integration, &entry.account));
    }
    Ok(usable)
}

/// Phase 3c: the credential a call tries first: the account's active one, or for a
/// moment after the upstream refused a newly rotated one, the previous one (see
/// `propagation`).
fn first_to_try(
    call: &Call<'_>,
    decision: &Decision<'_>,
    usable: &[Arc<Current>],
) -> Option<Arc<Current>> {
    let (entry, integration) = decision.credential.as_ref()?;
    if usable.len() < 2 {
        // No previous key (the common case): the active one, without a look.
        return usable.first().cloned();
    }
    let key = (entry.integration.clone(), entry.account.clone());
    let propagation = std::time::Duration::from_secs(integration.propagation_secs);
    call.shared.propagation.first(&key, usable, propagation)
}

/// Phase 5b': what the upstream answered the call's tries (`answers`: each key's id and
/// status) tells `propagation` whether the account's newest key is still propagating:
/// refused while the previous one was taken.
fn remember_answers(
    call: &Call<'_>,
    decision: &Decision<'_>,
    usable: &[Arc<Current>],
    answers: &[(String, u16)],
) {
    let (Some((entry, _)), Some(newest)) = (&decision.credential, usable.first()) else {
        return;
    };
    if usable.len() < 2 {
        // No previous key: no propagation to learn, and `first` orders nothing.
        return;
    }
    let key = (entry.integration.clone(), entry.account.clone());
    let answers: Vec<(&str, u16)> = answers.iter().map(|(id, s)| (id.as_str(), *s)).collect();
    call.shared
        .propagation
        .answered(&key, &newest.credential_id, &answers);
}

/// Phase 5b: an upstream's 401 to a value rotated in less than the integration's
/// `propagation_secs` ago is retried once with the other usable value (the previous
/// one, still in its grace period, or the new one when the previous was tried first):
/// providers take seconds to minutes to make a new key valid everywhere. The account
/// is read again first: the first attempt may have taken as long as the upstream
/// timeout, and the previous value may have been retired or revoked meanwhile.
async fn propagation_retry(
    call: &Call<'_>,
    decision: &Decision<'_>,
    usable: &[Arc<Current>],
    sent: &[Arc<Current>],
    response: &OutboundResponse,
) -> Result<Option<Arc<Current>>, ApiError> {
    let (Some((entry, integration)), [tried], Some(newest)) =
        (&decision.credential, sent, usable.first())
    else {
        return Ok(None);
    };
    if !response.credential_sent || response.status != 401 {
        return Ok(None);
    }
    let now = usable_now(call.shared, &entry.integration, &entry.account).await?;
    if now.first().map(|c| &c.credential_id) != Some(&newest.credential_id) {
        // Rotated again while the call was out: the 401 was to a value already old.
        return Ok(None);
    }
    let propagation = std::time::Duration::from_secs(integration.propagation_secs);
    Ok(super::propagation::retry_with_other(
        &now,
        &tried.credential_id,
        response.status,
        propagation,
        std::time::SystemTime::now(),
    ))
}

/// What a 401 to the account's key comes to (see [`hold_for_rotation`]).
enum AfterHold {
    /// The answer goes to the caller as it is.
    Pass,
    /// Sent once more with the account's new active key.
    Retry(Arc<Current>),
    /// The key is dead and no new one became active in time: the 401 goes to the
    /// caller with `credential_error` (`credential_dead`, this reason).
    NotReplaced(&'static str),
}

/// Phase 5c: an upstream's 401 to the account's key (after any propagation retry)
/// sends one verify probe of the account (concurrent 401s share it, see
/// `rotation::probe`); for an integration with a rotator the call is held until the
/// probe's verdict is in — and, for a dead key, until the rotation it started has made
/// a new key active — at most `hold_secs`, then sent once more with the new key. Every
/// method is retried: the broker holds the whole body, and a 401 says the upstream did
/// not act on the request. A call whose key was replaced while it was out is sent
/// again at once, with no probe.
async fn hold_for_rotation(
    call: &Call<'_>,
    decision: &Decision<'_>,
    sent: &[Arc<Current>],
    response: &OutboundResponse,
) -> Result<AfterHold, ApiError> {
    let Some((entry, integration)) = &decision.credential else {
        return Ok(AfterHold::Pass);
    };
    // Only a 401 to a hop that carried the key says anything about it.
    if response.status != 401 || !response.credential_sent {
        return Ok(AfterHold::Pass);
    }
    let (shared, i, a) = (call.shared, &entry.integration, &entry.account);
    let was_sent = |c: &Arc<Current>| sent.iter().any(|s| s.credential_id == c.credential_id);
    let active = || async {
        let now = usable_now(shared, i, a).await?;
        Ok::<_, ApiError>(now.into_iter().next().filter(|c| !was_sent(c)))
    };
    let hold = integration.rotation.as_ref().map_or(0, |r| r.hold_secs);
    if hold > 0
        && let Some(replacement) = active().await?
    {
        return Ok(AfterHold::Retry(replacement));
    }
    // Maybe a dead key: one probe of the account decides (and rotates it).
    let Some(mut pending) = super::rotation::probe::unauthorized(shared, i, a) else {
        return Ok(AfterHold::Pass);
    };
    if hold == 0 {
        return Ok(AfterHold::Pass);
    }
    // The watch's guard is dropped before the next await.
    let verdict = match tokio::time::timeout(
        std::time::Duration::from_secs(hold),
        pending.wait_for(Option::is_some),
    )
    .await
    {
        Ok(Ok(v)) => *v,
        Ok(Err(_)) => Some(Verdict::NotReplaced("probe_failed")),
        Err(_) => Some(Verdict::NotReplaced("rotation_pending")),
    };
    if verdict == Some(Verdict::NotDead) {
        return Ok(AfterHold::Pass);
    }
    if let Some(replacement) = active().await? {
        return Ok(AfterHold::Retry(replacement));
    }
    Ok(AfterHold::NotReplaced(match verdict {
        Some(Verdict::NotReplaced(why)) => why,
        // The rotation finished, but its key is the one refused.
        _ => "replacement_refused",
    }))
}

/// Phase 5d: before a held call goes out again with a new key, its handle is judged
/// again as [`decide_with_handle`] judged it: the hold can outlast the handle (its
/// execution ended, a decoy's use revoked the caller's handles, the account barred), and
/// a revoked handle's call must not carry the account's next key. Refused as a dead
/// handle is.
fn still_entitled(call: &Call<'_>, owner: Owner, parsed: &Parsed) -> Result<(), ApiError> {
    match &parsed.handle {
        Some(h) => decide_with_handle(call, owner, parsed, h).map(|_| ()),
        None => Ok(()),
    }
}

/// Phase 3b: a request that holds a run of a credential its call would carry, or of
/// one of the caller's other accounts' (see `fragment_hit`), is refused before it is
/// sent, and the caller barred from the account whose run it was.
/// The search runs off the async workers when the request is large
/// ([`search_off_workers`]).
async fn refuse_fragments(
    call: &Call<'_>,
    decision: &Decision<'_>,
    parsed: &Parsed,
    usable: &[Arc<Current>],
    others: &fragment_hit::Others,
) -> Result<(), ApiError> {
    let target = parsed.target.to_string();
    let (usable, others) = (usable.to_vec(), others.to_vec());
    let (headers, body) = (parsed.headers.clone(), parsed.body.clone());
    let hit = search_off_workers(call, parsed, move || {
        let sent = fragment_hit::Sent {
            target: &target,
            headers: &headers,
            body: &body,
        };
        fragment_hit::in_request(&usable, &others, &sent)
    })
    .await?;
    if let Some(entry) = hit.and_then(|w| charged(decision, w)) {
        return Err(fragment_refused(
            call,
            parsed,
            &entry,
            fragment_hit::Seen::Request,
        ));
    }
    Ok(())
}

/// The handle entry a fragment hit is charged to: the call's for a run of a credential
/// it carries, the other account's handle's for one of theirs.
fn charged(decision: &Decision<'_>, whose: fragment_hit::Whose) -> Option<Arc<Entry>> {
    match whose {
        fragment_hit::Whose::Call => decision.credential.as_ref().map(|(e, _)| e.clone()),
        fragment_hit::Whose::Other(entry) => Some(entry),
    }
}

/// A fragment hit on this call: charged to the caller (see `fragment_hit::charge`); the
/// fixed refusal.
fn fragment_refused(
    call: &Call<'_>,
    parsed: &Parsed,
    entry: &Entry,
    seen: fragment_hit::Seen,
) -> ApiError {
    fragment_hit::charge(
        call.shared,
        &fragment_hit::Hit {
            caller: call.caller,
            policy: call.policy,
            entry,
            handle: parsed
                .handle
                .as_deref()
                .map(|h| call.shared.audit.fingerprint(h)),
            seen,
        },
    )
}

/// A call of a caller a fragment hit barred from the handle's account.
fn bar_refused(call: &Call<'_>, parsed: &Parsed) -> ApiError {
    call.audit(&parsed.action, "credential_fragment", "barred");
    fragment_hit::refusal()
}

/// Phase 4: the request as it will be sent, the credential in place.
fn inject(
    decision: &Decision<'_>,
    carried: Option<&Current>,
    parsed: &Parsed,
) -> Result<OutboundRequest, ApiError> {
    let (credential_headers, credential_query) = match (&decision.credential, carried) {
        (Some((_, integration)), Some(current)) => credential(integration, &current.secret)?,
        _ => (Vec::new(), None),
    };
    let mut headers = parsed.headers.clone();
    if decision.credential.is_some() {
        // The whole answer, so the scrubber sees every echo of the credential whole.
        super::outbound::headers::without_partial_content(&mut headers);
    }
    Ok(OutboundRequest {
        method: parsed.method.clone(),
        target: parsed.target.clone(),
        headers,
        credential_headers,
        credential_query,
        body: parsed.body.clone(),
        held: None,
        // Set by `send`, for the caller.
        party: super::outbound::Party::Agent,
    })
}

/// Phase 5: out through the validating outbound path; every redirect hop is put to
/// [`Decision::hop`]. One audit record per call: the decision, and the handle's use.
/// An error is judged as the answer it stands for would be ([`upstream_error`]).
async fn send(
    call: &Call<'_>,
    decision: &Decision<'_>,
    answer: &Answer<'_>,
    parsed: &Parsed,
    mut outbound: OutboundRequest,
) -> Result<OutboundResponse, ApiError> {
    let sent = answer.sent;
    // Its answer is counted against the caller's shares as it is read; its
    // connection carries no other caller's calls, nor the caller's calls that carry
    // another credential or none.
    outbound.held = Some(
        call.shared
            .answer_budget
            .count_for(call.caller, call.shared.operator_uid),
    );
    outbound.party = super::outbound::Party::Caller {
        owner: answer.owner,
        credential: decision
            .credential
            .as_ref()
            .and(sent.last())
            .map(|c| Arc::from(c.credential_id.as_str())),
    };
    // A hop that leaves the integration goes on without the credential the broker put
    // in, but the upstream wrote its URL: a `Location` that kept the query (or quoted
    // the credential) would carry it there all the same.
    let hop = |next: &Target| match decision.hop(next) {
        HopDecision::Allow {
            keep_credential: false,
        } if url_holds_credential(sent, next) => HopDecision::Deny,
        d => d,
    };
    let response = match call.shared.outbound.send(outbound, &hop).await {
        Ok(r) => r,
        Err(e) => {
            call.audit(&parsed.action, "error", &e.to_string());
            return Err(upstream_error(call, decision, answer, parsed, &e).await);
        }
    };
    // The credential this exchange carried: the last one sent.
    match (&parsed.handle, &decision.credential, sent.last()) {
        (Some(h), Some((e, _)), Some(current)) => call.shared.audit_handle_use(
            call.caller,
            call.policy,
            h,
            (e, &current.credential_id),
            &parsed.action,
            response.status,
        ),
        _ => call.audit(
            &parsed.action,
            "allowed",
            &format!("status {}", response.status),
        ),
    }
    Ok(response)
}

/// The error a failed exchange gives the caller. Its message can quote what the
/// upstream sent (a `Location`'s scheme or host, a `Content-Encoding` token): it is
/// judged as that answer's headers are in [`respond`]. A run of the call's credentials
/// (or the caller's other accounts') in it is a fragment hit; otherwise it is cut of
/// what [`cut_spread`] finds and scrubbed with the answer's view — every live value on
/// the node (stored ones too), but for a sandbox not those its request carried that are
/// not its own — not only with the caller's own values as an error of the caller's own
/// making is: a provider naming another tenant's key there would hand it over. Another
/// account's key found there is that account's `reflection` ([`unheld_in_answer`]), as
/// in an answer: a guess the caller had an upstream spell there is no free oracle.
async fn upstream_error(
    call: &Call<'_>,
    decision: &Decision<'_>,
    answer: &Answer<'_>,
    parsed: &Parsed,
    e: &super::outbound::OutboundError,
) -> ApiError {
    let message = e.to_string();
    let watch = fragment_hit::AnswerWatch::new(answer.sent, answer.others);
    super::credentials::protect_stored(call.shared).await;
    let view = View::answer(call.shared, call.caller, answer.carried);
    let cut = cut_spread(&view, &watch, message.as_bytes())
        .map(|cut| String::from_utf8_lossy(&cut).into_owned());
    watch.check(message.as_bytes());
    if let Some(entry) = watch.hit().and_then(|w| charged(decision, w)) {
        return fragment_refused(call, parsed, &entry, fragment_hit::Seen::Answer);
    }
    let (scrubbed, redactions) = view.scrub_str(cut.as_deref().unwrap_or(&message));
    if cut.is_some() || !redactions.is_empty() {
        let found = view.matching(message.as_bytes());
        unheld_in_answer(call, parsed, answer, &found).await;
    }
    ApiError::new(e.code(), scrubbed)
}

/// Whether `next`'s URL holds a credential the call sent, whole or a run of it, in any
/// of its forms (see [`crate::scrub::Fragments`]).
fn url_holds_credential(sent: &[Arc<Current>], next: &Target) -> bool {
    let url = format!(
        "{}://{}{}",
        next.scheme.as_str(),
        next.authority(),
        next.path_and_query
    );
    sent.iter()
        .filter_map(|c| c.fragments())
        .any(|f| f.holds_run(url.as_bytes()))
}

/// What an answer is judged by besides the call itself.
struct Answer<'a> {
    /// Whose handles the call used (the caller, or the host policy's owner).
    owner: Owner,
    /// Every live value the request carried (see [`inspect_outgoing`]).
    carried: &'a HashSet<LiveId>,
    /// Every credential the call sent, in order: the answer is cut of all their runs.
    sent: &'a [Arc<Current>],
    /// The credentials of the caller's other accounts (see `fragment_hit::Others`).
    others: &'a fragment_hit::Others,
    /// Why a 401 held for a rotation comes back without a retry (see [`AfterHold`]).
    not_replaced: Option<&'static str>,
}

impl<'a> Answer<'a> {
    /// What an exchange's answer (or error) is judged by, before any 401 was held.
    fn of(
        owner: Owner,
        carried: &'a HashSet<LiveId>,
        sent: &'a [Arc<Current>],
        others: &'a fragment_hit::Others,
    ) -> Self {
        Self {
            owner,
            carried,
            sent,
            others,
            not_replaced: None,
        }
    }
}

/// An answer ready while a rotator mints a key the answer's upstream may already hold
/// and list waits until the scrubber knows the key (see `rotation::minting`): an answer
/// to a call with the minting integration's handle, or from its hosts or its HTTP
/// rotator's. It waits at most [`minting::HOLD`]: a provider slower than that to
/// answer its create is treated as one that timed out (an audit record says so).
/// Returns the shapes of the keys whose outcome is unknown to it — the hold expired,
/// or a create of a concerned integration timed out — for [`redact_pending_keys`].
async fn after_minting(
    call: &Call<'_>,
    decision: &Decision<'_>,
    parsed: &Parsed,
) -> Vec<Arc<crate::scrub::shape::Shape>> {
    let shared = call.shared;
    if !shared.minting.any() {
        return Vec::new();
    }
    let host = &parsed.target.host;
    let concerned = |name: &str| {
        decision
            .credential
            .as_ref()
            .is_some_and(|(entry, _)| entry.integration == name)
            || shared
                .config
                .integrations
                .iter()
                .filter(|i| i.name.get_ref() == name)
                .any(|i| host_matches(i, host) || rotator_host(i).is_some_and(|h| &h == host))
    };
    let expired = !shared
        .minting
        .wait(&concerned, minting::HOLD.min(shared.timeout))
        .await;
    if expired {
        call.audit(&parsed.action, "allowed", "minting_hold_expired");
    }
    shared.minting.shapes(concerned, expired)
}

/// The pending-key pass (response → scrub → **this** → out): an answer made while a
/// concerned mint's outcome is unknown, cut of every token shaped like the value the
/// mint replaces (see `scrub::shape`), marked `[REDACTED:pending_credential]`; how many.
fn redact_pending_keys(
    shared: &Shared,
    shapes: &[Arc<crate::scrub::shape::Shape>],
    bytes: Vec<u8>,
) -> (Vec<u8>, usize) {
    if shapes.is_empty() {
        return (bytes, 0);
    }
    let shapes: Vec<&crate::scrub::shape::Shape> = shapes.iter().map(AsRef::as_ref).collect();
    let out =
        crate::scrub::shape::redact_shaped(&shared.scrubber, &shapes, "pending_credential", &bytes);
    (out.bytes, out.redactions.len())
}

/// The host of an integration's HTTP rotator, if it has one.
fn rotator_host(integration: &IntegrationConfig) -> Option<Host> {
    let http = integration.rotation.as_ref()?.http.as_ref()?;
    Target::parse(&http.url).ok().map(|t| t.host)
}

/// Phase 6: what leaves is what the scrubber saw.
async fn respond(
    call: &Call<'_>,
    decision: &Decision<'_>,
    answer: &Answer<'_>,
    parsed: &Parsed,
    response: OutboundResponse,
) -> Result<Response, ApiError> {
    let shared = call.shared;
    let pending = after_minting(call, decision, parsed).await;
    super::credentials::protect_stored(shared).await;
    if let Some((entry, _)) = &decision.credential {
        // Barred while the call was out (another of its calls hit): no answer at all.
        if shared
            .handles
            .account_barred(entry.owner, &entry.integration, &entry.account)
        {
            return Err(bar_refused(call, parsed));
        }
        refuse_unsafe_for_credential(call, parsed, &response)?;
    }
    let mut scrub = AnswerScrub {
        shared: shared.clone(),
        // Every live value on the node (every tenant's), but for a sandbox not those
        // its request carried that are not its own: scrubbed of a value it sent, an
        // upstream that echoes what it is sent would tell it which of its guesses is
        // another tenant's live credential; not scrubbed of one it never sent, a
        // provider's answer (a key listing) would hand it another tenant's.
        view: View::answer(shared, call.caller, answer.carried),
        // Runs of the credentials the call sent (a retried call's upstream saw two) and
        // of the caller's other accounts', looked for in every part of the answer after
        // the whole values are scrubbed: one is a hit, and the answer is refused whole.
        watch: fragment_hit::AnswerWatch::new(answer.sent, answer.others),
        pending,
        echo: decision.credential.as_ref().map(|(entry, _)| Echo {
            of: answer
                .sent
                .iter()
                .map(|c| c.credential_id.clone())
                .collect(),
            entry: entry.clone(),
            policy: call.policy.to_owned(),
            caller: call.caller.clone(),
            handle: parsed
                .handle
                .as_deref()
                .map(|h| shared.audit.fingerprint(h)),
        }),
        sanitize: parsed.sanitize,
        not_replaced: answer.not_replaced,
    };
    // CPU-bound on a large answer (tens of seconds for 10 MiB of token starts on a debug
    // build, seconds to write 10 MiB of control characters as JSON escapes): off the
    // async workers, which serve every tenant's calls (two such answers held both and
    // stopped the broker), in one of the caller's places of text work, held until the
    // work ends.
    let mut waiting = Unscrubbed {
        shared: shared.clone(),
        echo: scrub.echo.take(),
        response: Some(response),
    };
    let working = super::text_gate::wait_for_work(shared, call.caller).await;
    let (echo, response) = waiting.take();
    scrub.echo = echo;
    let scrubbed = tokio::task::spawn_blocking(move || {
        let _working = working;
        scrub.run(response)
    })
    .await
    .map_err(|_| ApiError::new(Code::Internal, "the answer's scrub task failed"))?;
    if let Some(cut) = scrubbed.pending_cut {
        call.audit(
            &parsed.action,
            "allowed",
            &format!("pending_key_shape_pass redacted {cut}"),
        );
    }
    if let Some(found) = &scrubbed.exposed {
        unheld_in_answer(call, parsed, answer, found).await;
    }
    if let Some(entry) = scrubbed.hit.and_then(|w| charged(decision, w)) {
        return Err(fragment_refused(
            call,
            parsed,
            &entry,
            fragment_hit::Seen::Answer,
        ));
    }
    let body = match scrubbed.held {
        Ok(Some(held)) => {
            axum::body::Body::new(super::server::HeldAnswer::new(scrubbed.json, held))
        }
        Ok(None) => axum::body::Body::from(scrubbed.json),
        Err(_) => {
            let e = crate::broker::outbound::OutboundError::AnswerBudgetSpent;
            call.audit(&parsed.action, "error", &e.to_string());
            return Err(ApiError::new(Code::Unavailable, e.to_string()));
        }
    };
    Ok(([(http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Phase 6's work on the answer, on owned state so that it runs on the blocking pool.
struct AnswerScrub {
    shared: AppState,
    /// What the caller may see (see `text_gate::View::answer`).
    view: View,
    watch: fragment_hit::AnswerWatch,
    /// Shapes of keys being minted (see [`redact_pending_keys`]).
    pending: Vec<Arc<crate::scrub::shape::Shape>>,
    /// For a call with a handle: the credentials whose whole echo is a `reflection`.
    echo: Option<Echo>,
    sanitize: Option<crate::sanitize::Mode>,
    not_replaced: Option<&'static str>,
}

/// The credentials (ids) a call with a handle sent, and who to name if the upstream
/// echoes one whole: raised from the scrub's own task, which runs to its end even when
/// the call timed out waiting for it (the upstream saw the key and sent it back however
/// its caller is answered).
struct Echo {
    of: Vec<String>,
    entry: Arc<Entry>,
    policy: String,
    caller: Caller,
    /// The keyed fingerprint of the call's handle.
    handle: Option<String>,
}

impl Echo {
    /// The account's integration's `on_reflection`, if `response` holds a credential
    /// the call sent whole.
    fn signal_if_in(&self, shared: &AppState, response: &OutboundResponse) {
        let entry = &self.entry;
        if !self
            .of
            .iter()
            .any(|id| super::sightings::reflected(shared, id, &response.body, &response.headers))
        {
            return;
        }
        shared.sensor.scrub_hit(&entry.integration, &entry.account);
        super::rotation::detect::signal(
            shared,
            &super::rotation::detect::Signal {
                detector: super::rotation::detect::Detector::Reflection,
                trigger: "reflection",
                integration: &entry.integration,
                account: &entry.account,
                policy: &self.policy,
                caller: Some(&self.caller),
                seen: SeenAt::Response,
                handle: self.handle.clone(),
                execution: Some(&entry.execution),
            },
        );
    }
}

/// An answer waiting for a place of text work. Dropped with its call (timed out, its
/// caller gone) before it got one, it is still checked for an echo of the call's key,
/// on the blocking pool: whether the upstream sent the key back does not depend on
/// whether the caller waited for the answer.
struct Unscrubbed {
    shared: AppState,
    echo: Option<Echo>,
    response: Option<OutboundResponse>,
}

impl Unscrubbed {
    /// The answer, a place found for its scrub.
    fn take(&mut self) -> (Option<Echo>, OutboundResponse) {
        let response = self.response.take().expect("taken once");
        (self.echo.take(), response)
    }
}

impl Drop for Unscrubbed {
    fn drop(&mut self) {
        if let (Some(echo), Some(response)) = (self.echo.take(), self.response.take())
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let shared = self.shared.clone();
            runtime.spawn_blocking(move || echo.signal_if_in(&shared, &response));
        }
    }
}

/// The answer as it may leave, and what the call learnt from it.
struct ScrubbedAnswer {
    /// The JSON object of `status`, `headers`, `credential_error`, and `body` or
    /// `body_base64` (and `sanitize`), written out.
    json: Vec<u8>,
    /// How many pending keys' shapes were cut, if the pass ran.
    pending_cut: Option<usize>,
    /// When anything was redacted: every live value of the view the answer holds
    /// (maybe another account's credential: [`unheld_in_answer`]).
    exposed: Option<HashSet<LiveId>>,
    /// Whose run the first fragment hit was of.
    hit: Option<fragment_hit::Whose>,
    /// The answer's count, now of `json`'s bytes (`Err`: past the caller's share).
    held: Result<Option<super::outbound::Held>, crate::share::Refused>,
}

impl AnswerScrub {
    fn run(self, mut response: OutboundResponse) -> ScrubbedAnswer {
        let Self {
            shared,
            view,
            watch,
            pending,
            echo,
            sanitize,
            not_replaced,
        } = self;
        let pieces = |text: String| watch.pass(text);
        let unpacked = cut_packed(&view, &watch, &response.body, &mut response.held);
        let unpacked_body = unpacked.as_deref().unwrap_or(&response.body);
        let unspread = cut_spread(&view, &watch, unpacked_body);
        let mut body = view.scrub(unspread.as_deref().unwrap_or(unpacked_body));
        let (bytes, mut pending_cut) = redact_pending_keys(&shared, &pending, body.bytes);
        body.bytes = bytes;
        // A header may spell a value with some of its characters escaped, or packed, as
        // the body may (its runs are bounded by the header's size; none is counted).
        let header_cut = |text: &str| {
            let unpacked = cut_packed(&view, &watch, text.as_bytes(), &mut None);
            let base = unpacked.as_deref().unwrap_or(text.as_bytes());
            cut_spread(&view, &watch, base)
                .or(unpacked)
                .map(|cut| String::from_utf8_lossy(&cut).into_owned())
        };
        let (mut headers, headers_redacted) =
            scrub_headers(&view, &response.headers, &header_cut, &pieces);
        if !pending.is_empty() {
            for v in headers.values_mut() {
                if let Value::String(text) = v {
                    let (cut, n) =
                        redact_pending_keys(&shared, &pending, std::mem::take(text).into_bytes());
                    *text = String::from_utf8_lossy(&cut).into_owned();
                    pending_cut += n;
                }
            }
        }
        let exposed = (unpacked.is_some()
            || unspread.is_some()
            || headers_redacted
            || !body.redactions.is_empty())
        .then(|| live_values_in(&view, &response));
        let mut out = serde_json::Map::new();
        out.insert("status".into(), response.status.into());
        out.insert("headers".into(), Value::Object(headers));
        if let Some(why) = not_replaced {
            out.insert(
                "credential_error".into(),
                serde_json::json!({"code": "credential_dead", "reason": why}),
            );
        }
        watch.check(&body.bytes);
        match String::from_utf8(body.bytes) {
            Ok(text) => match sanitize {
                Some(mode) => {
                    // The default pipeline, learned stage included, as `/v1/sanitize`.
                    let opts = crate::sanitize::Options {
                        mode,
                        spotlight: false,
                        ..Default::default()
                    };
                    let s = crate::sanitize::sanitize(&text, &opts);
                    // Scrubbed again: normalising (full-width and other look-alikes to
                    // ASCII) can spell out a credential (or a run of one) the first scrub
                    // did not see.
                    let v = view.scrub_json(serde_json::to_value(&s).unwrap_or_default());
                    let mut v = map_strings(v, &pieces);
                    let text = v
                        .as_object_mut()
                        .and_then(|o| o.remove("text"))
                        .unwrap_or(Value::Null);
                    out.insert("body".into(), text);
                    out.insert("sanitize".into(), v);
                }
                None => {
                    out.insert("body".into(), Value::String(text));
                }
            },
            Err(e) => {
                out.insert(
                    "body_base64".into(),
                    base64::engine::general_purpose::STANDARD
                        .encode(e.into_bytes())
                        .into(),
                );
            }
        }
        let json = serde_json::to_vec(&out).unwrap_or_default();
        // Last, once the answer was read for every live value it holds. The signal's
        // action may end the caller at once (past the compromise budget), revoking its
        // handles; the key this call was given stays its own all the same
        // (`unheld_in_answer` leaves out what the call injected).
        if let Some(echo) = &echo {
            echo.signal_if_in(&shared, &response);
        }
        // What stays held until the caller has read it is the JSON (up to six times the
        // answer: control characters are escaped), counted in the answer's place.
        let held = response.held.take().map_or(Ok(None), |mut held| {
            held.clear();
            held.grow(json.len() as u64).map(|()| Some(held))
        });
        ScrubbedAnswer {
            held,
            json,
            pending_cut: (!pending.is_empty()).then_some(pending_cut),
            exposed,
            hit: watch.hit(),
        }
    }
}

/// Every live value of `view` that `response` holds, in its body or its headers' values.
fn live_values_in(view: &View, response: &OutboundResponse) -> HashSet<LiveId> {
    let mut found = view.matching(&response.body);
    let header_values: Vec<u8> = response
        .headers
        .iter()
        .flat_map(|(_, v)| v.bytes().chain(std::iter::once(b'\n')))
        .collect();
    found.extend(view.matching(&header_values));
    found
}

/// Phase 6a: `body` cut of what a scrub of the caller's view finds in it once its NUL
/// bytes and `\u0000` escapes are dropped and its other JSON `\uXXXX` escapes and HTML
/// numeric references decoded, and of runs of the credentials `watch` looks for found
/// there: a value spelled in UTF-32 (or UTF-16 at any alignment, or any other spacing
/// of its characters with NULs), or with any of its characters escaped in any mix, is
/// whole in that view, and the bytes that spell it are redacted in the body itself.
/// In a body that declares quoted-printable (a raw mail message), the view also drops
/// its soft line breaks and decodes its `=XX` (see `scrub::spread`): a value cut at
/// column 76, or with its `=` written `=3D`, is whole there. The view also drops
/// characters that take no room (U+200B and kin, U+FEFF, U+00AD) and the line breaks
/// of a hard wrap every few characters, where a `%XX` spells an unreserved character
/// its percent-escapes, and where one is written so HTML's named references of ASCII
/// punctuation (`&lowbar;`); where a `\/` or a JSON `\n` of wrapped text is, JSON's
/// short escapes (PHP's base64 with `\/`, wrapped base64 in a JSON string); where one
/// spells printable ASCII, UTF-7's `+…-` segments and string literals' escapes (`\x6b`,
/// `\153`, `\U0000006b`, `\u{6b}`, `\N{LATIN SMALL LETTER K}`) and look-alikes NFKC reads
/// as ASCII (`ｋ`, `𝐤`). `None` (and three `memchr`s, seven `memmem`s, a
/// `memchr3` and a step per line, per `%`, per `&`, per `+`, per `\` and per `\n` of
/// work) when the body has none of these, or nothing to cut.
fn cut_spread(view: &View, watch: &fragment_hit::AnswerWatch, body: &[u8]) -> Option<Vec<u8>> {
    crate::scrub::cut_spread(body, |squeezed| {
        let mut spans: Vec<_> = view
            .scrub(squeezed)
            .redactions
            .iter()
            .map(|r| (r.offset..r.offset + r.len, r.family))
            .collect();
        let whole: Vec<_> = spans.iter().map(|(r, _)| r.clone()).collect();
        for (whose, f) in watch.watched() {
            for run in f.spans(squeezed) {
                // A run inside a whole value the view scrubs is that value's echo.
                if !whole
                    .iter()
                    .any(|w| w.start <= run.start && run.end <= w.end)
                {
                    watch.mark(whose.clone());
                }
                spans.push((run, "live_secret"));
            }
        }
        spans
    })
}

/// Phase 6a, first: `body` with every packed run (base64 of a gzip stream, a block of
/// uuencoded lines: see `scrub::packed`) redacted whole where what it decodes to holds
/// a live value of the caller's view or a run of a credential `watch` looks for, or
/// where the packed view's bounds stopped its decoding (fail closed: its tail was not
/// read). Each decoded piece is counted in `held` (the caller's answer share) as a
/// content coding's layers are, until the answer's count is set to its JSON. `None`
/// (two `memmem`s and a step per line) when the body has no packed run, or nothing to
/// cut.
fn cut_packed(
    view: &View,
    watch: &fragment_hit::AnswerWatch,
    body: &[u8],
    held: &mut Option<super::outbound::Held>,
) -> Option<Vec<u8>> {
    let mut room = |n: usize| held.as_mut().is_none_or(|h| h.grow(n as u64).is_ok());
    crate::scrub::cut_packed(body, &mut room, |decoded| {
        view.holds_packed(decoded) || watch.watched().any(|(_, f)| !f.spans(decoded).is_empty())
    })
}

/// Phase 6b: a credential of an account the caller holds no handle for, in the answer
/// but not in what the caller sent (a provider's key listing; a guess the caller
/// planted in stored content and fetched back): the value is exposed. The caller gets
/// it redacted; its account gets its integration's `on_reflection`, the audit record
/// naming the caller (`seen: "response_unheld"`), so a value confirmed that way is
/// rotated. `found`: the live values of the caller's view the answer holds
/// ([`live_values_in`]).
async fn unheld_in_answer(
    call: &Call<'_>,
    parsed: &Parsed,
    answer: &Answer<'_>,
    found: &HashSet<LiveId>,
) {
    let shared = call.shared;
    let injected: Vec<&str> = answer
        .sent
        .iter()
        .map(|c| c.credential_id.as_str())
        .collect();
    let ids = super::sightings::foreign(shared, answer.owner, found, answer.carried, &injected);
    if ids.is_empty() {
        return;
    }
    for (integration, account) in super::sightings::accounts_of(shared, &ids).await {
        super::rotation::detect::signal(
            shared,
            &super::rotation::detect::Signal {
                detector: super::rotation::detect::Detector::Reflection,
                trigger: "reflection",
                integration: &integration,
                account: &account,
                policy: call.policy,
                caller: Some(call.caller),
                seen: SeenAt::ResponseUnheld,
                handle: parsed
                    .handle
                    .as_deref()
                    .map(|h| shared.audit.fingerprint(h)),
                execution: None,
            },
        );
    }
}

/// What a call that carried a credential does not get back: a part of a
/// representation (206, a `Content-Range`, `multipart/byteranges`; an upstream may
/// honour a range it was not asked for, or one a redirect carried), where a piece of an
/// echoed credential matches no whole form; and a body the scrubber cannot read as text
/// (unless `broker.allow_binary_responses`).
fn refuse_unsafe_for_credential(
    call: &Call<'_>,
    parsed: &Parsed,
    response: &OutboundResponse,
) -> Result<(), ApiError> {
    let content_type = content_type(&response.headers);
    let partial = response.status == 206
        || response.headers.iter().any(|(k, _)| k == "content-range")
        || content_type.is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/byteranges")
        });
    if partial {
        call.audit(&parsed.action, "partial_response", "a part of an answer");
        return Err(ApiError::new(
            Code::PartialResponse,
            "the upstream answered with part of a representation (206, Content-Range or \
             multipart/byteranges): refused for a call made with a handle, since a piece of \
             an echoed credential matches no whole value the scrubber looks for. Ask for \
             the whole resource (the broker does not forward Range or If-Range with a \
             credential).",
        ));
    }
    if !call.shared.config.broker.allow_binary_responses
        && !readable_text(&response.body, content_type)
    {
        call.audit(
            &parsed.action,
            "unreadable_response",
            "a body that is not text",
        );
        return Err(ApiError::new(
            Code::UnreadableResponse,
            "the upstream's body is not text the scrubber can read (UTF-8, or UTF-16 with a \
             byte-order mark or charset): refused for a call made with a handle, since a \
             credential inside it could not be found (broker.allow_binary_responses)",
        ));
    }
    Ok(())
}

/// Every string in `value` passed through `f`.
fn map_strings(value: Value, f: &impl Fn(String) -> String) -> Value {
    match value {
        Value::String(s) => Value::String(f(s)),
        Value::Array(a) => Value::Array(a.into_iter().map(|v| map_strings(v, f)).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (f(k), map_strings(v, f)))
                .collect(),
        ),
        other => other,
    }
}

/// Response headers, names and values cut by `unspread` (what [`cut_spread`] finds
/// with the escapes decoded), scrubbed (an upstream may reflect a URL into either) and
/// passed through `pieces` (runs of the call's credential), repeated names joined with
/// `, `; and whether anything was redacted.
fn scrub_headers(
    view: &View,
    headers: &[(String, String)],
    unspread: &impl Fn(&str) -> Option<String>,
    pieces: &impl Fn(String) -> String,
) -> (serde_json::Map<String, Value>, bool) {
    let mut out = serde_json::Map::new();
    let mut redacted = false;
    for (k, v) in headers {
        let (k_cut, v_cut) = (unspread(k), unspread(v));
        redacted |= k_cut.is_some() || v_cut.is_some();
        let (k, in_name) = view.scrub_str(k_cut.as_deref().unwrap_or(k));
        let (v, in_value) = view.scrub_str(v_cut.as_deref().unwrap_or(v));
        redacted |= !in_name.is_empty() || !in_value.is_empty();
        let (k, v) = (pieces(k), pieces(v));
        match out.get_mut(&k) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                out.insert(k, Value::String(v));
            }
        }
    }
    (out, redacted)
}

fn content_type(headers: &[(String, String)]) -> Option<&str> {
    headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str())
}

/// Whether the scrubber can read `body` as text: UTF-8 (empty included), or UTF-16
/// that says so (a byte-order mark, or `charset=utf-16`/`utf-16le`/`utf-16be` in
/// `content_type`) and decodes without a lone surrogate. Anything else (archives,
/// images, compressed or encrypted bytes) may hold a credential in a form no scrubber
/// finds.
fn readable_text(body: &[u8], content_type: Option<&str>) -> bool {
    if std::str::from_utf8(body).is_ok() {
        return true;
    }
    let charset = content_type
        .and_then(|ct| {
            ct.split(';')
                .skip(1)
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("charset"))
                .map(|(_, v)| v.trim().trim_matches('"').to_ascii_lowercase())
        })
        .unwrap_or_default();
    let (big_endian, units) = match (body, charset.as_str()) {
        ([0xFF, 0xFE, rest @ ..], _) => (false, rest),
        ([0xFE, 0xFF, rest @ ..], _) => (true, rest),
        (_, "utf-16be") => (true, body),
        (_, "utf-16" | "utf-16le") => (false, body),
        _ => return false,
    };
    if units.len() % 2 != 0 {
        return false;
    }
    let units = units.chunks_exact(2).map(|c| {
        if big_endian {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_le_bytes([c[0], c[1]])
        }
    });
    char::decode_utf16(units).all(|c| c.is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hop's URL holds the credential whole, a run of it in any case, or its percent
    /// form; a URL of other text does not.
    #[test]
    fn a_hop_url_holding_the_credential_or_a_run_of_it_is_seen() {
        const KEY: &str = "qk_8mZr2Lw9Xc4Tn7Vb1Hs6Jd3Fg5Ky0PeW";
        let meta = crate::vault::CredentialMeta {
            id: "cred_1".into(),
            integration: "svc".into(),
            account: "bot".into(),
            status: crate::vault::Status::Active,
            created: std::time::SystemTime::now(),
            expires: None,
            rotated_from: None,
            grace_until: None,
            revoked: None,
        };
        let sent = vec![Arc::new(Current::new(
            &meta,
            Secret::new(KEY.as_bytes().to_vec()),
        ))];
        let holds = |url: &str| url_holds_credential(&sent, &Target::parse(url).expect("url"));
        assert!(holds(&format!("https://sink.test/landed?api_key={KEY}")));
        assert!(holds(&format!(
            "https://sink.test/x?k={}",
            &KEY[5..20].to_ascii_uppercase()
        )));
        assert!(holds(&format!("http://echo.test/{}", &KEY[10..])));
        assert!(!holds("https://sink.test/landed?page=2&q=ordinary+text"));
    }

    fn integration(auth: Auth) -> IntegrationConfig {
        let text = r#"
[[integration]]
name = "svc"
auth = "bearer"
hosts = ["api.svc.test", "*.svc.test"]
"#;
        let mut config = crate::config::Config::parse(text, "test").expect("config");
        let mut i = config.integrations.remove(0);
        i.auth_kind = auth;
        i
    }

    fn h(name: &str) -> (HeaderName, HeaderValue) {
        super::super::outbound::headers::header(name, "x").expect("header")
    }

    #[test]
    fn collisions_are_found_in_any_case() {
        let t = |u: &str| Target::parse(u).expect("url");
        let bearer = integration(Auth::Bearer);
        let plain = t("https://api.svc.test/x?a=1");
        assert!(collision(&bearer, &[h("Authorization")], &plain).is_some());
        assert!(collision(&bearer, &[h("AUTHORIZATION")], &plain).is_some());
        assert!(collision(&bearer, &[h("Proxy-Authorization")], &plain).is_some());
        assert!(collision(&bearer, &[h("X-Other")], &plain).is_none());
        let header = integration(Auth::Header("x-api-key".into()));
        assert!(collision(&header, &[h("X-API-KEY")], &plain).is_some());
        assert!(collision(&header, &[h("X_Api_Key")], &plain).is_some());
        assert!(collision(&header, &[h("x_api-KEY")], &plain).is_some());
        assert!(collision(&header, &[h("x-api-keys")], &plain).is_none());
        assert!(collision(&bearer, &[h("Proxy_Authorization")], &plain).is_some());
        let query = integration(Auth::Query("api_key".into()));
        assert!(collision(&query, &[], &t("https://api.svc.test/x?API_KEY=1")).is_some());
        assert!(collision(&query, &[], &t("https://api.svc.test/x?a=1&api%5Fkey=1")).is_some());
        assert!(collision(&query, &[], &t("https://api.svc.test/x?api.key=1")).is_some());
        assert!(collision(&query, &[], &t("https://api.svc.test/x?api%20key=1")).is_some());
        assert!(collision(&query, &[], &t("https://api.svc.test/x?api[key=1")).is_some());
        assert!(collision(&query, &[], &t("https://api.svc.test/x?apikey=1")).is_none());
        assert!(collision(&query, &[], &t("https://api.svc.test/x?api_keys=1")).is_none());
    }

    fn policy(text: &str) -> PolicyConfig {
        let mut config = crate::config::Config::parse(text, "test").expect("config");
        config.policies.remove(0)
    }

    #[test]
    fn reach_is_the_policys_names_and_cidrs() {
        let p = policy(
            r#"
[egress]
exception_cidrs = ["203.0.113.0/24"]
[[policy]]
name = "p"
allow_domains = ["allowed.test", "*.wild.test"]
allow_cidrs = ["203.0.113.0/28"]
"#,
        );
        let reach = Reach { policy: Some(&p) };
        let t = |u: &str| Target::parse(u).expect("url").host;
        for ok in [
            "https://allowed.test/x?q=1",
            "https://ALLOWED.test./",
            "https://a.wild.test/",
            "https://a.b.wild.test/",
            "http://203.0.113.5/",
            "http://[::ffff:203.0.113.5]/",
            "http://3405803781/",
        ] {
            assert!(reach.allows(&t(ok)), "{ok}");
        }
        for no in [
            "https://other.test/",
            "https://allowed.test.evil/",
            "https://wild.test/",
            "https://sub.allowed.test/",
            "http://203.0.113.16/",
            "http://198.51.100.7/",
            "http://[2001:db8::1]/",
        ] {
            assert!(!reach.allows(&t(no)), "{no}");
        }
        assert!(!Reach { policy: None }.allows(&t("https://allowed.test/")));
    }

    #[test]
    fn redirect_hops_are_judged_as_requests() {
        let p = policy("[[policy]]\nname = \"p\"\nallow_domains = [\"allowed.test\"]\n");
        let t = |u: &str| Target::parse(u).expect("url");
        let open = Decision {
            credential: None,
            reach: Reach { policy: Some(&p) },
            readonly: true,
            has_body: false,
        };
        let free = HopDecision::Allow {
            keep_credential: false,
        };
        assert_eq!(open.hop(&t("https://allowed.test/next")), free);
        assert_eq!(open.hop(&t("https://other.test/next")), HopDecision::Deny);
        let with_body = Decision {
            has_body: true,
            ..open
        };
        assert_eq!(
            with_body.hop(&t("https://allowed.test/next")),
            HopDecision::Deny
        );
    }

    #[test]
    fn text_is_utf8_or_declared_utf16() {
        let le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("héllo".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain("héllo".encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        let be_bare: Vec<u8> = "héllo".encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert!(readable_text(b"", None));
        assert!(readable_text("plain ü".as_bytes(), None));
        assert!(readable_text(&le, None));
        assert!(readable_text(&be, Some("text/plain")));
        assert!(readable_text(
            &be_bare,
            Some("text/plain; charset=\"UTF-16BE\"")
        ));
        assert!(!readable_text(
            &be_bare[1..],
            Some("text/plain; charset=utf-16be")
        ));
        // A lone surrogate is not text.
        assert!(!readable_text(&[0xFF, 0xFE, 0x00, 0xD8, 0x41, 0x00], None));
        // Archives and images.
        assert!(!readable_text(
            b"PK\x03\x04\x14\x00\x00\x00\x08\x00\xff\xfe",
            None
        ));
        assert!(!readable_text(
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\xff",
            None
        ));
        assert!(!readable_text(
            b"\x1f\x8b\x08\x00\x00\x00",
            Some("text/plain")
        ));
    }

    fn with_origin(schemes: &str, ports: &str) -> IntegrationConfig {
        let text = format!(
            "[[integration]]\nname = \"svc\"\nauth = \"bearer\"\nhosts = [\"api.svc.test\"]\n\
             {schemes}\n{ports}\n"
        );
        let mut config = crate::config::Config::parse(&text, "test").expect("config");
        config.integrations.remove(0)
    }

    #[test]
    fn credentials_go_to_the_integrations_schemes_and_ports_only() {
        let t = |u: &str| Target::parse(u).expect("url");
        let default = with_origin("", "");
        assert_eq!(default.schemes, ["https"]);
        assert_eq!(default.ports, [443]);
        assert!(origin_matches(&default, &t("https://api.svc.test/x")));
        assert!(origin_matches(&default, &t("https://api.svc.test:443/x")));
        for no in [
            "https://api.svc.test:8443/x",
            "http://api.svc.test/x",
            "http://api.svc.test:443/x",
        ] {
            assert!(!origin_matches(&default, &t(no)), "{no}");
        }
        // Cleartext only when listed; its port comes with it unless ports are given.
        let http = with_origin("schemes = [\"https\", \"HTTP\"]", "");
        assert_eq!(http.ports, [443, 80]);
        assert!(origin_matches(&http, &t("http://api.svc.test/x")));
        let custom = with_origin("schemes = [\"http\"]", "ports = [8080]");
        assert!(origin_matches(&custom, &t("http://api.svc.test:8080/x")));
        assert!(!origin_matches(&custom, &t("http://api.svc.test/x")));
        assert!(!origin_matches(&custom, &t("https://api.svc.test:8080/x")));
        // A redirect hop keeps the credential only on the integration's origins.
        let p = policy("[[policy]]\nname = \"p\"\n");
        let entry = Arc::new(Entry {
            integration: "svc".into(),
            account: "a".into(),
            owner: Owner::Host { uid: 0 },
            execution: "e".into(),
            expires: std::time::Instant::now(),
            expires_at: std::time::SystemTime::now(),
        });
        let decision = Decision {
            credential: Some((entry, &default)),
            reach: Reach { policy: Some(&p) },
            readonly: true,
            has_body: false,
        };
        assert_eq!(
            decision.hop(&t("https://api.svc.test/next")),
            HopDecision::Allow {
                keep_credential: true
            }
        );
        for no in ["https://api.svc.test:8443/next", "http://api.svc.test/next"] {
            assert_eq!(decision.hop(&t(no)), HopDecision::Deny, "{no}");
        }
        // Nor on a hop whose query names another method: a POST's 307 to it stays a
        // POST, which Symfony reads as the method named.
        let post = Decision {
            readonly: false,
            has_body: true,
            ..decision
        };
        assert_eq!(
            post.hop(&t("https://api.svc.test/next?a=1&_Method=DELETE")),
            HopDecision::Deny
        );
        for (bad, key) in [
            ("schemes = []", "schemes"),
            ("schemes = [\"ftp\"]", "schemes[0]"),
        ] {
            let text = format!(
                "[[integration]]\nname = \"svc\"\nauth = \"bearer\"\nhosts = [\"a.test\"]\n{bad}\n"
            );
            let e = crate::config::Config::parse(&text, "test").expect_err(bad);
            assert!(e.to_string().contains(key), "{bad}: {e}");
        }
    }

    fn parsed(url: &str, headers: &[(&str, &str)], body: &str) -> Parsed {
        parse(RequestIn {
            handle: None,
            method: "GET".into(),
            url: url.into(),
            headers: HeadersIn(
                headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            body: (!body.is_empty()).then(|| body.to_owned()),
            body_base64: None,
            sanitize: None,
        })
        .expect("parsed")
    }

    #[test]
    fn a_request_names_at_most_max_headers() {
        let with = |n: usize| {
            parse(RequestIn {
                handle: None,
                method: "GET".into(),
                url: "https://api.svc.test/".into(),
                headers: HeadersIn((0..n).map(|i| (format!("x-h{i}"), "1".into())).collect()),
                body: None,
                body_base64: None,
                sanitize: None,
            })
        };
        assert!(with(MAX_HEADERS).is_ok());
        let e = with(40_000).err().expect("refused");
        assert_eq!(e.code, Code::BadRequest);
        assert_eq!(e.message, "40000 headers: a request names at most 100");
    }

    /// A request's `headers` are read one entry at a time: a value that is not a string,
    /// a name given twice or a name past [`MAX_HEADERS`] ends the read there, before the
    /// rest of the body is parsed into anything.
    #[test]
    fn headers_are_read_entry_by_entry_and_refused_early() {
        let read = |headers: &str| {
            serde_json::from_str::<RequestIn>(&format!(
                r#"{{"method":"GET","url":"https://a.test/","headers":{headers}}}"#
            ))
            .map(|r| r.headers.0)
        };
        let ok = read(r#"{"X-B":"2","x-a":"1","X-A":"3"}"#).expect("headers");
        let names: Vec<&str> = ok.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["X-B", "x-a", "X-A"]);
        // The value tree after the first element is never read: the error is at its start.
        let tree = format!(r#"{{"x":[{}0]}}"#, "0,".repeat(100_000));
        let e = read(&tree).expect_err("refused");
        assert!(e.column() < 80, "{e}");
        let e = read(r#"{"x":"1","x":"2"}"#).expect_err("refused");
        assert!(e.to_string().contains("given twice"), "{e}");
        let many: Vec<String> = (0..=MAX_HEADERS)
            .map(|i| format!(r#""h{i}":"1""#))
            .collect();
        let e = read(&format!("{{{}}}", many.join(","))).expect_err("refused");
        assert!(e.to_string().contains("at most 100"), "{e}");
        let fits: Vec<String> = (0..MAX_HEADERS).map(|i| format!(r#""h{i}":"1""#)).collect();
        assert_eq!(
            read(&format!("{{{}}}", fits.join(",")))
                .expect("fits")
                .len(),
            MAX_HEADERS
        );
    }

    #[test]
    fn method_overrides_in_query_and_form_are_found() {
        let form = [("Content-Type", "application/x-www-form-urlencoded")];
        let multipart = [("Content-Type", "multipart/form-data; boundary=b")];
        let found = |p: &Parsed| method_override(p);
        let u = "https://api.svc.test/items/1";
        assert_eq!(
            found(&parsed(&format!("{u}?_method=DELETE"), &[], "")),
            Some("query parameter")
        );
        assert_eq!(
            found(&parsed(&format!("{u}?a=1&_METHOD=put"), &[], "")),
            Some("query parameter")
        );
        assert_eq!(
            found(&parsed(&format!("{u}?a=1&%5Fmethod=put"), &[], "")),
            Some("query parameter")
        );
        assert_eq!(
            found(&parsed(u, &form, "a=1&_method=DELETE")),
            Some("form field")
        );
        assert_eq!(
            found(&parsed(
                u,
                &multipart,
                "--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--"
            )),
            Some("form field")
        );
        assert_eq!(
            found(&parsed(&format!("{u}?method=DELETE&x_method=1"), &[], "")),
            None
        );
        assert_eq!(
            found(&parsed(
                &format!("{u}?X-HTTP-Method-Override=DELETE"),
                &[],
                ""
            )),
            Some("query parameter")
        );
        // Rack reads a POST body without a media type as a form; servers strip the
        // blanks around a value.
        for headers in [
            &[][..],
            &[("Content-Type", "")][..],
            &[("Content-Type", " application/x-www-form-urlencoded")][..],
            &[(
                "Content-Type",
                "\tApplication/X-WWW-Form-URLEncoded ; charset=utf-8",
            )][..],
            &[
                ("Content-Type", "text/plain"),
                ("content-type", "application/x-www-form-urlencoded"),
            ][..],
        ] {
            assert_eq!(
                found(&parsed(u, headers, "_method=DELETE")),
                Some("form field"),
                "{headers:?}"
            );
        }
        assert_eq!(
            found(&parsed(
                u,
                &[("Content-Type", "text/plain")],
                "_method=DELETE"
            )),
            None,
            "a text body is not a form"
        );
        assert_eq!(
            found(&parsed(
                u,
                &[("Content-Type", " multipart/form-data; boundary=b")],
                "--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--"
            )),
            Some("form field")
        );
        // Laravel reads input from a JSON body too.
        assert_eq!(
            found(&parsed(
                u,
                &[("Content-Type", "application/json")],
                "{\"_method\":\"DELETE\"}"
            )),
            Some("JSON field")
        );
        assert_eq!(
            found(&parsed(u, &[], "{\"name\":\"_method\"}")),
            None,
            "a value is not a field"
        );
        // A `Content-Type` the request's `Connection` names is not sent: Rack then reads
        // the body as a form.
        assert_eq!(
            found(&parsed(
                u,
                &[
                    ("Content-Type", "text/plain"),
                    ("Connection", "Content-Type")
                ],
                "_method=DELETE"
            )),
            Some("form field")
        );
        // PHP ends a media type at a space.
        assert_eq!(
            found(&parsed(
                u,
                &[("Content-Type", "application/x-www-form-urlencoded x")],
                "_method=DELETE"
            )),
            Some("form field")
        );
        // Express's body-parser drops a byte order mark and decodes a JSON body in any
        // `utf-*` charset.
        let bom = |text: &str| format!("\u{feff}{text}");
        assert_eq!(
            found(&parsed(u, &form, &bom("_method=DELETE"))),
            Some("form field")
        );
        let json = "{\"_method\":\"DELETE\"}";
        let wide = |units: Vec<u8>| Parsed {
            body: Bytes::from(units),
            ..parsed(
                u,
                &[("Content-Type", "application/json; charset=utf-16le")],
                "",
            )
        };
        assert_eq!(
            found(&parsed(
                u,
                &[("Content-Type", "application/json")],
                &bom(json)
            )),
            Some("JSON field")
        );
        for units in [
            bom(json)
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect(),
            json.encode_utf16().flat_map(u16::to_be_bytes).collect(),
            json.chars()
                .flat_map(|c| u32::from(c).to_le_bytes())
                .collect::<Vec<u8>>(),
        ] {
            assert_eq!(found(&wide(units)), Some("JSON field"));
        }
        // Rack unescapes a quoted part name, and names a part by its `Content-ID`.
        for body in [
            "--b\r\nContent-Disposition: form-data; name=\"_meth\\od\"\r\n\r\nDELETE\r\n--b--",
            "--b\r\nContent-ID: _method\r\n\r\nDELETE\r\n--b--",
        ] {
            assert_eq!(
                found(&parsed(u, &multipart, body)),
                Some("form field"),
                "{body}"
            );
        }
        // PHP's `json_decode` reads 512 levels deep and numbers past f64 (as INF).
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        for body in [
            format!("{{\"_method\":\"DELETE\",\"a\":{deep}}}"),
            "{\"a\":1e400,\"_method\":\"DELETE\"}".to_owned(),
        ] {
            assert_eq!(
                found(&parsed(u, &[("Content-Type", "application/json")], &body)),
                Some("JSON field"),
                "{}",
                &body[..40]
            );
        }
        // Rack reads `multipart/mixed` and `multipart/related` bodies as forms too, and
        // a multipart body without a boundary as a URL-encoded form.
        for t in [
            "multipart/form-data",
            "multipart/mixed",
            "Multipart/Related; type=text/plain",
        ] {
            assert_eq!(
                found(&parsed(u, &[("Content-Type", t)], "_method=DELETE")),
                Some("form field"),
                "{t}"
            );
        }
        assert_eq!(
            found(&parsed(
                u,
                &[("Content-Type", "multipart/mixed; boundary=b")],
                "--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--"
            )),
            Some("form field")
        );
        assert_eq!(
            found(&parsed(
                u,
                &[("Content-Type", "multipart/alternative; boundary=b")],
                "--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--"
            )),
            None,
            "Rack reads no other multipart type"
        );
        // PHP reads `.` and `[` in a variable name as `_`.
        for q in ["?.method=DELETE", "?%5Bmethod=DELETE", "?%20.method=DELETE"] {
            assert_eq!(
                found(&parsed(&format!("{u}{q}"), &[], "")),
                Some("query parameter"),
                "{q}"
            );
        }
        assert_eq!(
            found(&parsed(
                &format!("{u}?x_http_method_override=DELETE"),
                &[],
                ""
            )),
            Some("query parameter")
        );
        assert_eq!(
            found(&parsed(
                u,
                &multipart,
                "--b\r\nContent-Disposition: form-data; name='_method'\r\n\r\nDELETE\r\n--b--"
            )),
            Some("form field")
        );
    }

    #[test]
    fn hosts_match_names_not_addresses() {
        let i = integration(Auth::Bearer);
        let t = |u: &str| Target::parse(u).expect("url").host;
        assert!(host_matches(&i, &t("https://API.svc.test/")));
        assert!(host_matches(&i, &t("https://a.b.svc.test/")));
        assert!(!host_matches(&i, &t("https://svc.test.evil/")));
        assert!(!host_matches(&i, &t("https://203.0.113.7/")));
    }
}

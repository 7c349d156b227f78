//! The HTTP rotator: a provider's API that mints and revokes keys
//! (`[integration.rotation.http]`).
//!
//! A call is `method` to `url` (create) or `revoke_url` (revoke) with a JSON body
//! (`{"op", "rotation", "integration", "account"}`, `"key_sha256"` on revoke, the old key
//! as `"secret"` only with `send_old_secret`), `Idempotency-Key: <rotation>:<op>…` (so
//! a retry after a timeout or a crash gets the key the first call minted, not a second
//! one), and the credential `auth` names injected exactly as its integration injects it
//! for every broker call. The new key is the string at `secret_pointer` in a 2xx JSON
//! answer. A 5xx, 429 or 408, a timeout, a refused or broken connection: retry later
//! (like the exec rotator's exit 75); any other answer: failed. It goes through the
//! broker's outbound path: the URL judged, its name resolved and every address checked
//! against the deny ranges, a connection pinned to the checked address, TLS checked
//! against the URL's host; no redirect is followed.
//!
//! Must never: log or keep the provider's answer (it holds the new key), put a key in a
//! failure (classes are fixed words), or send the old key unless `send_old_secret` says so.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use serde_json::Value;
use zeroize::Zeroize as _;

use super::rotator::{Ask, Minted, RotatorError};
use crate::{
    broker::{
        outbound::{
            HopDecision, Outbound, OutboundError, OutboundRequest, Party, resolve::ResolveError,
            url::Target,
        },
        requests::credential,
    },
    config::{HttpRotation, IntegrationConfig},
    secret::Secret,
};

pub struct HttpRotator<'a> {
    pub outbound: &'a Outbound,
    pub config: &'a HttpRotation,
    /// The integration whose `auth` puts the credential on the call (the rotating one
    /// for `auth = "self"`).
    pub auth_integration: &'a IntegrationConfig,
    /// The credential that authenticates the calls; `None` for `auth = "self"`: the key
    /// the call is about (the one being replaced, or the one being revoked).
    pub auth_secret: Option<Secret>,
    pub timeout: Duration,
}

impl HttpRotator<'_> {
    /// `create`: a new key replacing `ask.secret`, from the answer at `secret_pointer`.
    pub async fn create(&self, ask: &Ask<'_>) -> Result<Minted, RotatorError> {
        let body = self.call(&self.config.url, ask).await?;
        parse_minted(body, self.config)
    }

    /// `revoke`: the provider stops accepting `ask.secret`. A 404 or 410 says it
    /// already has (a retry of a revoke that went through).
    pub async fn revoke(&self, ask: &Ask<'_>) -> Result<(), RotatorError> {
        let url = if self.config.revoke_url.is_empty() {
            &self.config.url
        } else {
            &self.config.revoke_url
        };
        match self.call(url, ask).await {
            Ok(body) => {
                wipe(body);
                Ok(())
            }
            Err(RotatorError::Failed("rotator_http_404" | "rotator_http_410")) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One request; the 2xx answer's body, or the failure's class.
    async fn call(&self, url: &str, ask: &Ask<'_>) -> Result<Bytes, RotatorError> {
        let body = Bytes::from(request_json(ask, self.config.send_old_secret));
        // A second reference to the body, to zero it once the request has gone (it may
        // hold the old key, with `send_old_secret`).
        let sent_body = body.clone();
        let request = self.request(url, ask, body)?;
        let sent =
            tokio::time::timeout(self.timeout, self.outbound.send(request, &no_redirects)).await;
        wipe(sent_body);
        let response = match sent {
            Err(_) => return Err(RotatorError::RetryLater("rotator_timeout")),
            Ok(Err(e)) => return Err(classify(&e)),
            Ok(Ok(r)) => r,
        };
        match response.status {
            200..=299 => Ok(response.body),
            status => {
                wipe(response.body);
                Err(status_class(status))
            }
        }
    }

    /// The request: the body, the idempotency key and the credential `auth` names.
    fn request(
        &self,
        url: &str,
        ask: &Ask<'_>,
        body: Bytes,
    ) -> Result<OutboundRequest, RotatorError> {
        let target = Target::parse(url).map_err(|_| RotatorError::Failed("rotator_url_invalid"))?;
        let method = Method::from_bytes(self.config.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| RotatorError::Failed("rotator_method_invalid"))?;
        let secret = self.auth_secret.as_ref().unwrap_or(ask.secret);
        let (credential_headers, credential_query) = credential(self.auth_integration, secret)
            .map_err(|_| RotatorError::Failed("rotator_auth_injection"))?;
        let idempotency = HeaderValue::from_str(&ask.idempotency_key())
            .map_err(|_| RotatorError::Failed("rotator_request_invalid"))?;
        Ok(OutboundRequest {
            method,
            target,
            headers: vec![
                (
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (HeaderName::from_static("idempotency-key"), idempotency),
            ],
            credential_headers,
            credential_query,
            body,
            held: None,
            party: Party::Agent,
        })
    }
}

/// A rotator call follows no redirect: its answer must come from the URL configured.
fn no_redirects(_: &Target) -> HopDecision {
    HopDecision::Deny
}

/// The request body. The key the call is about only as `key_sha256` (providers store
/// keys hashed and find them so), and whole only with `send_old_secret`.
fn request_json(ask: &Ask<'_>, send_old_secret: bool) -> Vec<u8> {
    let mut value = serde_json::json!({
        "op": ask.op,
        "rotation": ask.rotation,
        "integration": ask.integration,
        "account": ask.account,
    });
    if ask.op == "revoke" {
        let digest = ring::digest::digest(&ring::digest::SHA256, ask.secret.expose());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        value["key_sha256"] = Value::String(hex);
    }
    if send_old_secret {
        value["secret"] = Value::String(String::from_utf8_lossy(ask.secret.expose()).into_owned());
    }
    let bytes = serde_json::to_vec(&value).unwrap_or_default();
    wipe_value(&mut value);
    bytes
}

/// The failure class of an outbound error: what may pass (an outage) is retried;
/// what the configuration or the deny ranges refuse is not.
fn classify(e: &OutboundError) -> RotatorError {
    use RotatorError::{Failed, RetryLater};
    match e {
        OutboundError::Url(_)
        | OutboundError::Header(_)
        | OutboundError::Method(_)
        | OutboundError::RequestTarget => Failed("rotator_request_invalid"),
        OutboundError::Resolve(
            ResolveError::DnsRejected { .. } | ResolveError::IpDenied { .. },
        ) => Failed("rotator_url_denied"),
        OutboundError::Resolve(_) => RetryLater("rotator_unresolved"),
        OutboundError::RedirectDenied { .. }
        | OutboundError::BadRedirect { .. }
        | OutboundError::TooManyRedirects { .. } => Failed("rotator_redirect"),
        OutboundError::Connect { .. } => RetryLater("rotator_unreachable"),
        OutboundError::Tls { .. } => RetryLater("rotator_tls"),
        OutboundError::Http { .. } => RetryLater("rotator_exchange_failed"),
        OutboundError::Timeout { .. } => RetryLater("rotator_timeout"),
        OutboundError::TooLarge { .. } => Failed("rotator_answer_too_long"),
        OutboundError::Decode { .. } => Failed("rotator_answer_undecodable"),
        // Never here: the rotator's answers are not counted (`held: None`).
        OutboundError::AnswerBudgetSpent => RetryLater("rotator_exchange_failed"),
    }
}

/// A non-2xx status: the provider is down or busy for now (5xx, 429, 408), or says no.
fn status_class(status: u16) -> RotatorError {
    use RotatorError::{Failed, RetryLater};
    match status {
        429 => RetryLater("rotator_http_429"),
        408 => RetryLater("rotator_http_408"),
        500..=599 => RetryLater("rotator_http_5xx"),
        401 => Failed("rotator_http_401"),
        403 => Failed("rotator_http_403"),
        404 => Failed("rotator_http_404"),
        410 => Failed("rotator_http_410"),
        300..=399 => Failed("rotator_redirect"),
        _ => Failed("rotator_http_4xx"),
    }
}

/// The create answer: the key at `secret_pointer`, the expiry at `expires_pointer`.
fn parse_minted(body: Bytes, config: &HttpRotation) -> Result<Minted, RotatorError> {
    let parsed = serde_json::from_slice::<Value>(&body);
    wipe(body);
    let mut answer = parsed.map_err(|_| RotatorError::Failed("rotator_answer_not_json"))?;
    let minted = minted_from(&mut answer, config);
    wipe_value(&mut answer);
    minted
}

fn minted_from(answer: &mut Value, config: &HttpRotation) -> Result<Minted, RotatorError> {
    let expires = if config.expires_pointer.is_empty() {
        None
    } else {
        match answer.pointer(&config.expires_pointer) {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(
                humantime::parse_rfc3339_weak(t)
                    .map_err(|_| RotatorError::Failed("rotator_answer_bad_expiry"))?,
            ),
            Some(Value::Number(n)) => Some(
                n.as_u64()
                    .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
                    .ok_or(RotatorError::Failed("rotator_answer_bad_expiry"))?,
            ),
            Some(_) => return Err(RotatorError::Failed("rotator_answer_bad_expiry")),
        }
    };
    let Some(Value::String(secret)) = answer.pointer_mut(&config.secret_pointer) else {
        return Err(RotatorError::Failed("rotator_answer_no_secret"));
    };
    let secret = Secret::new(std::mem::take(secret).into_bytes());
    if secret.is_empty() {
        return Err(RotatorError::Failed("rotator_answer_empty"));
    }
    Ok(Minted { secret, expires })
}

/// Zeroes an answer's bytes when hb holds the only reference to them.
fn wipe(body: Bytes) {
    if let Ok(mut owned) = body.try_into_mut() {
        owned.as_mut().zeroize();
    }
}

/// Zeroes every string of a parsed answer (the key may sit in more than one field).
fn wipe_value(value: &mut Value) {
    match value {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe_value),
        Value::Object(map) => map.values_mut().for_each(wipe_value),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> HttpRotation {
        toml::from_str(&format!(
            "url = \"https://p.test/keys\"\nauth = \"self\"\n{extra}"
        ))
        .expect("http rotation")
    }

    fn ask<'a>(op: &'static str, secret: &'a Secret) -> Ask<'a> {
        Ask {
            op,
            rotation: "rot_1",
            integration: "svc",
            account: "bot",
            key: super::super::rotator::Key::Old,
            secret,
        }
    }

    #[test]
    fn the_new_key_is_read_at_its_pointer_and_the_expiry_in_either_form() {
        let c = config("secret_pointer = \"/data/key\"\nexpires_pointer = \"/data/exp\"");
        let body = Bytes::from_static(br#"{"data":{"key":"nk-1","exp":"2030-01-01T00:00:00Z"}}"#);
        let m = parse_minted(body, &c)
            .map_err(|e| e.class())
            .expect("minted");
        assert_eq!(m.secret.expose(), b"nk-1");
        assert!(m.expires.is_some());
        let m = parse_minted(
            Bytes::from_static(br#"{"data":{"key":"nk-2","exp":1900000000}}"#),
            &c,
        )
        .map_err(|e| e.class())
        .expect("minted");
        assert_eq!(
            m.expires,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000))
        );
        let class = |b: &'static [u8]| {
            parse_minted(Bytes::from_static(b), &c)
                .err()
                .map(|e| e.class())
        };
        assert_eq!(class(b"not json"), Some("rotator_answer_not_json"));
        assert_eq!(
            class(br#"{"data":{"key":7}}"#),
            Some("rotator_answer_no_secret")
        );
        assert_eq!(
            class(br#"{"data":{"key":""}}"#),
            Some("rotator_answer_empty")
        );
        assert_eq!(
            class(br#"{"data":{"key":"k","exp":"soon"}}"#),
            Some("rotator_answer_bad_expiry")
        );
    }

    #[test]
    fn the_body_carries_the_old_key_only_when_told_and_revoke_names_it_by_hash() {
        let old = Secret::new(b"old-key-123".to_vec());
        let create = String::from_utf8(request_json(&ask("create", &old), false)).expect("utf-8");
        assert!(!create.contains("old-key-123"), "{create}");
        let v: Value = serde_json::from_str(&create).expect("json");
        assert_eq!(v["op"], "create");
        assert_eq!(v["rotation"], "rot_1");
        assert_eq!(
            (v["integration"].as_str(), v["account"].as_str()),
            (Some("svc"), Some("bot"))
        );
        let revoke: Value =
            serde_json::from_slice(&request_json(&ask("revoke", &old), false)).expect("json");
        let digest = ring::digest::digest(&ring::digest::SHA256, b"old-key-123");
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(revoke["key_sha256"], hex.as_str());
        assert!(revoke.get("secret").is_none());
        let told: Value =
            serde_json::from_slice(&request_json(&ask("create", &old), true)).expect("json");
        assert_eq!(told["secret"], "old-key-123");
    }

    #[test]
    fn outages_are_retried_and_refusals_are_not() {
        let retry = |s| matches!(status_class(s), RotatorError::RetryLater(_));
        for s in [500, 502, 503, 504, 429, 408] {
            assert!(retry(s), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422, 302] {
            assert!(!retry(s), "{s}");
        }
    }
}

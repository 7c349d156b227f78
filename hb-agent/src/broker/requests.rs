//! `POST /v1/requests`: an HTTP call made by the broker on the caller's behalf.
//!
//! The data path of one request: the body is read and checked (method, URL, headers, at
//! most one of `body`/`body_base64`) → the caller's policy (its sandbox's, or
//! `broker.host_policy`) → with a handle: the handle must be the caller's and live, the
//! URL's host one of the integration's `hosts`, the method one of its `methods`, and the
//! request must not bring its own credential (`Authorization`, `Proxy-Authorization`,
//! the integration's auth header, or its auth query parameter, in any case: an **auth
//! collision**, which revokes every handle of the execution); without a handle: only
//! `broker.readonly_methods` → all of this before any socket opens → the credential is
//! injected as the integration says (bearer, named header, query parameter) → the
//! outbound path resolves through hb's validating resolver, connects to exactly a
//! validated address and speaks HTTP(S) → the response headers and body are scrubbed
//! (known token families, every stored credential, every live handle), and sanitized
//! when the request asks (`"sanitize": "flag"|"redact"|"block"`) → out.
//!
//! Must never: open a connection for a request policy refused, send a credential to a
//! host outside its integration, or return a byte the scrubber has not seen.

use std::sync::Arc;

use axum::{Json, extract::State};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use serde::Deserialize;
use serde_json::Value;

use super::{
    credentials::{acting, unknown_handle},
    error::{ApiError, Code},
    handles::Entry,
    outbound::{
        CredentialQuery, HopDecision, OutboundRequest,
        url::{Host, Target},
    },
    server::{AppState, CallerOf, JsonBody, scrub_json},
};
use crate::{
    config::{Auth, IntegrationConfig},
    events::EventRecord,
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
    headers: serde_json::Map<String, Value>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_base64: Option<String>,
    #[serde(default)]
    sanitize: Option<crate::sanitize::Mode>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(Code::BadRequest, message)
}

fn denied(message: impl Into<String>) -> ApiError {
    ApiError::new(Code::PolicyDenied, message)
}

fn host_matches(integration: &IntegrationConfig, host: &Host) -> bool {
    match host {
        Host::Name(name) => crate::dns::names::allowed(&integration.host_patterns, name),
        Host::Ip(_) => false,
    }
}

/// What the request brings that only the broker may add, if anything.
fn collision(
    integration: &IntegrationConfig,
    headers: &[(HeaderName, HeaderValue)],
    target: &Target,
) -> Option<String> {
    for (name, _) in headers {
        let n = name.as_str();
        if n == "authorization" || n == "proxy-authorization" {
            return Some(format!("an {n} header"));
        }
        if matches!(&integration.auth_kind, Auth::Header(h) if h == n) {
            return Some(format!("the integration's auth header {n}"));
        }
    }
    if let Auth::Query(param) = &integration.auth_kind {
        let query = target.path_and_query.split_once('?').map_or("", |(_, q)| q);
        for (k, _) in url::form_urlencoded::parse(query.as_bytes()) {
            if k.eq_ignore_ascii_case(param) {
                return Some(format!("the integration's auth query parameter {param}"));
            }
        }
    }
    None
}

/// Credential headers and query parameter for one request.
type Injected = (Vec<(HeaderName, HeaderValue)>, Option<CredentialQuery>);

/// The credential, put where the integration says.
fn inject(integration: &IntegrationConfig, secret: &Secret) -> Result<Injected, ApiError> {
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

pub async fn request(
    State(shared): State<AppState>,
    CallerOf(caller): CallerOf,
    JsonBody(req): JsonBody<RequestIn>,
) -> Result<Json<Value>, ApiError> {
    let (policy, owner) = acting(&caller, &shared.config.broker.host_policy)?;
    let method = Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| bad(format!("\"{}\" is not an HTTP method", req.method)))?;
    let target = Target::parse(&req.url).map_err(|e| bad(format!("url: {e}")))?;
    let mut headers = Vec::with_capacity(req.headers.len());
    for (name, value) in &req.headers {
        let Value::String(value) = value else {
            return Err(bad(format!("header {name}: the value must be a string")));
        };
        let pair = super::outbound::headers::header(name, value)
            .map_err(|e| bad(format!("header {name}: {e}")))?;
        headers.push(pair);
    }
    let body = match (&req.body, &req.body_base64) {
        (Some(_), Some(_)) => return Err(bad("give \"body\" or \"body_base64\", not both")),
        (Some(b), None) => Bytes::from(b.clone().into_bytes()),
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

    // Policy, before any socket opens.
    let config = shared.config.clone();
    let (entry, integration): (Option<Arc<Entry>>, Option<&IntegrationConfig>) = match &req.handle {
        Some(h) => {
            let entry = shared.handles.get(h, owner).ok_or_else(unknown_handle)?;
            let integration = config
                .integrations
                .iter()
                .find(|i| i.name.get_ref() == &entry.integration)
                .ok_or_else(unknown_handle)?;
            if !host_matches(integration, &target.host) {
                shared.audit_decision(&caller, &policy, &action, "policy_denied", "host");
                return Err(denied(format!(
                    "host {} is not one of integration \"{}\"'s hosts ({}): the broker will not send its credential there",
                    target.host,
                    entry.integration,
                    integration.hosts.join(", ")
                )));
            }
            if !integration.methods.iter().any(|m| m == method.as_str()) {
                shared.audit_decision(&caller, &policy, &action, "policy_denied", "method");
                return Err(denied(format!(
                    "method {method} is not allowed for integration \"{}\" (methods: {})",
                    entry.integration,
                    integration.methods.join(", ")
                )));
            }
            if let Some(what) = collision(integration, &headers, &target) {
                let revoked = shared.handles.end_execution(&entry.execution, owner);
                shared.forget_handles(&revoked);
                shared.audit_decision(&caller, &policy, &action, "auth_collision", &what);
                shared.audit_execution_end(
                    &caller,
                    &policy,
                    &entry.execution,
                    "auth_collision",
                    revoked.len(),
                );
                let _ = shared.events.send(Arc::new(EventRecord {
                    time: humantime::format_rfc3339_millis(std::time::SystemTime::now())
                        .to_string(),
                    hook: "broker".into(),
                    verdict: "deny".into(),
                    reason: "auth_collision".into(),
                    policy: policy.clone(),
                    cgroup_id: caller.sandbox.as_ref().map_or(0, |s| s.cgroup_id),
                    cgroup: Some(caller.cgroup.clone()),
                    pid: u32::try_from(caller.pid).unwrap_or(0),
                    tid: 0,
                    comm: String::new(),
                    family: String::new(),
                    protocol: "http".into(),
                    dst: target.host.to_string(),
                    port: target.port,
                    name: Some(entry.integration.clone()),
                    suppressed: 0,
                }));
                return Err(ApiError::new(
                    Code::AuthCollision,
                    format!(
                        "the request brings its own credential ({what}); the broker adds \
                         integration \"{}\"'s credential itself. Every handle of execution \
                         \"{}\" is revoked.",
                        entry.integration, entry.execution
                    ),
                ));
            }
            (Some(entry), Some(integration))
        }
        None => {
            let readonly = &shared.config.broker.readonly_methods;
            if !readonly.iter().any(|m| m == method.as_str()) {
                shared.audit_decision(&caller, &policy, &action, "policy_denied", "no handle");
                return Err(denied(format!(
                    "without a handle only {} are allowed (broker.readonly_methods); \
                     {method} needs a handle for an integration",
                    readonly.join(", ")
                )));
            }
            (None, None)
        }
    };

    let (credential_headers, credential_query) = match (&entry, &integration) {
        (Some(e), Some(i)) => inject(i, &e.secret)?,
        _ => (Vec::new(), None),
    };
    // A redirect inside the integration keeps the credential (the outbound path drops it
    // anyway once the origin changes); one that leaves it goes on without the credential,
    // and only for a read-only method, as a handle-less request would.
    let hop_integration = integration;
    let readonly = shared
        .config
        .broker
        .readonly_methods
        .iter()
        .any(|m| m == method.as_str());
    let hop = move |next: &Target| match &hop_integration {
        Some(i) if !host_matches(i, &next.host) => {
            if readonly {
                HopDecision::Allow {
                    keep_credential: false,
                }
            } else {
                HopDecision::Deny
            }
        }
        Some(_) => HopDecision::Allow {
            keep_credential: true,
        },
        None if readonly => HopDecision::Allow {
            keep_credential: false,
        },
        None => HopDecision::Deny,
    };
    let outbound = OutboundRequest {
        method,
        target,
        headers,
        credential_headers,
        credential_query,
        body,
    };
    let response = match shared.outbound.send(outbound, &hop).await {
        Ok(r) => r,
        Err(e) => {
            let code = e.code();
            shared.audit_decision(&caller, &policy, &action, "error", &e.to_string());
            return Err(ApiError::new(code, e.to_string()));
        }
    };
    // One record per call: the decision, and the handle's use when there is one.
    match (&req.handle, &entry) {
        (Some(h), Some(e)) => {
            shared.audit_handle_use(&caller, &policy, h, e, &action, response.status)
        }
        _ => shared.audit_decision(
            &caller,
            &policy,
            &action,
            "allowed",
            &format!("status {}", response.status),
        ),
    }

    // Everything that leaves: scrubbed.
    let scrubbed = shared.scrubber.scrub(&response.body).bytes;
    let mut out = serde_json::Map::new();
    out.insert("status".into(), response.status.into());
    let mut hdrs = serde_json::Map::new();
    for (k, v) in response.headers {
        let v = shared.scrubber.scrub_str(&v).0;
        match hdrs.get_mut(&k) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                hdrs.insert(k, Value::String(v));
            }
        }
    }
    out.insert("headers".into(), Value::Object(hdrs));
    match String::from_utf8(scrubbed) {
        Ok(text) => match req.sanitize {
            Some(mode) => {
                let opts = crate::sanitize::Options {
                    mode,
                    spotlight: false,
                };
                let s =
                    tokio::task::spawn_blocking(move || crate::sanitize::sanitize(&text, &opts))
                        .await
                        .map_err(|_| ApiError::new(Code::Internal, "sanitizer task failed"))?;
                let mut v = serde_json::to_value(&s).unwrap_or_default();
                let text = v
                    .as_object_mut()
                    .and_then(|o| o.remove("text"))
                    .unwrap_or(Value::Null);
                out.insert("body".into(), text);
                out.insert("sanitize".into(), scrub_json(&shared.scrubber, v));
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
    Ok(Json(Value::Object(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let query = integration(Auth::Query("api_key".into()));
        assert!(collision(&query, &[], &t("https://api.svc.test/x?API_KEY=1")).is_some());
        assert!(collision(&query, &[], &t("https://api.svc.test/x?a=1&api%5Fkey=1")).is_some());
        assert!(collision(&query, &[], &t("https://api.svc.test/x?api_keys=1")).is_none());
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

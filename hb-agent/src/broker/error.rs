//! The broker's answers when it says no: `{"error":{"code","message"}}`.
//!
//! Owns: the stable error codes of the socket API and their HTTP statuses. Messages are
//! written for an agent reading them: they say plainly what was refused and by which
//! rule, so a well-behaved caller stops probing.
//! Must never: carry a secret (every message passes the scrubber before it leaves, with
//! the view of the caller being served: see `text_gate`).

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};

/// Stable codes; clients match on these, never on the message. (The credential codes
/// are the contract of DESIGN.md's broker; their endpoints use them.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    BadRequest,
    TooLarge,
    Timeout,
    NotFound,
    MethodNotAllowed,
    /// The caller may not use this endpoint (e.g. minting event-stream sessions).
    Forbidden,
    /// Missing, wrong, expired or revoked session token.
    Unauthorized,
    /// The caller's process could not be identified (it exited, or its cgroup is gone).
    UnknownCaller,
    /// The agent is overloaded or a needed part (vault) is not available.
    Unavailable,
    /// The caller used up its allowance of a rate-limited endpoint (`/v1/scrub`,
    /// `/v1/sanitize`: `broker.scrub_per_minute`; `POST /v1/handles`:
    /// `broker.handles_per_minute`); the message says when to retry.
    RateLimited,
    /// The caller holds `broker.max_handles_per_caller` live handles already: one must
    /// be deleted, expire or have its execution ended before another is issued.
    HandleLimit,
    PolicyDenied,
    AuthCollision,
    UnknownHandle,
    BindingMissing,
    /// The vault holds no active credential for the integration and account asked for.
    NoCredential,
    DnsRejected,
    UpstreamError,
    /// The upstream's answer is not delivered because the scrubber cannot read it: a
    /// content or transfer coding hb does not decode, or (for a call made with a handle)
    /// a body that is not text (`broker.allow_binary_responses`).
    UnreadableResponse,
    /// For a call made with a handle, the upstream answered with part of a
    /// representation (206, `Content-Range`, `multipart/byteranges`): a part of an echo
    /// holds a piece of the credential no whole-value match finds.
    PartialResponse,
    /// A run of the credential a call carries was in the call or its answer (see
    /// `fragment_hit`); also every call and handle request of that caller for that
    /// account while its bar lasts (`broker.fragment_bar_secs`). One fixed message.
    CredentialFragment,
    Internal,
}

impl Code {
    /// The stable name (as serialised), for metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::BadRequest => "bad_request",
            Code::TooLarge => "too_large",
            Code::Timeout => "timeout",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::Forbidden => "forbidden",
            Code::Unauthorized => "unauthorized",
            Code::UnknownCaller => "unknown_caller",
            Code::Unavailable => "unavailable",
            Code::RateLimited => "rate_limited",
            Code::HandleLimit => "handle_limit",
            Code::PolicyDenied => "policy_denied",
            Code::AuthCollision => "auth_collision",
            Code::UnknownHandle => "unknown_handle",
            Code::BindingMissing => "binding_missing",
            Code::NoCredential => "no_credential",
            Code::DnsRejected => "dns_rejected",
            Code::UpstreamError => "upstream_error",
            Code::UnreadableResponse => "unreadable_response",
            Code::PartialResponse => "partial_response",
            Code::CredentialFragment => "credential_fragment",
            Code::Internal => "internal",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Code::BadRequest => StatusCode::BAD_REQUEST,
            Code::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::Timeout => StatusCode::REQUEST_TIMEOUT,
            Code::NotFound | Code::UnknownHandle | Code::NoCredential => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::Forbidden
            | Code::UnknownCaller
            | Code::PolicyDenied
            | Code::AuthCollision
            | Code::BindingMissing
            | Code::DnsRejected
            | Code::CredentialFragment => StatusCode::FORBIDDEN,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::RateLimited | Code::HandleLimit => StatusCode::TOO_MANY_REQUESTS,
            Code::UpstreamError | Code::UnreadableResponse | Code::PartialResponse => {
                StatusCode::BAD_GATEWAY
            }
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answer. Build with [`ApiError::new`]; the message is scrubbed on the way out.
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[derive(serde::Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(serde::Serialize)]
struct Inner<'a> {
    code: Code,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // With the view of the caller being served (see `text_gate`): a message may
        // quote the caller's input.
        let message = super::text_gate::scrub_message(&self.message);
        let body = Body {
            error: Inner {
                code: self.code,
                message: &message,
            },
        };
        let mut response = (self.code.status(), Json(body)).into_response();
        // For the request metrics (`server::count`): which code answered.
        response.extensions_mut().insert(self.code);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::Code;

    #[test]
    fn metric_names_are_the_serialised_codes() {
        for code in [
            Code::BadRequest,
            Code::TooLarge,
            Code::Timeout,
            Code::NotFound,
            Code::MethodNotAllowed,
            Code::Forbidden,
            Code::Unauthorized,
            Code::UnknownCaller,
            Code::Unavailable,
            Code::RateLimited,
            Code::HandleLimit,
            Code::PolicyDenied,
            Code::AuthCollision,
            Code::UnknownHandle,
            Code::BindingMissing,
            Code::NoCredential,
            Code::DnsRejected,
            Code::UpstreamError,
            Code::UnreadableResponse,
            Code::PartialResponse,
            Code::CredentialFragment,
            Code::Internal,
        ] {
            assert_eq!(
                serde_json::to_value(code).ok(),
                Some(serde_json::json!(code.as_str()))
            );
        }
    }
}

//! `POST /v1/rotations {"integration","account","compromised"?}` and
//! `GET /v1/rotations/{id}`: operators start a rotation and follow it.
//!
//! Only root and `broker.operator_uid`, outside any sandbox: a sandbox that could start
//! rotations could churn its tenant's credentials (or others') at will.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use serde::Deserialize;

use super::super::{
    error::{ApiError, Code},
    identity::Caller,
    state::{AppState, CallerOf, JsonBody},
};
use crate::vault::Rotation;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Start {
    integration: String,
    account: String,
    /// The credential is treated as leaked: no grace period, no rollback to it.
    #[serde(default)]
    compromised: bool,
}

fn operator_only(shared: &AppState, caller: &Caller) -> Result<(), ApiError> {
    if caller.sandbox.is_none() && caller.is_operator(shared.operator_uid) {
        return Ok(());
    }
    Err(ApiError::new(
        Code::Forbidden,
        format!(
            "only root or broker.operator_uid ({}) outside a sandbox may start or read rotations",
            shared.operator_uid
        ),
    ))
}

pub async fn start(
    State(shared): State<AppState>,
    CallerOf(caller): CallerOf,
    JsonBody(req): JsonBody<Start>,
) -> Result<(StatusCode, Json<Rotation>), ApiError> {
    operator_only(&shared, &caller)?;
    let trigger = if req.compromised {
        "manual_compromised"
    } else {
        "manual"
    };
    let rotation = super::trigger(
        &shared,
        &req.integration,
        &req.account,
        trigger,
        req.compromised,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(rotation)))
}

pub async fn show(
    State(shared): State<AppState>,
    CallerOf(caller): CallerOf,
    Path(id): Path<String>,
) -> Result<Json<Rotation>, ApiError> {
    operator_only(&shared, &caller)?;
    super::status(&shared, &id).await.map(Json)
}

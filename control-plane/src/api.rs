//! The control plane's HTTP/JSON API.
//!
//! | route | scope | what |
//! | --- | --- | --- |
//! | `POST /v1/segments` `{"segments": [...]}` | write | register (idempotent by id) |
//! | `GET /v1/segments?tenant&signal&from&to&service&limit&cursor` | read | list active segments |
//! | `POST /v1/segments/lookup` `{"ids": [...]}` | write | records of ids in any state |
//! | `POST /v1/compactions/lease` (a [`LeaseRequest`]) | compact | lease a plan (204 if none) |
//! | `POST /v1/compactions/{lease}/commit` `{"outputs": [...]}` | compact | atomic swap |
//! | `POST /v1/agents/heartbeat` (an [`AgentHeartbeat`]) | write | fleet view entry |
//! | `GET /v1/agents` | admin | fleet view |
//!
//! Every `/v1` route needs `Authorization: Bearer <token>` when tokens are configured: no or
//! an unknown token is 401, a token without the scope or the tenant is 403. `from`/`to` take
//! unix nanoseconds or RFC 3339 times. Errors are JSON objects with a stable `code` and a
//! `message`.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{AgentHeartbeat, Catalog, CatalogError, LeaseRequest, SegmentQuery, SegmentRecord};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// List segments.
    Read,
    /// Register and look up segments, send heartbeats (agents).
    Write,
    /// Lease and commit compactions.
    Compact,
    /// The fleet view.
    Admin,
}

/// One API token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// The secret.
    pub token: String,
    /// Tenants it may touch; `*` for every tenant.
    pub tenants: Vec<String>,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

impl ApiToken {
    fn all_tenants(&self) -> bool {
        self.tenants.iter().any(|t| t == "*")
    }

    fn may(&self, tenant: &str) -> bool {
        self.all_tenants() || self.tenants.iter().any(|t| t == tenant)
    }
}

/// Bearer-token authentication. With no tokens, every request is allowed (the embedded
/// control plane of `weir run`, on its admin port). The tokens may be replaced while serving
/// ([`Auth::replace`], a configuration reload).
#[derive(Debug, Default)]
pub struct Auth {
    tokens: std::sync::RwLock<Arc<Vec<ApiToken>>>,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The caller, once authenticated.
#[derive(Debug, Clone)]
pub struct Caller(Option<ApiToken>);

impl Caller {
    /// Checks the caller's token has `scope` (every caller has it when auth is off).
    pub fn need(&self, scope: Scope) -> Result<(), CatalogError> {
        match &self.0 {
            Some(t) if !t.scopes.contains(&scope) => Err(CatalogError::Forbidden(format!(
                "token lacks the {scope:?} scope"
            ))),
            _ => Ok(()),
        }
    }

    /// Whether the caller may see `tenant`.
    pub fn may(&self, tenant: &str) -> bool {
        self.0.as_ref().is_none_or(|t| t.may(tenant))
    }

    /// Checks the caller may touch `tenant`.
    pub fn tenant(&self, tenant: &str) -> Result<(), CatalogError> {
        match &self.0 {
            Some(t) if !t.may(tenant) => Err(CatalogError::Forbidden(format!(
                "token has no rights to tenant {tenant:?}"
            ))),
            _ => Ok(()),
        }
    }
}

impl Auth {
    /// Authentication with these tokens.
    pub fn new(tokens: Vec<ApiToken>) -> Auth {
        Auth {
            tokens: std::sync::RwLock::new(Arc::new(tokens)),
        }
    }

    /// Replaces the tokens: the next request is checked against the new ones (a revoked
    /// token is refused from then on).
    pub fn replace(&self, tokens: Vec<ApiToken>) {
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tokens);
    }

    fn tokens(&self) -> Arc<Vec<ApiToken>> {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        !self.tokens().is_empty()
    }

    /// Authenticates a request by its `Authorization: Bearer` header.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, CatalogError> {
        let tokens = self.tokens();
        if tokens.is_empty() {
            return Ok(Caller(None));
        }
        let value = headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                CatalogError::Unauthorized("missing Authorization: Bearer header".into())
            })?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                CatalogError::Unauthorized("Authorization is not a Bearer token".into())
            })?;
        tokens
            .iter()
            .find(|t| constant_time_eq(t.token.as_bytes(), token.as_bytes()))
            .cloned()
            .map(|t| Caller(Some(t)))
            .ok_or_else(|| CatalogError::Unauthorized("unknown token".into()))
    }
}

/// Query string of `GET /v1/segments`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    tenant: Option<String>,
    signal: Option<String>,
    from: Option<String>,
    to: Option<String>,
    service: Option<String>,
    /// `true`: the dead-letter files (rows a transform failed on) instead of the lake's.
    dead_letter: Option<bool>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// Parses a time bound: unix nanoseconds or an RFC 3339 timestamp.
pub fn parse_time(name: &str, v: &str) -> Result<i64, CatalogError> {
    if let Ok(n) = v.parse::<i64>() {
        return Ok(n);
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| {
            CatalogError::Invalid(format!(
                "{name}={v:?} is neither unix nanoseconds nor an RFC 3339 time"
            ))
        })
}

impl ListParams {
    fn into_query(self) -> Result<SegmentQuery, CatalogError> {
        Ok(SegmentQuery {
            tenant: self.tenant.unwrap_or_else(|| "default".into()),
            signal: self.signal,
            from: self
                .from
                .as_deref()
                .map(|v| parse_time("from", v))
                .transpose()?,
            to: self
                .to
                .as_deref()
                .map(|v| parse_time("to", v))
                .transpose()?,
            service: self.service,
            dead_letter: self.dead_letter.unwrap_or(false),
            limit: self.limit,
            cursor: self.cursor,
        })
    }
}

/// Body of `POST /v1/segments`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// Segments to register.
    pub segments: Vec<SegmentRecord>,
}

/// Body of `POST /v1/segments/lookup`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupBody {
    /// Segment ids.
    pub ids: Vec<Uuid>,
}

/// Body of `POST /v1/compactions/{lease}/commit`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitBody {
    /// The merged segments.
    pub outputs: Vec<SegmentRecord>,
}

/// An API error body.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code.
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// The segment or lease the error is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
}

/// An API error: HTTP status, stable code and message.
pub struct ApiError(pub CatalogError);

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, id) = match &self.0 {
            CatalogError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request", None),
            CatalogError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None),
            CatalogError::Conflict(id) => (StatusCode::CONFLICT, "conflict", Some(*id)),
            CatalogError::LeaseLost { lease, .. } => {
                (StatusCode::CONFLICT, "lease_lost", Some(*lease))
            }
            CatalogError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            CatalogError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", None),
            CatalogError::Unsupported(_) => (StatusCode::NOT_IMPLEMENTED, "unsupported", None),
            CatalogError::Corrupt { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "corrupt_index", None)
            }
            CatalogError::Storage(_) | CatalogError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", None)
            }
        };
        let body = ErrorBody {
            code: code.into(),
            message: self.0.to_string(),
            id,
        };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"weir\""),
            );
        }
        resp
    }
}

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The index.
    pub catalog: Arc<dyn Catalog>,
    /// Authentication.
    pub auth: Arc<Auth>,
}

fn json<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, CatalogError> {
    body.map(|Json(v)| v).map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            CatalogError::TooLarge(e.body_text())
        } else {
            CatalogError::Invalid(e.body_text())
        }
    })
}

async fn list_segments(
    State(st): State<ApiState>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = st.auth.caller(&headers)?;
    caller.need(Scope::Read)?;
    let Query(params) = params.map_err(|e| CatalogError::Invalid(e.body_text()))?;
    let query = params.into_query()?;
    caller.tenant(&query.tenant)?;
    let page = st.catalog.list(&query).await?;
    Ok(Json(page).into_response())
}

async fn register_segments(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<RegisterBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let caller = st.auth.caller(&headers)?;
    caller.need(Scope::Write)?;
    let body = json(body)?;
    for s in &body.segments {
        caller.tenant(&s.tenant)?;
    }
    // Durable when it returns (the `Catalog` contract): the agent drops it from its outbox.
    st.catalog.register(&body.segments).await?;
    Ok(Json(serde_json::json!({ "registered": body.segments.len() })).into_response())
}

async fn lookup_segments(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<LookupBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let caller = st.auth.caller(&headers)?;
    caller.need(Scope::Write)?;
    let body = json(body)?;
    if body.ids.len() > 10_000 {
        return Err(CatalogError::Invalid("at most 10000 ids per lookup".into()).into());
    }
    let found = st.catalog.lookup(&body.ids).await?;
    let visible: Vec<SegmentRecord> = found
        .into_iter()
        .filter(|s| caller.tenant(&s.tenant).is_ok())
        .collect();
    Ok(Json(serde_json::json!({ "segments": visible })).into_response())
}

async fn lease(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<LeaseRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let caller = st.auth.caller(&headers)?;
    caller.need(Scope::Compact)?;
    let mut req = json(body)?;
    match (&req.tenant, &caller.0) {
        (Some(t), _) => caller.tenant(t)?,
        (None, Some(tok)) if !tok.all_tenants() => match tok.tenants.as_slice() {
            [only] => req.tenant = Some(only.clone()),
            _ => {
                return Err(CatalogError::Invalid(
                    "this token covers several tenants: name one in `tenant`".into(),
                )
                .into())
            }
        },
        _ => {}
    }
    match st.catalog.lease_compaction(&req).await? {
        Some(lease) => Ok(Json(lease).into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

async fn commit(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Path(lease): Path<String>,
    body: Result<Json<CommitBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let caller = st.auth.caller(&headers)?;
    caller.need(Scope::Compact)?;
    let lease = Uuid::parse_str(&lease)
        .map_err(|_| CatalogError::Invalid(format!("lease id {lease:?} is not a UUID")))?;
    let body = json(body)?;
    for s in &body.outputs {
        caller.tenant(&s.tenant)?;
    }
    st.catalog.commit_compaction(lease, &body.outputs).await?;
    Ok(Json(serde_json::json!({ "committed": lease })).into_response())
}

async fn heartbeat(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<AgentHeartbeat>, JsonRejection>,
) -> Result<Response, ApiError> {
    let caller = st.auth.caller(&headers)?;
    caller.need(Scope::Write)?;
    let hb = json(body)?;
    st.catalog.heartbeat(&hb).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn agents(State(st): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let caller = st.auth.caller(&headers)?;
    caller.need(Scope::Admin)?;
    let agents = st.catalog.agents().await?;
    Ok(Json(serde_json::json!({ "agents": agents })).into_response())
}

/// The read routes of the segment API (what `weir run` serves on its admin port). With no
/// tokens in `auth`, they are open (the admin port of a single machine).
pub fn segment_routes(catalog: Arc<dyn Catalog>, auth: Arc<Auth>) -> Router {
    Router::new()
        .route("/v1/segments", get(list_segments))
        .route("/v1/agents", get(agents))
        .with_state(ApiState { catalog, auth })
}

/// Every route of the control-plane API. `max_body` bounds request bodies.
pub fn routes(state: ApiState, max_body: usize) -> Router {
    Router::new()
        .route("/v1/segments", get(list_segments).post(register_segments))
        .route("/v1/segments/lookup", post(lookup_segments))
        .route("/v1/compactions/lease", post(lease))
        .route("/v1/compactions/{lease}/commit", post(commit))
        .route("/v1/agents/heartbeat", post(heartbeat))
        .route("/v1/agents", get(agents))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bounds_parse() {
        assert_eq!(parse_time("from", "12").unwrap(), 12);
        assert_eq!(
            parse_time("from", "1970-01-01T00:00:01Z").unwrap(),
            1_000_000_000
        );
        assert!(parse_time("from", "yesterday").is_err());
    }

    #[test]
    fn bearer_tokens() {
        let auth = Auth::new(vec![ApiToken {
            token: "s3cret".into(),
            tenants: vec!["a".into()],
            scopes: vec![Scope::Read],
        }]);
        let mut h = HeaderMap::new();
        assert!(matches!(
            auth.caller(&h),
            Err(CatalogError::Unauthorized(_))
        ));
        h.insert("authorization", "Bearer nope".parse().unwrap());
        assert!(matches!(
            auth.caller(&h),
            Err(CatalogError::Unauthorized(_))
        ));
        h.insert("authorization", "Bearer s3cret".parse().unwrap());
        let c = auth.caller(&h).unwrap();
        assert!(c.need(Scope::Read).is_ok());
        assert!(matches!(
            c.need(Scope::Write),
            Err(CatalogError::Forbidden(_))
        ));
        assert!(c.tenant("a").is_ok());
        assert!(matches!(c.tenant("b"), Err(CatalogError::Forbidden(_))));
        // A reload revokes the token: refused from the next request on.
        auth.replace(vec![ApiToken {
            token: "other".into(),
            tenants: vec!["a".into()],
            scopes: vec![Scope::Read],
        }]);
        assert!(matches!(
            auth.caller(&h),
            Err(CatalogError::Unauthorized(_))
        ));
    }
}

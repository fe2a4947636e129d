//! The Iceberg REST catalog API, read-only, under `/iceberg` (a client's catalog `uri` is
//! `http://HOST:PORT/iceberg`): config, namespaces (one per tenant with a table), tables (one
//! per signal with metadata), load table. Creating, committing, renaming or dropping answer
//! 405 with the REST error body: the tables are derived from the segment index, and only
//! Weir's publisher changes them.
//!
//! Behind the control plane's bearer tokens: a caller needs the `read` scope, and sees the
//! namespaces of its token's tenants only (another tenant's namespace or table answers 403).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use weir_catalog::{Catalog, CatalogError, IcebergPointer};
use weir_control_plane::api::{Auth, Caller, Scope};
use weir_pipelines::lake::Lake;

use crate::table::object_uri;

/// State of the catalog routes.
#[derive(Clone)]
pub struct RestState {
    /// The index, which holds each table's pointer.
    pub catalog: Arc<dyn Catalog>,
    /// The lake, which holds the metadata.
    pub lake: Lake,
    /// Bearer tokens.
    pub auth: Arc<Auth>,
}

/// An error in the REST catalog's body format.
struct RestError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl RestError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        RestError {
            status,
            kind,
            message: message.into(),
        }
    }

    fn no_namespace(ns: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NoSuchNamespaceException",
            format!("namespace does not exist: {ns}"),
        )
    }
}

impl From<CatalogError> for RestError {
    fn from(e: CatalogError) -> Self {
        let (status, kind) = match &e {
            CatalogError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "NotAuthorizedException"),
            CatalogError::Forbidden(_) => (StatusCode::FORBIDDEN, "ForbiddenException"),
            CatalogError::Invalid(_) => (StatusCode::BAD_REQUEST, "BadRequestException"),
            CatalogError::Unsupported(_) => {
                (StatusCode::NOT_IMPLEMENTED, "UnsupportedOperationException")
            }
            _ => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException",
            ),
        };
        RestError::new(status, kind, e.to_string())
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "code": self.status.as_u16(),
        }});
        (self.status, Json(body)).into_response()
    }
}

fn reader(st: &RestState, headers: &HeaderMap) -> Result<Caller, RestError> {
    let caller = st.auth.caller(headers)?;
    caller.need(Scope::Read)?;
    Ok(caller)
}

/// The tables the caller may see, in order.
async fn visible(st: &RestState, caller: &Caller) -> Result<Vec<IcebergPointer>, RestError> {
    Ok(st
        .catalog
        .iceberg_tables()
        .await?
        .into_iter()
        .filter(|p| caller.may(&p.tenant))
        .collect())
}

/// A namespace path segment: one level (a tenant); the REST encoding joins levels with 0x1F.
fn namespace(caller: &Caller, ns: &str) -> Result<String, RestError> {
    if ns.contains('\u{1f}') || !weir_catalog::valid_tenant(ns) {
        return Err(RestError::no_namespace(ns));
    }
    caller.tenant(ns)?;
    Ok(ns.to_string())
}

#[derive(Debug, Deserialize)]
struct ConfigParams {
    #[allow(dead_code)]
    warehouse: Option<String>,
}

async fn config(
    State(st): State<RestState>,
    headers: HeaderMap,
    Query(_): Query<ConfigParams>,
) -> Result<Response, RestError> {
    reader(&st, &headers)?;
    Ok(Json(json!({
        "defaults": {},
        "overrides": {},
        "endpoints": [
            "GET /v1/{prefix}/namespaces",
            "GET /v1/{prefix}/namespaces/{namespace}",
            "HEAD /v1/{prefix}/namespaces/{namespace}",
            "GET /v1/{prefix}/namespaces/{namespace}/tables",
            "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}",
            "HEAD /v1/{prefix}/namespaces/{namespace}/tables/{table}",
        ],
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
struct ListParams {
    parent: Option<String>,
}

async fn list_namespaces(
    State(st): State<RestState>,
    headers: HeaderMap,
    Query(params): Query<ListParams>,
) -> Result<Response, RestError> {
    let caller = reader(&st, &headers)?;
    // Namespaces have one level: nothing is nested under a tenant.
    if let Some(parent) = params.parent.filter(|p| !p.is_empty()) {
        namespace(&caller, &parent)?;
        return Ok(Json(json!({"namespaces": []})).into_response());
    }
    let mut tenants: Vec<String> = visible(&st, &caller)
        .await?
        .into_iter()
        .map(|p| p.tenant)
        .collect();
    tenants.dedup();
    let namespaces: Vec<Vec<String>> = tenants.into_iter().map(|t| vec![t]).collect();
    Ok(Json(json!({ "namespaces": namespaces })).into_response())
}

async fn tables_of(
    st: &RestState,
    caller: &Caller,
    ns: &str,
) -> Result<Vec<IcebergPointer>, RestError> {
    let tenant = namespace(caller, ns)?;
    let tables: Vec<IcebergPointer> = visible(st, caller)
        .await?
        .into_iter()
        .filter(|p| p.tenant == tenant)
        .collect();
    if tables.is_empty() {
        return Err(RestError::no_namespace(ns));
    }
    Ok(tables)
}

async fn load_namespace(
    State(st): State<RestState>,
    method: Method,
    headers: HeaderMap,
    Path(ns): Path<String>,
) -> Result<Response, RestError> {
    let caller = reader(&st, &headers)?;
    tables_of(&st, &caller, &ns).await?;
    if method == Method::HEAD {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(Json(json!({"namespace": [ns], "properties": {}})).into_response())
}

async fn list_tables(
    State(st): State<RestState>,
    headers: HeaderMap,
    Path(ns): Path<String>,
) -> Result<Response, RestError> {
    let caller = reader(&st, &headers)?;
    let identifiers: Vec<Value> = tables_of(&st, &caller, &ns)
        .await?
        .into_iter()
        .map(|p| json!({"namespace": [p.tenant], "name": p.signal}))
        .collect();
    Ok(Json(json!({ "identifiers": identifiers })).into_response())
}

async fn load_table(
    State(st): State<RestState>,
    method: Method,
    headers: HeaderMap,
    Path((ns, table)): Path<(String, String)>,
) -> Result<Response, RestError> {
    let caller = reader(&st, &headers)?;
    let pointer = tables_of(&st, &caller, &ns)
        .await?
        .into_iter()
        .find(|p| p.signal == table)
        .ok_or_else(|| {
            RestError::new(
                StatusCode::NOT_FOUND,
                "NoSuchTableException",
                format!("table does not exist: {ns}.{table}"),
            )
        })?;
    if method == Method::HEAD {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let bytes = st.lake.get(&pointer.metadata_key).await.map_err(|e| {
        RestError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            format!("metadata of {ns}.{table}: {e}"),
        )
    })?;
    let metadata: Value = serde_json::from_slice(&bytes).map_err(|e| {
        RestError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "CorruptMetadataException",
            format!("metadata of {ns}.{table}: {e}"),
        )
    })?;
    Ok(Json(json!({
        "metadata-location": object_uri(st.lake.url(), &pointer.metadata_key),
        "metadata": metadata,
        "config": {},
    }))
    .into_response())
}

async fn read_only(method: Method) -> RestError {
    RestError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "NotAllowedException",
        format!(
            "{method}: Weir's Iceberg catalog is read-only; its tables change only through the \
             segment index (registrations, compactions, retention)"
        ),
    )
}

/// The catalog routes, nested under `/iceberg`.
pub fn routes(state: RestState) -> Router {
    let api = Router::new()
        .route("/v1/config", get(config))
        .route("/v1/namespaces", get(list_namespaces).post(read_only))
        .route(
            "/v1/namespaces/{ns}",
            get(load_namespace)
                .head(load_namespace)
                .post(read_only)
                .delete(read_only),
        )
        .route(
            "/v1/namespaces/{ns}/properties",
            axum::routing::post(read_only),
        )
        .route(
            "/v1/namespaces/{ns}/tables",
            get(list_tables).post(read_only),
        )
        .route(
            "/v1/namespaces/{ns}/tables/{table}",
            get(load_table)
                .head(load_table)
                .post(read_only)
                .delete(read_only),
        )
        .route(
            "/v1/namespaces/{ns}/register",
            axum::routing::post(read_only),
        )
        .route("/v1/tables/rename", axum::routing::post(read_only))
        .route("/v1/transactions/commit", axum::routing::post(read_only))
        .with_state(state);
    Router::new().nest("/iceberg", api)
}

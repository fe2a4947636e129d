//! [`RemoteCatalog`]: the [`Catalog`] of a remote control plane, over its HTTP API.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::api::{CommitBody, ErrorBody, LookupBody, RegisterBody};
use crate::{
    AgentHeartbeat, AgentStatus, Catalog, CatalogError, CompactionLease, LeaseRequest,
    RetentionPolicy, SegmentPage, SegmentQuery, SegmentRecord,
};

/// Where the control plane is and how to talk to it.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// Base URL, e.g. `http://weir-control-plane:8700`.
    pub url: String,
    /// Bearer token, if the control plane requires one.
    pub token: Option<String>,
    /// Timeout of one request.
    pub timeout: Duration,
}

/// A remote control plane.
#[derive(Clone)]
pub struct RemoteCatalog {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl RemoteCatalog {
    /// A client for the control plane at `config.url`.
    pub fn new(config: &RemoteConfig) -> Result<Self, CatalogError> {
        let base = config.url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CatalogError::Invalid(format!(
                "control plane url {:?} must start with http:// or https://",
                config.url
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
            // The control plane closes a keep-alive connection idle for its
            // `header_read_timeout` (30 s by default): drop idle pooled connections before
            // that (reqwest's default is 90 s), so a request is not sent on one being closed.
            .pool_idle_timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| CatalogError::Invalid(format!("http client: {e}")))?;
        Ok(RemoteCatalog {
            http,
            base,
            token: config.token.clone(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, CatalogError> {
        let resp = req
            .send()
            .await
            .map_err(|e| CatalogError::Unavailable(error_chain(&e)))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let body: Option<ErrorBody> = serde_json::from_str(&text).ok();
        let message = body.as_ref().map(|b| b.message.clone()).unwrap_or_else(|| {
            format!(
                "HTTP {status}: {}",
                text.chars().take(200).collect::<String>()
            )
        });
        let id = body.as_ref().and_then(|b| b.id);
        Err(match (status, body.as_ref().map(|b| b.code.as_str())) {
            (StatusCode::UNAUTHORIZED, _) => CatalogError::Unauthorized(message),
            (StatusCode::PAYLOAD_TOO_LARGE, _) => CatalogError::TooLarge(message),
            (StatusCode::FORBIDDEN, _) => CatalogError::Forbidden(message),
            (_, Some("lease_lost")) => CatalogError::LeaseLost {
                lease: id.unwrap_or_default(),
                reason: message,
            },
            (_, Some("conflict")) => CatalogError::Conflict(id.unwrap_or_default()),
            (
                StatusCode::BAD_REQUEST
                | StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::UNPROCESSABLE_ENTITY,
                _,
            ) => CatalogError::Invalid(message),
            _ => CatalogError::Unavailable(message),
        })
    }

    async fn json<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, CatalogError> {
        resp.json()
            .await
            .map_err(|e| CatalogError::Unavailable(format!("bad response: {}", error_chain(&e))))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[derive(serde::Deserialize)]
struct Segments {
    segments: Vec<SegmentRecord>,
}

#[derive(serde::Deserialize)]
struct Agents {
    agents: Vec<AgentStatus>,
}

#[async_trait]
impl Catalog for RemoteCatalog {
    async fn register(&self, segments: &[SegmentRecord]) -> Result<(), CatalogError> {
        let body = RegisterBody {
            segments: segments.to_vec(),
        };
        self.send(
            self.request(reqwest::Method::POST, "/v1/segments")
                .json(&body),
        )
        .await
        .map(|_| ())
    }

    async fn list(&self, q: &SegmentQuery) -> Result<SegmentPage, CatalogError> {
        let mut params: Vec<(&str, String)> = vec![("tenant", q.tenant.clone())];
        let opt = [
            ("signal", q.signal.clone()),
            ("from", q.from.map(|v| v.to_string())),
            ("to", q.to.map(|v| v.to_string())),
            ("service", q.service.clone()),
            ("limit", q.limit.map(|v| v.to_string())),
            ("cursor", q.cursor.clone()),
            ("dead_letter", q.dead_letter.then(|| "true".to_string())),
        ];
        params.extend(opt.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        let resp = self
            .send(
                self.request(reqwest::Method::GET, "/v1/segments")
                    .query(&params),
            )
            .await?;
        Self::json(resp).await
    }

    async fn lookup(&self, ids: &[Uuid]) -> Result<Vec<SegmentRecord>, CatalogError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(10_000) {
            let body = LookupBody {
                ids: chunk.to_vec(),
            };
            let resp = self
                .send(
                    self.request(reqwest::Method::POST, "/v1/segments/lookup")
                        .json(&body),
                )
                .await?;
            out.extend(Self::json::<Segments>(resp).await?.segments);
        }
        Ok(out)
    }

    async fn sync(&self) -> Result<(), CatalogError> {
        // The control plane syncs before it acknowledges a write.
        Ok(())
    }

    async fn lease_compaction(
        &self,
        request: &LeaseRequest,
    ) -> Result<Option<CompactionLease>, CatalogError> {
        let resp = self
            .send(
                self.request(reqwest::Method::POST, "/v1/compactions/lease")
                    .json(request),
            )
            .await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        Self::json(resp).await.map(Some)
    }

    async fn commit_compaction(
        &self,
        lease: Uuid,
        outputs: &[SegmentRecord],
    ) -> Result<(), CatalogError> {
        let body = CommitBody {
            outputs: outputs.to_vec(),
        };
        self.send(
            self.request(
                reqwest::Method::POST,
                &format!("/v1/compactions/{lease}/commit"),
            )
            .json(&body),
        )
        .await
        .map(|_| ())
    }

    async fn heartbeat(&self, heartbeat: &AgentHeartbeat) -> Result<(), CatalogError> {
        self.send(
            self.request(reqwest::Method::POST, "/v1/agents/heartbeat")
                .json(heartbeat),
        )
        .await
        .map(|_| ())
    }

    async fn agents(&self) -> Result<Vec<AgentStatus>, CatalogError> {
        let resp = self
            .send(self.request(reqwest::Method::GET, "/v1/agents"))
            .await?;
        Ok(Self::json::<Agents>(resp).await?.agents)
    }

    async fn expire(
        &self,
        _policy: &RetentionPolicy,
        _now: i64,
        _dry_run: bool,
    ) -> Result<Vec<SegmentRecord>, CatalogError> {
        Err(CatalogError::Invalid(
            "retention runs inside the control plane, not through its API".into(),
        ))
    }

    async fn garbage(
        &self,
        _before: i64,
        _limit: usize,
    ) -> Result<Vec<SegmentRecord>, CatalogError> {
        Err(CatalogError::Invalid(
            "object deletion runs inside the control plane, not through its API".into(),
        ))
    }

    async fn abandon_expired_leases(
        &self,
        _expired_before: i64,
        _limit: usize,
    ) -> Result<Vec<CompactionLease>, CatalogError> {
        Err(CatalogError::Invalid(
            "lease cleanup runs inside the control plane, not through its API".into(),
        ))
    }

    async fn mark_leases_cleaned(&self, _leases: &[Uuid]) -> Result<(), CatalogError> {
        Err(CatalogError::Invalid(
            "lease cleanup runs inside the control plane, not through its API".into(),
        ))
    }

    async fn prune_leases(&self, _expired_before: i64) -> Result<u64, CatalogError> {
        Err(CatalogError::Invalid(
            "lease cleanup runs inside the control plane, not through its API".into(),
        ))
    }

    async fn mark_purged(&self, _ids: &[Uuid], _at: i64) -> Result<(), CatalogError> {
        Err(CatalogError::Invalid(
            "object deletion runs inside the control plane, not through its API".into(),
        ))
    }
}

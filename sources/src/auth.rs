//! API keys → tenants, for every HTTP and gRPC source.
//!
//! Without configured keys, requests are not authenticated and `X-Scope-OrgID` (or `default`)
//! names the tenant. With keys (`auth.api_keys = { "<key>" = "<tenant>" }`), every request must
//! carry one: a missing key is 401, an unknown key 403, and a request whose `X-Scope-OrgID`
//! names another tenant than its key's is 403 too. The key is read from `Authorization:
//! Bearer <key>`, `X-API-Key`, or the protocol's own header (`DD-API-KEY`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::tenant_from;

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No API key (401).
    #[error("missing API key: send Authorization: Bearer <key> or X-API-Key")]
    Missing,
    /// Unknown API key (403).
    #[error("invalid API key")]
    Invalid,
    /// The key has no rights to the tenant the request names (403).
    #[error("API key has no rights to tenant {0:?}")]
    WrongTenant(String),
    /// The tenant header is not valid (400).
    #[error("{0}")]
    BadTenant(String),
}

impl AuthError {
    /// Reason label in `weir_rejected_requests_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "unauthenticated",
            AuthError::Invalid | AuthError::WrongTenant(_) => "forbidden",
            AuthError::BadTenant(_) => "tenant",
        }
    }
}

/// The configured API keys. Clones share them, so [`ApiKeys::replace`] (a configuration
/// reload) reaches every source at its next request.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Arc<RwLock<Arc<HashMap<String, String>>>>,
}

impl ApiKeys {
    /// Keys mapped to tenants (empty: no authentication).
    pub fn new(keys: impl IntoIterator<Item = (String, String)>) -> ApiKeys {
        ApiKeys {
            keys: Arc::new(RwLock::new(Arc::new(keys.into_iter().collect()))),
        }
    }

    /// Replaces the keys for every clone (requests already authenticated keep their tenant).
    pub fn replace(&self, keys: impl IntoIterator<Item = (String, String)>) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(keys.into_iter().collect());
    }

    /// The tenant of a request with API key `key` and tenant header `org_id`.
    pub fn tenant(&self, key: Option<&str>, org_id: Option<&[u8]>) -> Result<String, AuthError> {
        let named = tenant_from(org_id).map_err(AuthError::BadTenant)?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        if keys.is_empty() {
            return Ok(named);
        }
        let key = key
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(AuthError::Missing)?;
        let tenant = keys.get(key).ok_or(AuthError::Invalid)?;
        if org_id.is_some() && &named != tenant {
            return Err(AuthError::WrongTenant(named));
        }
        Ok(tenant.clone())
    }

    /// The API key of an HTTP request: `Authorization: Bearer`, `X-API-Key`, then `extra`
    /// headers in order.
    pub fn key_from_headers<'a>(
        headers: &'a axum::http::HeaderMap,
        extra: &[&str],
    ) -> Option<&'a str> {
        if let Some(b) = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
        {
            return Some(b);
        }
        std::iter::once("x-api-key")
            .chain(extra.iter().copied())
            .find_map(|h| headers.get(h).and_then(|v| v.to_str().ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_tenants() {
        let open = ApiKeys::default();
        assert_eq!(open.tenant(None, None).unwrap(), "default");
        assert_eq!(open.tenant(None, Some(b"t1")).unwrap(), "t1");
        let k = ApiKeys::new([("k1".to_string(), "team-a".to_string())]);
        assert_eq!(k.tenant(None, None), Err(AuthError::Missing));
        assert_eq!(k.tenant(Some("nope"), None), Err(AuthError::Invalid));
        assert_eq!(k.tenant(Some("k1"), None).unwrap(), "team-a");
        assert_eq!(k.tenant(Some("k1"), Some(b"team-a")).unwrap(), "team-a");
        assert_eq!(
            k.tenant(Some("k1"), Some(b"team-b")),
            Err(AuthError::WrongTenant("team-b".into()))
        );
        assert!(matches!(
            k.tenant(Some("k1"), Some(b"../x")),
            Err(AuthError::BadTenant(_))
        ));
    }

    /// A reload's keys reach every clone (each source holds one): a revoked key is refused
    /// at the next request, a new one accepted.
    #[test]
    fn replaced_keys_reach_every_clone() {
        let k = ApiKeys::new([("old".to_string(), "a".to_string())]);
        let source = k.clone();
        k.replace([("new".to_string(), "b".to_string())]);
        assert_eq!(source.tenant(Some("old"), None), Err(AuthError::Invalid));
        assert_eq!(source.tenant(Some("new"), None).unwrap(), "b");
        k.replace([]);
        assert_eq!(source.tenant(None, Some(b"t")).unwrap(), "t");
    }
}

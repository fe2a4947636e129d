//! The embedded segment index on sled.
//!
//! Trees:
//! - `segments`: segment id (16 bytes, UUIDv7 so time-ordered) → the record as JSON;
//! - `segments_by_time`: `tenant 0x00 signal 0x00 max_timestamp(8, order-preserving) id(16)` → empty,
//!   the listing order, so a query for one tenant, signal and `from` bound is a range scan.

use std::path::Path;

use async_trait::async_trait;
use uuid::Uuid;

use crate::{Catalog, CatalogError, SegmentPage, SegmentQuery, SegmentRecord};

/// The embedded sled segment index.
#[derive(Clone)]
pub struct SledCatalog {
    db: sled::Db,
    segments: sled::Tree,
    by_time: sled::Tree,
}

fn ordered_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1u64 << 63)).to_be_bytes()
}

fn time_key(tenant: &str, signal: &str, max_ts: Option<i64>, id: Option<Uuid>) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + signal.len() + 26);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(signal.as_bytes());
    k.push(0);
    if let Some(ts) = max_ts {
        k.extend_from_slice(&ordered_i64(ts));
        if let Some(id) = id {
            k.extend_from_slice(id.as_bytes());
        }
    }
    k
}

impl SledCatalog {
    /// Opens (or creates) the index in a directory of its own.
    pub fn open(path: &Path) -> Result<Self, CatalogError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(32 << 20)
            .open()?;
        Self::with_db(db)
    }

    /// Uses the trees of an already open sled database.
    pub fn with_db(db: sled::Db) -> Result<Self, CatalogError> {
        let segments = db.open_tree("segments")?;
        let by_time = db.open_tree("segments_by_time")?;
        Ok(SledCatalog {
            db,
            segments,
            by_time,
        })
    }

    fn get(&self, id: &[u8]) -> Result<Option<SegmentRecord>, CatalogError> {
        match self.segments.get(id)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| CatalogError::Corrupt {
                    key: hex_id(id),
                    reason: e.to_string(),
                }),
        }
    }

    fn register_blocking(&self, segments: &[SegmentRecord]) -> Result<(), CatalogError> {
        for s in segments {
            s.validate()?;
        }
        for s in segments {
            if let Some(existing) = self.get(s.id.as_bytes())? {
                if &existing == s {
                    continue;
                }
                return Err(CatalogError::Conflict(s.id));
            }
            let value = serde_json::to_vec(s).map_err(|e| CatalogError::Storage(e.to_string()))?;
            let tkey = time_key(&s.tenant, &s.signal, Some(s.max_timestamp), Some(s.id));
            self.by_time.insert(tkey, &[])?;
            self.segments.insert(s.id.as_bytes(), value)?;
        }
        Ok(())
    }

    fn list_blocking(&self, q: &SegmentQuery) -> Result<SegmentPage, CatalogError> {
        q.validate()?;
        let limit = q.page_size()?;
        let prefix = match &q.signal {
            Some(sig) => time_key(&q.tenant, sig, None, None),
            None => {
                let mut p = q.tenant.as_bytes().to_vec();
                p.push(0);
                p
            }
        };
        let mut start = prefix.clone();
        if let (Some(sig), Some(from)) = (&q.signal, q.from) {
            start = time_key(&q.tenant, sig, Some(from), None);
        }
        if let Some(cursor) = &q.cursor {
            let c = hex::decode(cursor)
                .map_err(|_| CatalogError::Invalid(format!("cursor {cursor:?} is not valid")))?;
            if !c.starts_with(&prefix) {
                return Err(CatalogError::Invalid(format!(
                    "cursor {cursor:?} does not belong to this query"
                )));
            }
            let mut after = c;
            after.push(0);
            if after > start {
                start = after;
            }
        }
        let mut segments = Vec::new();
        let mut next_cursor = None;
        for item in self.by_time.range(start..) {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            if k.len() < 16 {
                continue;
            }
            let id = &k[k.len() - 16..];
            let Some(seg) = self.get(id)? else { continue };
            if !q.matches(&seg) {
                continue;
            }
            if segments.len() == limit {
                next_cursor = segments.last().map(|s: &SegmentRecord| {
                    hex::encode(time_key(
                        &s.tenant,
                        &s.signal,
                        Some(s.max_timestamp),
                        Some(s.id),
                    ))
                });
                break;
            }
            segments.push(seg);
        }
        Ok(SegmentPage {
            segments,
            next_cursor,
        })
    }
}

fn hex_id(id: &[u8]) -> String {
    Uuid::from_slice(id)
        .map(|u| u.to_string())
        .unwrap_or_else(|_| hex::encode(id))
}

#[async_trait]
impl Catalog for SledCatalog {
    async fn register(&self, segments: &[SegmentRecord]) -> Result<(), CatalogError> {
        let this = self.clone();
        let segments = segments.to_vec();
        tokio::task::spawn_blocking(move || this.register_blocking(&segments))
            .await
            .map_err(|e| CatalogError::Storage(e.to_string()))?
    }

    async fn list(&self, query: &SegmentQuery) -> Result<SegmentPage, CatalogError> {
        let this = self.clone();
        let query = query.clone();
        tokio::task::spawn_blocking(move || this.list_blocking(&query))
            .await
            .map_err(|e| CatalogError::Storage(e.to_string()))?
    }

    async fn sync(&self) -> Result<(), CatalogError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush().map(|_| ()))
            .await
            .map_err(|e| CatalogError::Storage(e.to_string()))??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SegmentState;

    fn seg(tenant: &str, signal: &str, min: i64, max: i64, svc: &str) -> SegmentRecord {
        SegmentRecord {
            id: Uuid::now_v7(),
            tenant: tenant.into(),
            signal: signal.into(),
            object_key: format!("tenant={tenant}/signal={signal}/x.parquet"),
            partition: "dt=2026-01-01/hour=00".into(),
            min_timestamp: min,
            max_timestamp: max,
            row_count: 10,
            bytes: 100,
            services: vec![svc.into()],
            schema_version: 1,
            agent_id: "a".into(),
            created_at: 0,
            state: SegmentState::Active,
            replaced_by: None,
        }
    }

    #[tokio::test]
    async fn register_is_idempotent_and_queries_filter() {
        let dir = tempfile::tempdir().unwrap();
        let cat = SledCatalog::open(dir.path()).unwrap();
        let a = seg("t1", "logs", 0, 100, "api");
        let b = seg("t1", "logs", 200, 300, "web");
        let c = seg("t1", "traces", 0, 100, "api");
        let d = seg("t2", "logs", 0, 100, "api");
        cat.register(&[a.clone(), b.clone(), c.clone(), d.clone()])
            .await
            .unwrap();
        cat.register(std::slice::from_ref(&a)).await.unwrap();
        let mut changed = a.clone();
        changed.row_count = 11;
        assert!(matches!(
            cat.register(&[changed]).await,
            Err(CatalogError::Conflict(_))
        ));

        let q = |f: &dyn Fn(&mut SegmentQuery)| {
            let mut q = SegmentQuery {
                tenant: "t1".into(),
                ..Default::default()
            };
            f(&mut q);
            q
        };
        let all = cat.list(&q(&|_| {})).await.unwrap();
        assert_eq!(all.segments.len(), 3);
        let logs = cat
            .list(&q(&|q| q.signal = Some("logs".into())))
            .await
            .unwrap();
        assert_eq!(logs.segments, vec![a.clone(), b.clone()]);
        let late = cat
            .list(&q(&|q| {
                q.signal = Some("logs".into());
                q.from = Some(150);
            }))
            .await
            .unwrap();
        assert_eq!(late.segments, vec![b.clone()]);
        let early = cat.list(&q(&|q| q.to = Some(150))).await.unwrap();
        assert_eq!(early.segments.len(), 2);
        let web = cat
            .list(&q(&|q| q.service = Some("web".into())))
            .await
            .unwrap();
        assert_eq!(web.segments, vec![b.clone()]);

        // Paging walks every segment once.
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = cat
                .list(&q(&|q| {
                    q.limit = Some(1);
                    q.cursor = cursor.clone();
                }))
                .await
                .unwrap();
            seen.extend(page.segments.into_iter().map(|s| s.id));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        seen.sort();
        let mut want = vec![a.id, b.id, c.id];
        want.sort();
        assert_eq!(seen, want);

        // Survives a reopen.
        drop(cat);
        let cat = SledCatalog::open(dir.path()).unwrap();
        assert_eq!(cat.list(&q(&|_| {})).await.unwrap().segments.len(), 3);
    }

    #[tokio::test]
    async fn invalid_requests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cat = SledCatalog::open(dir.path()).unwrap();
        let bad = seg("../x", "logs", 0, 1, "a");
        assert!(matches!(
            cat.register(&[bad]).await,
            Err(CatalogError::Invalid(_))
        ));
        let q = SegmentQuery {
            tenant: "t".into(),
            limit: Some(0),
            ..Default::default()
        };
        assert!(matches!(cat.list(&q).await, Err(CatalogError::Invalid(_))));
    }
}

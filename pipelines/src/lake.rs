//! The lake: an object store and a prefix, with the Hive layout of object keys.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use uuid::Uuid;
use weir_schema::Signal;

use crate::Partition;

/// Errors of the lake.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// `lake.url` could not be used.
    #[error("lake.url {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
}

/// An object store and the prefix under which the lake lives.
#[derive(Clone, Debug)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
}

/// Objects at or above this size are uploaded in parts.
const MULTIPART_THRESHOLD: usize = 16 << 20;

impl Lake {
    /// Opens the lake at `url` (`file:///abs/path`, `memory://`, `s3://bucket/prefix`,
    /// `gs://…`, `az://…`) with object_store options (endpoint, region, …).
    pub fn open(url: &str, options: &HashMap<String, String>) -> Result<Lake, LakeError> {
        let bad = |reason: String| LakeError::Url {
            url: url.to_string(),
            reason,
        };
        if let Some(path) = url.strip_prefix("file://") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(bad(
                    "file:// URLs need an absolute path (file:///data/lake)".into(),
                ));
            }
            // The directory is created when the first object is written, so a lake that is
            // not there yet (an unmounted volume) only delays flushing.
            let store = LocalFileSystem::new().with_automatic_cleanup(true);
            let prefix = ObjectPath::from_absolute_path(&path).map_err(|e| bad(e.to_string()))?;
            return Ok(Lake {
                store: Arc::new(store),
                prefix,
                url: url.to_string(),
            });
        }
        if url == "memory://" || url.starts_with("memory://") {
            return Ok(Lake {
                store: Arc::new(InMemory::new()),
                prefix: ObjectPath::default(),
                url: url.to_string(),
            });
        }
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let (store, prefix) =
            object_store::parse_url_opts(&parsed, options).map_err(|e| bad(e.to_string()))?;
        Ok(Lake {
            store: Arc::from(store),
            prefix,
            url: url.to_string(),
        })
    }

    /// The URL the lake was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The object key of a segment, relative to the lake's prefix:
    /// `tenant={t}/signal={s}/dt={YYYY-MM-DD}/hour={HH}/{id}.parquet`.
    pub fn object_key(tenant: &str, signal: Signal, partition: Partition, id: Uuid) -> String {
        format!(
            "tenant={tenant}/signal={}/{}/{id}.parquet",
            signal.as_str(),
            partition.path()
        )
    }

    fn full_path(&self, key: &str) -> ObjectPath {
        let mut p = self.prefix.clone();
        for part in key.split('/') {
            p = p.clone().join(part);
        }
        p
    }

    /// Writes an object (in parts when it is large).
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), LakeError> {
        let path = self.full_path(key);
        if bytes.len() >= MULTIPART_THRESHOLD {
            let upload = self.store.put_multipart(&path).await?;
            let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, 8 << 20);
            w.write(&bytes);
            w.finish().await?;
        } else {
            self.store.put(&path, PutPayload::from(bytes)).await?;
        }
        Ok(())
    }

    /// Whether an object exists.
    pub async fn exists(&self, key: &str) -> Result<bool, LakeError> {
        match self.store.head(&self.full_path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads an object.
    pub async fn get(&self, key: &str) -> Result<bytes::Bytes, LakeError> {
        Ok(self.store.get(&self.full_path(key)).await?.bytes().await?)
    }
}

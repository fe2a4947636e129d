//! The lake: an object store and a prefix, with the Hive layout of object keys.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use std::time::Duration;

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

/// How requests to a cloud object store are retried (transient errors, 5xx, timeouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LakeRetry {
    /// Attempts after the first.
    pub max_retries: usize,
    /// Give up retrying a request after this long.
    pub retry_timeout: Duration,
    /// First backoff; doubles up to `max_backoff`.
    pub init_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
}

impl Default for LakeRetry {
    fn default() -> Self {
        LakeRetry {
            max_retries: 10,
            retry_timeout: Duration::from_secs(180),
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
        }
    }
}

impl LakeRetry {
    fn config(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: self.init_backoff,
                max_backoff: self.max_backoff,
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: self.retry_timeout,
        }
    }
}

/// An object in the lake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeObject {
    /// Key relative to the lake's prefix.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, unix nanoseconds.
    pub last_modified: i64,
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
        Self::open_with(url, options, LakeRetry::default())
    }

    /// Opens the lake with explicit retry settings. Cloud stores start from their standard
    /// environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`), then `options` override them;
    /// an unknown option is an error that names it.
    pub fn open_with(
        url: &str,
        options: &HashMap<String, String>,
        retry: LakeRetry,
    ) -> Result<Lake, LakeError> {
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
            let prefix = ObjectPath::from_absolute_path(&path).map_err(|e| bad(e.to_string()))?;
            let store = DurableLocal::new(&prefix).map_err(|e| bad(e.to_string()))?;
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
        let unknown = |k: &str| bad(format!("unknown lake option {k:?}"));
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "s3" | "s3a" => {
                let mut b = AmazonS3Builder::from_env().with_url(url);
                for (k, v) in options {
                    let key: AmazonS3ConfigKey = k.parse().map_err(|_| unknown(k))?;
                    b = b.with_config(key, v);
                }
                Arc::new(
                    b.with_retry(retry.config())
                        .build()
                        .map_err(|e| bad(e.to_string()))?,
                )
            }
            "gs" => {
                let mut b = GoogleCloudStorageBuilder::from_env().with_url(url);
                for (k, v) in options {
                    let key: GoogleConfigKey = k.parse().map_err(|_| unknown(k))?;
                    b = b.with_config(key, v);
                }
                Arc::new(
                    b.with_retry(retry.config())
                        .build()
                        .map_err(|e| bad(e.to_string()))?,
                )
            }
            "az" | "azure" | "abfs" | "abfss" => {
                let mut b = MicrosoftAzureBuilder::from_env().with_url(url);
                for (k, v) in options {
                    let key: AzureConfigKey = k.parse().map_err(|_| unknown(k))?;
                    b = b.with_config(key, v);
                }
                Arc::new(
                    b.with_retry(retry.config())
                        .build()
                        .map_err(|e| bad(e.to_string()))?,
                )
            }
            other => {
                return Err(bad(format!(
                    "unsupported scheme {other:?} (use file, memory, s3, gs or az)"
                )))
            }
        };
        let prefix =
            ObjectPath::parse(parsed.path().trim_matches('/')).map_err(|e| bad(e.to_string()))?;
        Ok(Lake {
            store,
            prefix,
            url: url.to_string(),
        })
    }

    /// The same lake through another store wrapped around this one's (instrumentation, and
    /// fault injection in tests): `wrap` gets the current store.
    pub fn map_store(
        self,
        wrap: impl FnOnce(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore>,
    ) -> Lake {
        Lake {
            store: wrap(self.store),
            ..self
        }
    }

    /// The URL the lake was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The object store behind the lake.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// Every object under `sub` (a key prefix relative to the lake, `""` for everything).
    pub async fn list(&self, sub: &str) -> Result<Vec<LakeObject>, LakeError> {
        let base = if sub.is_empty() {
            self.prefix.clone()
        } else {
            self.full_path(sub)
        };
        let prefix_parts = self.prefix.parts().count();
        let metas: Vec<object_store::ObjectMeta> =
            self.store.list(Some(&base)).try_collect().await?;
        Ok(metas
            .into_iter()
            .map(|m| LakeObject {
                key: m
                    .location
                    .parts()
                    .skip(prefix_parts)
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/"),
                size: m.size,
                last_modified: m.last_modified.timestamp_nanos_opt().unwrap_or_default(),
            })
            .collect())
    }

    /// Deletes an object; an object already gone is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), LakeError> {
        match self.store.delete(&self.full_path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The store path of a key.
    pub fn full_path(&self, key: &str) -> ObjectPath {
        let mut p = self.prefix.clone();
        for part in key.split('/') {
            p = p.clone().join(part);
        }
        p
    }

    /// Writes an object (in parts when it is large). On a `file://` lake the object is durable
    /// when this returns: its data and every directory entry from the lake root down to it are
    /// fsynced, as an object store's success response promises.
    pub async fn put(&self, key: &str, bytes: impl Into<bytes::Bytes>) -> Result<(), LakeError> {
        let bytes: bytes::Bytes = bytes.into();
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

    /// The size of an object.
    pub async fn size(&self, key: &str) -> Result<u64, LakeError> {
        Ok(self.store.head(&self.full_path(key)).await?.size)
    }

    /// Reads an object.
    pub async fn get(&self, key: &str) -> Result<bytes::Bytes, LakeError> {
        Ok(self.store.get(&self.full_path(key)).await?.bytes().await?)
    }
}

/// Reads one lake object as a Parquet file, fetching only the byte ranges the reader asks
/// for (the footer, then the column chunks), so large files stream.
#[derive(Clone, Debug)]
pub struct LakeFileReader {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    size: u64,
}

impl Lake {
    /// A Parquet reader of an object whose size is known (from its segment or a listing).
    pub fn parquet_reader(&self, key: &str, size: u64) -> LakeFileReader {
        LakeFileReader {
            store: self.store.clone(),
            path: self.full_path(key),
            size,
        }
    }

    /// A streaming writer of a new object (multipart once it is large). On a `file://` lake the
    /// object is durable once the writer's `shutdown` (or the Parquet writer's `close`) returns,
    /// as after [`Lake::put`]. A writer given up on must be [`LakeWriter::abort`]ed: dropping
    /// it leaves a multipart upload's parts in the store (object stores keep them, and bill
    /// them, until a lifecycle rule or an abort removes them).
    pub fn writer(&self, key: &str) -> LakeWriter {
        LakeWriter {
            // At most two parts in flight besides the one filling: the writer holds up to
            // 3 × MULTIPART_THRESHOLD (object_store's default would allow 8 in flight).
            inner: Some(
                object_store::buffered::BufWriter::with_capacity(
                    self.store.clone(),
                    self.full_path(key),
                    MULTIPART_THRESHOLD,
                )
                .with_max_concurrency(2),
            ),
            closing: false,
            done: false,
        }
    }
}

/// The writer [`Lake::writer`] returns: object_store's buffered writer, which can also abort.
/// Dropped before `shutdown` completed (a task cancelled mid-upload, as a compaction at the
/// agent's shutdown), it aborts the upload on a task of its own, so a multipart upload's parts
/// do not stay in the store (best effort: a process that exits at once may not finish it).
pub struct LakeWriter {
    inner: Option<object_store::buffered::BufWriter>,
    /// `shutdown` began: the upload is completing, and on failure aborts itself.
    closing: bool,
    /// `shutdown` returned: the object is complete.
    done: bool,
}

fn taken() -> std::io::Error {
    std::io::Error::other("the lake writer was aborted")
}

impl LakeWriter {
    /// Gives the object up: aborts its multipart upload if one began (a small object was
    /// never put). Once `shutdown` began there is nothing left to abort (a failed completion
    /// aborts itself).
    pub async fn abort(&mut self) -> Result<(), LakeError> {
        if self.closing {
            return Ok(());
        }
        self.closing = true;
        match self.inner.take() {
            Some(mut w) => Ok(w.abort().await?),
            None => Ok(()),
        }
    }
}

impl Drop for LakeWriter {
    fn drop(&mut self) {
        if self.done || self.closing {
            return;
        }
        let (Some(mut w), Ok(rt)) = (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        rt.spawn(async move {
            if let Err(e) = w.abort().await {
                tracing::warn!(error = %e, "aborting an abandoned upload failed; its parts stay until the store's lifecycle rule removes them");
            }
        });
    }
}

impl tokio::io::AsyncWrite for LakeWriter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.inner.as_mut() {
            Some(w) => std::pin::Pin::new(w).poll_write(cx, buf),
            None => std::task::Poll::Ready(Err(taken())),
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.inner.as_mut() {
            Some(w) => std::pin::Pin::new(w).poll_flush(cx),
            None => std::task::Poll::Ready(Err(taken())),
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.closing = true;
        let poll = match self.inner.as_mut() {
            Some(w) => std::pin::Pin::new(w).poll_shutdown(cx),
            None => std::task::Poll::Ready(Err(taken())),
        };
        if matches!(poll, std::task::Poll::Ready(Ok(()))) {
            self.done = true;
        }
        poll
    }
}

fn parquet_err(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl parquet::arrow::async_reader::AsyncFileReader for LakeFileReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        Box::pin(async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(parquet_err)
        })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        Box::pin(async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(parquet_err)
        })
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a parquet::arrow::arrow_reader::ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<
        'a,
        parquet::errors::Result<Arc<parquet::file::metadata::ParquetMetaData>>,
    > {
        Box::pin(async move {
            let size = self.size;
            // One ranged read for the tail and a footer of up to 64 KiB (most), not two.
            let metadata = parquet::file::metadata::ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(64 << 10))
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        })
    }
}

/// The store of a `file://` lake: object_store's [`LocalFileSystem`] made durable.
///
/// A local write is durable only after its data and every directory entry leading to it are
/// fsynced; until then a power cut can leave the file empty or its name missing, while the
/// flusher has already removed the file's rows from the buffer (or the compactor committed it).
/// So:
/// - `LocalFileSystem::with_fsync(true)` fsyncs each file before renaming it from its staging
///   name into place (a visible name never points at unsynced data, which the flusher's
///   recovery relies on: it trusts an object that exists), then the directory of the rename,
///   and every directory the write created;
/// - after each write this store also fsyncs every directory from the object's up to the lake
///   root. A directory that another write created concurrently is otherwise not durable until
///   that write finishes, and a directory left by an earlier run without fsync never is.
///
/// A write returns only after all of this, through `put` and through multipart uploads
/// (`Lake::put` of large objects, and the `BufWriter` behind `Lake::writer`). Deletes are not
/// fsynced: an object that comes back after a power cut is an orphan the sweeper removes again.
#[derive(Debug)]
struct DurableLocal {
    inner: LocalFileSystem,
    /// The lake root on disk, the last directory fsynced after a write.
    root: PathBuf,
}

impl DurableLocal {
    fn new(prefix: &ObjectPath) -> Result<DurableLocal, object_store::Error> {
        let inner = LocalFileSystem::new()
            .with_automatic_cleanup(true)
            .with_fsync(true);
        // The root as the parent of a child, mapped like every object below it (the prefix
        // itself may not be a valid object path: `file:///` has an empty one).
        let child = inner.path_to_filesystem(&prefix.clone().join("_"))?;
        let root = child
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or(child);
        Ok(DurableLocal { inner, root })
    }

    /// The directories to fsync after writing `location`: from its parent up to the lake root.
    /// The parent is in the list although `with_fsync` synced it after the rename: syncing a
    /// clean directory again is cheap, and the list does not depend on that option's details.
    fn dirs_of(&self, location: &ObjectPath) -> Result<Vec<PathBuf>, object_store::Error> {
        let file = self.inner.path_to_filesystem(location)?;
        Ok(file
            .ancestors()
            .skip(1)
            .take_while(|d| d.starts_with(&self.root))
            .map(std::path::Path::to_path_buf)
            .collect())
    }
}

/// Fsyncs directories (deepest first) off the async threads.
async fn sync_dirs(dirs: Vec<PathBuf>) -> Result<(), object_store::Error> {
    tokio::task::spawn_blocking(move || {
        for dir in &dirs {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: format!("cannot fsync directory {}: {e}", dir.display()).into(),
                })?;
        }
        Ok(())
    })
    .await
    .map_err(|e| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: format!("directory fsync task failed: {e}").into(),
    })?
}

impl std::fmt::Display for DurableLocal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DurableLocal({})", self.root.display())
    }
}

#[async_trait::async_trait]
impl ObjectStore for DurableLocal {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        let dirs = self.dirs_of(location)?;
        let done = self.inner.put_opts(location, payload, opts).await?;
        sync_dirs(dirs).await?;
        Ok(done)
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        let dirs = self.dirs_of(location)?;
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(DurableUpload { inner, dirs }))
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &ObjectPath,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectPath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&ObjectPath>,
        offset: &ObjectPath,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        let dirs = self.dirs_of(to)?;
        self.inner.copy_opts(from, to, options).await?;
        sync_dirs(dirs).await
    }

    async fn rename_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: object_store::RenameOptions,
    ) -> object_store::Result<()> {
        let dirs = self.dirs_of(to)?;
        self.inner.rename_opts(from, to, options).await?;
        sync_dirs(dirs).await
    }
}

/// A multipart upload to a `file://` lake: `LocalFileSystem`'s (fsync of the staging file,
/// rename, fsync of its directory on completion), then the directories up to the lake root.
#[derive(Debug)]
struct DurableUpload {
    inner: Box<dyn object_store::MultipartUpload>,
    dirs: Vec<PathBuf>,
}

#[async_trait::async_trait]
impl object_store::MultipartUpload for DurableUpload {
    fn put_part(&mut self, data: PutPayload) -> object_store::UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<object_store::PutResult> {
        let done = self.inner.complete().await?;
        sync_dirs(std::mem::take(&mut self.dirs)).await?;
        Ok(done)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

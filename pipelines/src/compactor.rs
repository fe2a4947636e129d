//! The compaction executor: lease a plan from the control plane, k-way merge the plan's
//! Parquet files into one sorted file, upload it, and commit the swap.
//!
//! The merge streams: each input is read a batch at a time through the object store, rows are
//! compared on the signal's sort columns in Arrow's row format (a heap of the inputs' heads),
//! and the output is written as it is produced (multipart for large files). `memory_bytes`
//! bounds it whatever the data: the plan's inputs (their readers take a quarter), their
//! batches (half, sized from each file's footer) and the output's unfinished row group (a
//! quarter); [`budget`] estimates these from the files' footers. The output keeps the
//! lake schema and the sort order. Its footer names the lease, so reconciliation never
//! registers an output whose commit did not happen. If the commit fails (the lease was lost
//! to another compactor after expiring, or an input was expired by retention), the output
//! object is deleted and nothing changes in the index.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_row::{RowConverter, Rows, SortField};
use futures::StreamExt;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::ParquetRecordBatchStream;
use parquet::arrow::{AsyncArrowWriter, ParquetRecordBatchStreamBuilder};
use parquet::file::metadata::PageIndexPolicy;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;
use weir_catalog::layout::{self, FileFacts, META_AGENT_ID, META_COMPACTION_LEASE};
use weir_catalog::{Catalog, CatalogError, CompactionLease, LeaseRequest, SegmentRecord};
use weir_schema::Signal;

use crate::lake::{Lake, LakeFileReader};
use crate::metrics::Metrics;
use crate::parquet_writer::{writer_properties, FileSummary, ParquetConfig};

mod budget;

pub use budget::max_inputs_for;
use budget::{decoded_row_bytes, read_rows, reader_bytes};

/// Settings of a compactor.
#[derive(Debug, Clone)]
pub struct CompactorConfig {
    /// Who leases (agent id).
    pub agent_id: String,
    /// Largest output (and plan) size, bytes.
    pub target_bytes: u64,
    /// Lease duration; a compactor that dies mid-merge frees its inputs after this.
    pub lease_ttl: Duration,
    /// Pause between attempts when there is nothing to do.
    pub interval: Duration,
    /// Only segments at least this old are merged.
    pub min_age: Duration,
    /// Fewest inputs worth merging.
    pub min_inputs: usize,
    /// Parquet writer settings.
    pub parquet: ParquetConfig,
    /// Most rows read per input batch (fewer when `memory_bytes` says so).
    pub read_batch_rows: usize,
    /// Memory one merge may hold (decoded input batches and the unfinished output row group).
    pub memory_bytes: usize,
    /// Most inputs a plan may have ([`max_inputs_for`] the memory, as the agent sets it).
    pub max_inputs: usize,
}

impl Default for CompactorConfig {
    fn default() -> Self {
        CompactorConfig {
            agent_id: "weir".into(),
            target_bytes: 512 << 20,
            lease_ttl: Duration::from_secs(600),
            interval: Duration::from_secs(30),
            min_age: Duration::from_secs(60),
            min_inputs: 2,
            parquet: ParquetConfig::default(),
            read_batch_rows: 8192,
            memory_bytes: 64 << 20,
            max_inputs: max_inputs_for(64 << 20),
        }
    }
}

/// Errors of one compaction.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// The control plane failed.
    #[error("control plane: {0}")]
    Catalog(#[from] CatalogError),
    /// Reading or writing Parquet failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// The object store failed.
    #[error("lake: {0}")]
    Lake(#[from] crate::lake::LakeError),
    /// The plan cannot be merged.
    #[error("plan {lease}: {reason}")]
    Plan {
        /// Lease id.
        lease: Uuid,
        /// Why.
        reason: String,
    },
}

/// What one compaction did.
#[derive(Debug, Clone, PartialEq)]
pub struct Compaction {
    /// The lease.
    pub lease: Uuid,
    /// Segments merged.
    pub inputs: Vec<Uuid>,
    /// The merged segment.
    pub output: SegmentRecord,
    /// The most Arrow memory the inputs' decoded batches and sort keys held at once.
    pub peak_input_bytes: usize,
}

/// Leases plans and merges them.
pub struct Compactor {
    lake: Lake,
    catalog: Arc<dyn Catalog>,
    metrics: Metrics,
    config: CompactorConfig,
}

/// One input being merged: its stream, current batch and that batch's sort keys.
struct Input {
    stream: ParquetRecordBatchStream<LakeFileReader>,
    batch: RecordBatch,
    rows: Rows,
    pos: usize,
}

impl Input {
    /// Arrow memory of the current batch and its sort keys.
    fn held(&self) -> usize {
        self.batch.get_array_memory_size() + self.rows.size()
    }

    /// The sort key of the head row.
    fn head(&self) -> arrow_row::Row<'_> {
        self.rows.row(self.pos)
    }
}

/// Restores the heap property below `at` (a min-heap of input indices by head row, ties by
/// index so equal keys keep the inputs' order).
fn sift_down(heap: &mut [usize], mut at: usize, inputs: &[Input]) {
    let less = |a: usize, b: usize| (inputs[a].head(), a) < (inputs[b].head(), b);
    loop {
        let (l, r) = (2 * at + 1, 2 * at + 2);
        let mut min = at;
        if l < heap.len() && less(heap[l], heap[min]) {
            min = l;
        }
        if r < heap.len() && less(heap[r], heap[min]) {
            min = r;
        }
        if min == at {
            return;
        }
        heap.swap(at, min);
        at = min;
    }
}

impl Compactor {
    /// A compactor over a lake and a control plane.
    pub fn new(
        lake: Lake,
        catalog: Arc<dyn Catalog>,
        metrics: Metrics,
        config: CompactorConfig,
    ) -> Self {
        Compactor {
            lake,
            catalog,
            metrics,
            config,
        }
    }

    fn lease_request(&self) -> LeaseRequest {
        LeaseRequest {
            agent_id: self.config.agent_id.clone(),
            ttl_ms: self.config.lease_ttl.as_millis().clamp(1_000, 3_600_000) as u64,
            target_bytes: self.config.target_bytes,
            min_inputs: self.config.min_inputs.max(2),
            max_inputs: self.config.max_inputs.clamp(2, 256),
            min_age_ms: self.config.min_age.as_millis() as u64,
            tenant: None,
            schema_version: Some(weir_schema::SCHEMA_VERSION),
        }
    }

    /// Leases and runs one plan; `None` when there is nothing to compact.
    pub async fn run_once(&self) -> Result<Option<Compaction>, CompactError> {
        let Some(lease) = self.catalog.lease_compaction(&self.lease_request()).await? else {
            return Ok(None);
        };
        debug!(lease = %lease.lease_id, inputs = lease.inputs.len(), partition = %lease.partition, "leased a compaction");
        let (output, peak_input_bytes) = match self.merge(&lease).await {
            Ok(o) => o,
            Err(e) => {
                self.metrics.compactions.failed.inc();
                return Err(e);
            }
        };
        match self
            .catalog
            .commit_compaction(lease.lease_id, std::slice::from_ref(&output))
            .await
        {
            Ok(()) => {
                let m = &self.metrics.compactions;
                m.committed.inc();
                m.compacted_segments.inc_by(lease.inputs.len() as u64);
                info!(lease = %lease.lease_id, tenant = %lease.tenant, signal = %lease.signal, partition = %lease.partition, inputs = lease.inputs.len(), rows = output.row_count, bytes = output.bytes, output = %output.id, peak_input_bytes, "compaction committed");
                Ok(Some(Compaction {
                    lease: lease.lease_id,
                    inputs: lease.inputs.iter().map(|s| s.id).collect(),
                    output,
                    peak_input_bytes,
                }))
            }
            Err(e) => {
                if matches!(e, CatalogError::LeaseLost { .. }) {
                    self.metrics.compactions.lease_lost.inc();
                } else {
                    self.metrics.compactions.failed.inc();
                }
                // An uncommitted output is garbage; an error here may also mean the commit
                // landed and only its answer was lost, so check before deleting.
                let committed = self
                    .catalog
                    .lookup(&[output.id])
                    .await
                    .map(|r| !r.is_empty())
                    .unwrap_or(true);
                if !committed {
                    if let Err(de) = self.lake.delete(&output.object_key).await {
                        warn!(error = %de, key = %output.object_key, "could not delete an uncommitted compaction output");
                    }
                }
                Err(e.into())
            }
        }
    }

    /// A stream over an input whose batches fit `share` bytes of decoded Arrow, and what its
    /// reader holds besides ([`reader_bytes`]).
    async fn open(
        &self,
        seg: &SegmentRecord,
        signal: Signal,
        share: usize,
    ) -> Result<(ParquetRecordBatchStream<LakeFileReader>, usize), CompactError> {
        let reader = self.lake.parquet_reader(&seg.object_key, seg.bytes);
        // Read as the lake schema whatever field ids the file carries (files written before
        // the ids have none), so rows of old and new files merge.
        // With the offset index when the file has one: its per-page byte-array sizes find the
        // widest rows (`decoded_row_bytes`).
        let options = ArrowReaderOptions::new()
            .with_schema(signal.schema())
            .with_offset_index_policy(PageIndexPolicy::Optional);
        let builder = ParquetRecordBatchStreamBuilder::new_with_options(reader, options).await?;
        let (per_row, per_batch) = decoded_row_bytes(builder.metadata(), signal.sort_columns());
        let rows = read_rows(
            share.saturating_sub(per_batch),
            per_row,
            self.config.read_batch_rows,
        );
        let reader = reader_bytes(builder.metadata());
        Ok((builder.with_batch_size(rows).build()?, reader))
    }

    /// The next non-empty batch of a stream and its sort keys.
    async fn next_batch(
        stream: &mut ParquetRecordBatchStream<LakeFileReader>,
        signal: Signal,
        converter: &RowConverter,
    ) -> Result<Option<(RecordBatch, Rows)>, CompactError> {
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            if batch.num_rows() == 0 {
                continue;
            }
            let batch = RecordBatch::try_new(signal.schema(), batch.columns().to_vec())?;
            let rows = converter.convert_columns(&sort_keys(signal, &batch)?)?;
            return Ok(Some((batch, rows)));
        }
        Ok(None)
    }

    /// Loads the next batch of an input; false at its end.
    async fn advance(
        input: &mut Input,
        signal: Signal,
        converter: &RowConverter,
    ) -> Result<bool, CompactError> {
        match Self::next_batch(&mut input.stream, signal, converter).await? {
            Some((batch, rows)) => {
                input.batch = batch;
                input.rows = rows;
                input.pos = 0;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Opens every input of the plan at its first batch; also returns what their readers hold
    /// besides the batches.
    async fn open_inputs(
        &self,
        lease: &CompactionLease,
        signal: Signal,
        converter: &RowConverter,
    ) -> Result<(Vec<Input>, usize), CompactError> {
        let mut inputs = Vec::with_capacity(lease.inputs.len());
        let mut readers = 0usize;
        // One share more than the inputs: while an input reads its next batch, its last one
        // is still held.
        let share = self.config.memory_bytes / 2 / (lease.inputs.len() + 1);
        for seg in &lease.inputs {
            let (mut stream, reader) = self.open(seg, signal, share).await?;
            readers = readers.saturating_add(reader);
            if let Some((batch, rows)) = Self::next_batch(&mut stream, signal, converter).await? {
                inputs.push(Input {
                    stream,
                    batch,
                    rows,
                    pos: 0,
                });
            }
        }
        Ok((inputs, readers))
    }

    /// Merges the lease's inputs into one object; returns its segment record and the most
    /// memory the inputs held at once.
    async fn merge(&self, lease: &CompactionLease) -> Result<(SegmentRecord, usize), CompactError> {
        let plan_err = |reason: String| CompactError::Plan {
            lease: lease.lease_id,
            reason,
        };
        let signal = Signal::parse(&lease.signal)
            .ok_or_else(|| plan_err(format!("unknown signal {:?}", lease.signal)))?;
        if lease.schema_version != weir_schema::SCHEMA_VERSION {
            return Err(plan_err(format!(
                "schema version {} is not this agent's ({})",
                lease.schema_version,
                weir_schema::SCHEMA_VERSION
            )));
        }
        let converter = sort_key_converter(signal)?;
        let (mut inputs, readers) = self.open_inputs(lease, signal, &converter).await?;
        if readers > self.config.memory_bytes / 4 {
            warn!(lease = %lease.lease_id, reader_bytes = readers, budget = self.config.memory_bytes / 4, inputs = lease.inputs.len(), "a compaction's inputs' readers hold more than a quarter of compaction.memory (row groups larger than the plan assumed)");
        }

        // The output is named after the lease, so the control plane can delete it if this
        // compactor dies before committing.
        let output = lease.output()?;
        let key = output.to_string();
        let summary = plan_summary(lease);
        let extra = vec![
            (META_AGENT_ID.to_string(), self.config.agent_id.clone()),
            (
                META_COMPACTION_LEASE.to_string(),
                lease.lease_id.to_string(),
            ),
        ];
        let props = writer_properties(
            &self.config.parquet,
            signal,
            &lease.tenant,
            &summary,
            &extra,
        )?;
        let sink = self.lake.writer(&key);
        // With the Iceberg field ids, as the flusher writes (`Signal::file_schema`).
        let mut writer = AsyncArrowWriter::try_new(sink, signal.file_schema(), Some(props))?;

        let mut written = 0u64;
        let mut held: usize = inputs.iter().map(Input::held).sum();
        let mut peak_input_bytes = held;
        // The output batch is sized like the row group's share (a quarter); it is not in the
        // budget (docs/control-plane.md, "Compaction").
        let widest = inputs
            .iter()
            .map(|i| i.held() / i.batch.num_rows().max(1))
            .max()
            .unwrap_or(1);
        let out_rows = read_rows(
            self.config.memory_bytes / 4,
            widest,
            self.config.read_batch_rows,
        );
        let row_group_budget = self.config.memory_bytes / 4;
        let result: Result<(), CompactError> = async {
            let mut heap: Vec<usize> = (0..inputs.len()).collect();
            for at in (0..heap.len() / 2).rev() {
                sift_down(&mut heap, at, &inputs);
            }
            while let Some(&first) = heap.first() {
                // Take rows from the smallest head until some input's batch runs out, then
                // emit them in one interleave and refill that input.
                let mut picks: Vec<(usize, usize)> = Vec::with_capacity(out_rows);
                let mut best = first;
                let exhausted = loop {
                    picks.push((best, inputs[best].pos));
                    inputs[best].pos += 1;
                    if inputs[best].pos == inputs[best].batch.num_rows() {
                        break true;
                    }
                    sift_down(&mut heap, 0, &inputs);
                    if picks.len() >= out_rows {
                        break false;
                    }
                    best = heap[0];
                };
                let sources: Vec<&RecordBatch> = inputs.iter().map(|i| &i.batch).collect();
                let out = arrow_select::interleave::interleave_record_batch(&sources, &picks)?;
                written += out.num_rows() as u64;
                writer.write(&out).await?;
                drop(out);
                if writer.memory_size() > row_group_budget {
                    // Close the row group early rather than hold more than its share.
                    writer.flush().await?;
                }
                // The merge, the inputs' decoding and the writer's encoding are CPU work on the
                // runtime, and the writes to its buffered sink rarely wait: let the other tasks
                // (the sources' requests) run between batches. On one core tokio has a single
                // worker, which this loop held for seconds under load (docs/performance.md,
                // "Overload soak").
                tokio::task::yield_now().await;
                if exhausted {
                    // `best` is at the heap's top: its batch ran out.
                    let input = &mut inputs[best];
                    let old = input.held();
                    if Self::advance(input, signal, &converter).await? {
                        // Old and new batches both lived while the new one was read.
                        peak_input_bytes = peak_input_bytes.max(held + input.held());
                        held = held - old + input.held();
                    } else {
                        held -= old;
                        // Done: free its batch and take it off the heap.
                        input.batch = RecordBatch::new_empty(signal.schema());
                        input.rows = converter.empty_rows(0, 0);
                        input.pos = 0;
                        let last = heap.len() - 1;
                        heap.swap(0, last);
                        heap.pop();
                    }
                    sift_down(&mut heap, 0, &inputs);
                }
            }
            Ok(())
        }
        .await;
        let result = match result {
            Ok(()) => writer
                .finish()
                .await
                .map(|_| ())
                .map_err(CompactError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            // Dropping the writer would leave a multipart upload's parts in the store.
            if let Err(abort) = writer.into_inner().abort().await {
                warn!(key = %key, error = %abort, "aborting the compaction output's upload failed; its parts stay until the store's lifecycle rule removes them");
            }
            let _ = self.lake.delete(&key).await;
            return Err(e);
        }
        if written != summary.rows {
            let _ = self.lake.delete(&key).await;
            return Err(plan_err(format!(
                "inputs hold {} rows by the index but {written} were read",
                summary.rows
            )));
        }
        if peak_input_bytes > self.config.memory_bytes / 2 {
            warn!(lease = %lease.lease_id, peak_input_bytes, budget = self.config.memory_bytes / 2, inputs = lease.inputs.len(), "a compaction's inputs held more than their share of compaction.memory (rows wider than the files' statistics said, or too wide for the least batch)");
        }
        let bytes = self.lake.size(&key).await?;
        let facts = FileFacts {
            rows: written,
            bytes,
            min_timestamp: summary.min_timestamp,
            max_timestamp: summary.max_timestamp,
            services: summary.services,
            schema_version: lease.schema_version,
        };
        let record = layout::segment_record(
            &output,
            facts,
            &self.config.agent_id,
            weir_catalog::now_ns(),
        );
        Ok((record, peak_input_bytes))
    }

    /// Compacts until `shutdown`: back to back while there is work, every `interval`
    /// otherwise.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let wait = match self.run_once().await {
                Ok(Some(_)) => Duration::ZERO,
                Ok(None) => self.config.interval,
                Err(CompactError::Catalog(e)) if e.is_retryable() => {
                    debug!(error = %e, "control plane unavailable; compaction waits");
                    self.config.interval
                }
                Err(e) => {
                    warn!(error = %e, "compaction failed");
                    self.config.interval
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

fn sort_keys(
    signal: Signal,
    batch: &RecordBatch,
) -> Result<Vec<arrow_array::ArrayRef>, CompactError> {
    signal
        .sort_columns()
        .iter()
        .map(|c| {
            batch.column_by_name(c).cloned().ok_or_else(|| {
                CompactError::Arrow(arrow_schema::ArrowError::SchemaError(format!(
                    "missing sort column {c}"
                )))
            })
        })
        .collect()
}

/// The row converter of a signal's sort columns (rows compare in the files' sort order).
fn sort_key_converter(signal: Signal) -> Result<RowConverter, CompactError> {
    let schema = signal.schema();
    let fields = signal
        .sort_columns()
        .iter()
        .map(|c| {
            schema
                .field_with_name(c)
                .map(|f| SortField::new(f.data_type().clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RowConverter::new(fields)?)
}

/// What the output of a plan holds, by the index: the inputs' rows, time range and services.
fn plan_summary(lease: &CompactionLease) -> FileSummary {
    let services = weir_catalog::bound_services(lease.inputs.iter().flat_map(|s| &s.services));
    FileSummary {
        rows: lease.inputs.iter().map(|s| s.row_count).sum(),
        min_timestamp: lease
            .inputs
            .iter()
            .map(|s| s.min_timestamp)
            .min()
            .unwrap_or(0),
        max_timestamp: lease
            .inputs
            .iter()
            .map(|s| s.max_timestamp)
            .max()
            .unwrap_or(0),
        services,
    }
}

//! Writing a commit: manifests, manifest lists and the metadata JSON, the pointer swap, and
//! the cleanup of what the new metadata no longer names.

use parquet::arrow::async_reader::AsyncFileReader;

use futures::StreamExt;

use super::*;
use crate::table::ColumnCounts;

/// Footers of new files read at once when a pass publishes them.
const FOOTER_READS: usize = 8;

impl Publisher {
    /// Commits what changed since `state` (`None`: the table written afresh) over the
    /// pointer at version `expected`.
    pub(super) async fn commit(
        &self,
        tenant: &str,
        signal: Signal,
        state: Option<&TableState>,
        expected: Option<u64>,
    ) -> Result<Option<(TableState, PublishReport)>, IcebergError> {
        let now = now_ms();
        let empty = BTreeMap::new();
        let live = state.map(|s| &s.live).unwrap_or(&empty);
        let active = self.consistent_active(tenant, signal, live).await?;
        let active_ids: HashSet<Uuid> = active.iter().map(|s| s.id).collect();
        let added: Vec<&SegmentRecord> = active
            .iter()
            .filter(|s| !live.contains_key(&s.id))
            .collect();
        let removed_ids: Vec<Uuid> = live
            .keys()
            .filter(|id| !active_ids.contains(id))
            .copied()
            .collect();
        let expired = state
            .map(|s| expired_snapshots(&s.metadata, now, self.settings.snapshot_max_age))
            .unwrap_or_default();
        if added.is_empty() && removed_ids.is_empty() && expired.is_empty() && state.is_some() {
            return Ok(None);
        }

        // Classify the removed: compaction inputs whose output (or its output, ...) is among
        // the added, and the rest (retention).
        let (outputs, compacted) = self.classify(&added, &removed_ids).await?;

        let schema = table::schema(signal)?;
        let (mut builder, current_schema, spec, parent, sequence) = match state {
            Some(s) => (
                TableMetadataBuilder::new_from_metadata(
                    s.metadata.clone(),
                    Some(self.uri(&s.pointer.metadata_key)),
                ),
                s.metadata.current_schema().clone(),
                s.metadata.default_partition_spec().as_ref().clone(),
                s.metadata.current_snapshot_id(),
                s.metadata.last_sequence_number(),
            ),
            None => {
                let spec = table::partition_spec(signal, &schema)?;
                let order = table::sort_order(signal, &schema)?;
                let location = self.uri(&format!("tenant={tenant}/signal={signal}"));
                let fresh = TableMetadataBuilder::new(
                    schema.clone(),
                    spec,
                    order,
                    location,
                    FormatVersion::V2,
                    HashMap::new(),
                )?
                .build()?
                .metadata;
                let mapping = table::name_mapping(fresh.current_schema());
                let props = HashMap::from([
                    (
                        "schema.name-mapping.default".to_string(),
                        mapping.to_string(),
                    ),
                    (
                        "write.parquet.compression-codec".to_string(),
                        "zstd".to_string(),
                    ),
                    (
                        "write.metadata.previous-versions-max".to_string(),
                        self.settings.keep_metadata_files.to_string(),
                    ),
                    ("weir.tenant".to_string(), tenant.to_string()),
                    ("weir.signal".to_string(), signal.to_string()),
                ]);
                let spec = fresh.default_partition_spec().as_ref().clone();
                let schema = fresh.current_schema().clone();
                (
                    TableMetadataBuilder::new_from_metadata(fresh, None).set_properties(props)?,
                    schema,
                    spec,
                    None,
                    0,
                )
            }
        };

        let mut live: BTreeMap<Uuid, LiveFile> = live.clone();
        let mut written: Vec<String> = Vec::new();
        let result = self
            .write_snapshots(
                tenant,
                signal,
                now,
                &mut live,
                &mut written,
                Plan {
                    active: &active,
                    added: &added,
                    outputs: &outputs,
                    compacted: &compacted,
                    removed_ids: &removed_ids,
                    schema: current_schema.as_ref().clone(),
                    spec,
                    parent,
                    sequence,
                },
            )
            .await;
        let snapshots = match result {
            Ok(s) => s,
            Err(e) => {
                self.delete_all(&written).await;
                return Err(e);
            }
        };
        let report = PublishReport {
            committed: 1,
            snapshots: snapshots.len(),
            expired: expired.len(),
            operations: snapshots
                .iter()
                .map(|s| s.summary().operation.as_str().to_string())
                .collect(),
        };
        for snap in snapshots {
            let id = snap.snapshot_id();
            builder = builder.add_snapshot(snap)?.set_ref(
                MAIN_BRANCH,
                SnapshotReference::new(id, SnapshotRetention::branch(None, None, None)),
            )?;
        }
        if !expired.is_empty() {
            builder = builder.remove_snapshots(&expired);
        }
        let metadata = builder.build()?.metadata;
        let version = expected.unwrap_or(0) + 1;
        let dir = metadata_dir(tenant, signal);
        let metadata_key = format!("{dir}/{version:05}-{}.metadata.json", Uuid::now_v7());
        if let Err(e) = self
            .lake
            .put(&metadata_key, serde_json::to_vec(&metadata)?)
            .await
        {
            self.delete_all(&written).await;
            return Err(e.into());
        }
        written.push(metadata_key.clone());
        let pointer = IcebergPointer {
            tenant: tenant.to_string(),
            signal: signal.to_string(),
            version,
            metadata_key,
            updated_at: weir_catalog::now_ns(),
        };
        match self.catalog.swap_iceberg_table(expected, &pointer).await {
            Ok(true) => {}
            Ok(false) => {
                self.delete_all(&written).await;
                return Err(IcebergError::Conflict(format!(
                    "{tenant}.{signal}: another writer committed version {version} first"
                )));
            }
            Err(e) => {
                // The swap may have happened (an answer lost): leave the files; a metadata
                // file the pointer does not name is never read.
                return Err(e.into());
            }
        }
        // Committed: what the new metadata no longer names can go.
        if let Some(old) = state {
            let mut gone: Vec<String> = Vec::new();
            for snap in old.metadata.snapshots() {
                if expired.contains(&snap.snapshot_id()) {
                    if let Ok(list_key) = self.key_of(snap.manifest_list()) {
                        if let Ok(bytes) = self.lake.get(&list_key).await {
                            if let Ok(list) =
                                ManifestList::parse_with_version(&bytes, FormatVersion::V2)
                            {
                                gone.extend(
                                    list.entries()
                                        .iter()
                                        .filter_map(|m| self.key_of(&m.manifest_path).ok()),
                                );
                            }
                        }
                        gone.push(list_key);
                    }
                }
            }
            let kept: HashSet<&str> = metadata
                .metadata_log()
                .iter()
                .map(|l| l.metadata_file.as_str())
                .collect();
            let mut old_files: Vec<String> = old
                .metadata
                .metadata_log()
                .iter()
                .map(|l| l.metadata_file.clone())
                .collect();
            old_files.push(self.uri(&old.pointer.metadata_key));
            gone.extend(
                old_files
                    .iter()
                    .filter(|f| !kept.contains(f.as_str()))
                    .filter_map(|f| self.key_of(f).ok()),
            );
            self.delete_all(&gone).await;
        }
        // The files this commit removed stay listed by the snapshot before it until that one
        // expires; entries of expired snapshots are forgotten.
        let age_ms = i64::try_from(self.settings.snapshot_max_age.as_millis()).unwrap_or(i64::MAX);
        let mut removed: HashMap<Uuid, i64> = state
            .map(|s| s.removed.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, at)| at.saturating_add(age_ms) >= now)
            .collect();
        for id in &removed_ids {
            removed.insert(*id, now);
        }
        Ok(Some((
            TableState {
                pointer,
                metadata,
                live,
                removed,
            },
            report,
        )))
    }

    /// The column counts of the segments' files, from their footers, read a few at a time (a
    /// footer is one ranged read). A file whose footer cannot be read is left out, with a
    /// warning: it is published without counts (they are optional; engines then do not prune
    /// it on nulls), and keeps none until `weir iceberg rebuild`.
    async fn column_counts(
        &self,
        schema: &Schema,
        segments: &[&SegmentRecord],
    ) -> HashMap<Uuid, ColumnCounts> {
        // Owned inputs: the futures must not borrow across the stream (the pass's future is
        // spawned, so it must be Send for every lifetime).
        let reads: Vec<_> = segments
            .iter()
            .map(|s| {
                let lake = self.lake.clone();
                let (id, key, size) = (s.id, s.object_key.clone(), s.bytes);
                async move {
                    let mut reader = lake.parquet_reader(&key, size);
                    (id, key, reader.get_metadata(None).await)
                }
            })
            .collect();
        let mut out = HashMap::new();
        let mut done = futures::stream::iter(reads).buffer_unordered(FOOTER_READS);
        while let Some((id, key, footer)) = done.next().await {
            match footer {
                Ok(footer) => {
                    out.insert(id, ColumnCounts::of_footer(schema, &footer));
                }
                Err(e) => {
                    warn!(%key, error = %e, "iceberg: no column counts for a file whose footer cannot be read");
                }
            }
        }
        out
    }

    pub(super) async fn delete_all(&self, keys: &[String]) {
        for k in keys {
            if let Err(e) = self.lake.delete(k).await {
                warn!(key = %k, error = %e, "iceberg: could not delete a metadata file; it stays unreferenced");
            }
        }
    }

    /// Writes the manifests and manifest lists of a pass's snapshots (append, replace,
    /// delete, each when it has files), updating `live`; returns the snapshots in order.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn write_snapshots(
        &self,
        tenant: &str,
        signal: Signal,
        now: i64,
        live: &mut BTreeMap<Uuid, LiveFile>,
        written: &mut Vec<String>,
        plan: Plan<'_>,
    ) -> Result<Vec<Snapshot>, IcebergError> {
        let dir = metadata_dir(tenant, signal);
        let by_id: HashMap<Uuid, &SegmentRecord> = plan.active.iter().map(|s| (s.id, s)).collect();
        let appends: Vec<Uuid> = plan
            .added
            .iter()
            .map(|s| s.id)
            .filter(|id| !plan.outputs.contains(id))
            .collect();
        let mut outs: Vec<Uuid> = plan.outputs.iter().copied().collect();
        outs.sort();
        let mut ins: Vec<Uuid> = plan.compacted.iter().copied().collect();
        ins.sort();
        let mut deletes: Vec<Uuid> = plan
            .removed_ids
            .iter()
            .copied()
            .filter(|id| !plan.compacted.contains(id))
            .collect();
        deletes.sort();
        let in_rows: u64 = ins
            .iter()
            .filter_map(|id| live.get(id))
            .map(|f| f.file.record_count())
            .sum();
        let out_rows: u64 = outs
            .iter()
            .filter_map(|id| by_id.get(id))
            .map(|s| s.row_count)
            .sum();
        let compaction_op = if in_rows == out_rows {
            Operation::Replace
        } else {
            Operation::Overwrite
        };
        let schema = Arc::new(plan.schema);
        let counts = self.column_counts(&schema, plan.added).await;
        let mut parent = plan.parent;
        let mut sequence = plan.sequence;
        let mut snapshots = Vec::new();
        for (op, add, remove) in [
            (Operation::Append, appends, Vec::new()),
            (compaction_op, outs, ins),
            (Operation::Delete, Vec::new(), deletes),
        ] {
            if add.is_empty() && remove.is_empty() {
                continue;
            }
            let id = snapshot_id();
            sequence += 1;
            let io = FileIO::new_with_memory();
            let manifest_key = format!("{dir}/{}-m0.avro", Uuid::now_v7());
            let manifest_uri = self.uri(&manifest_key);
            let mut w = ManifestWriterBuilder::new(
                io.new_output(&manifest_uri)?,
                Some(id),
                schema.clone(),
                plan.spec.clone(),
            )
            .build_v2_data();
            let (mut added_rows, mut deleted_rows) = (0u64, 0u64);
            for (sid, f) in live.iter() {
                if remove.contains(sid) {
                    w.add_delete_file(f.file.clone(), f.sequence, Some(f.file_sequence))?;
                    deleted_rows += f.file.record_count();
                } else {
                    w.add_existing_file(
                        f.file.clone(),
                        f.snapshot_id,
                        f.sequence,
                        Some(f.file_sequence),
                    )?;
                }
            }
            let mut new_files = Vec::new();
            for sid in &add {
                let Some(s) = by_id.get(sid) else { continue };
                let file = table::data_file(signal, &schema, self.lake.url(), s, counts.get(sid))?;
                added_rows += file.record_count();
                w.add_file(file.clone(), sequence)?;
                new_files.push((*sid, file));
            }
            let manifest = w.write_manifest_file().await?;
            self.lake
                .put(&manifest_key, io.new_input(&manifest_uri)?.read().await?)
                .await?;
            written.push(manifest_key);

            let list_key = format!("{dir}/snap-{id}-{}.avro", Uuid::now_v7());
            let list_uri = self.uri(&list_key);
            let mut lw = ManifestListWriter::v2(
                io.new_output(&list_uri)?.writer().await?,
                id,
                parent,
                sequence,
            );
            lw.add_manifests(std::iter::once(manifest))?;
            lw.close().await?;
            self.lake
                .put(&list_key, io.new_input(&list_uri)?.read().await?)
                .await?;
            written.push(list_key);

            for sid in &remove {
                live.remove(sid);
            }
            for (sid, file) in new_files {
                live.insert(
                    sid,
                    LiveFile {
                        file,
                        snapshot_id: id,
                        sequence,
                        file_sequence: sequence,
                    },
                );
            }
            let total_rows: u64 = live.values().map(|f| f.file.record_count()).sum();
            let summary = Summary {
                operation: op,
                additional_properties: HashMap::from([
                    ("added-data-files".into(), add.len().to_string()),
                    ("deleted-data-files".into(), remove.len().to_string()),
                    ("added-records".into(), added_rows.to_string()),
                    ("deleted-records".into(), deleted_rows.to_string()),
                    ("total-data-files".into(), live.len().to_string()),
                    ("total-records".into(), total_rows.to_string()),
                    ("total-delete-files".into(), "0".into()),
                    ("total-position-deletes".into(), "0".into()),
                    ("total-equality-deletes".into(), "0".into()),
                ]),
            };
            snapshots.push(
                Snapshot::builder()
                    .with_snapshot_id(id)
                    .with_parent_snapshot_id(parent)
                    .with_sequence_number(sequence)
                    .with_timestamp_ms(now)
                    .with_manifest_list(list_uri)
                    .with_summary(summary)
                    .with_schema_id(schema.schema_id())
                    .build(),
            );
            parent = Some(id);
        }
        Ok(snapshots)
    }
}

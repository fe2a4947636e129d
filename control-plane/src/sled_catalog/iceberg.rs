//! The sled index's Iceberg table pointers (tree `iceberg`, swapped with a compare-and-set
//! under the write lock and made durable before the answer) and the listing of the tables
//! that have lake segments.

use std::sync::atomic::Ordering;

use super::{from_durable, hex_id, json_values, storage, SledCatalog};
use crate::{CatalogError, IcebergPointer};

/// Key of a table's pointer in the `iceberg` tree.
fn iceberg_key(tenant: &str, signal: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + signal.len() + 1);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(signal.as_bytes());
    k
}

impl SledCatalog {
    /// Distinct (tenant, signal) prefixes of the listing tree, one seek per pair. Dead-letter
    /// segments are listed there too: a pair with only those is checked and skipped.
    pub(super) fn active_tables_blocking(&self) -> Result<Vec<(String, String)>, CatalogError> {
        let mut out = Vec::new();
        let mut from: Vec<u8> = Vec::new();
        while let Some(entry) = self.by_time.range(from.clone()..).next() {
            let (k, _) = entry?;
            let mut parts = k.splitn(3, |b| *b == 0);
            let (Some(t), Some(s)) = (parts.next(), parts.next()) else {
                return Err(CatalogError::Corrupt {
                    key: hex_id(&k),
                    reason: "listing key without tenant and signal".into(),
                });
            };
            let (tenant, signal) = (
                String::from_utf8_lossy(t).into_owned(),
                String::from_utf8_lossy(s).into_owned(),
            );
            // Next pair: past every key starting `tenant 0x00 signal 0x00`.
            from = [t, &[0], s, &[1]].concat();
            let prefix = [t, &[0], s, &[0]].concat();
            let mut any_lake_segment = false;
            for r in self.by_time.scan_prefix(&prefix) {
                let (k, _) = r?;
                let id = k.get(k.len().saturating_sub(16)..).unwrap_or_default();
                if self.get(id)?.is_some_and(|seg| !seg.is_dead_letter()) {
                    any_lake_segment = true;
                    break;
                }
            }
            if any_lake_segment {
                out.push((tenant, signal));
            }
        }
        Ok(out)
    }

    pub(super) fn iceberg_tables_blocking(&self) -> Result<Vec<IcebergPointer>, CatalogError> {
        json_values(&self.iceberg)
    }

    pub(super) fn swap_iceberg_blocking(
        &self,
        expected: Option<u64>,
        new: &IcebergPointer,
    ) -> Result<bool, CatalogError> {
        new.validate()?;
        self.durable.check_usable().map_err(from_durable)?;
        let key = iceberg_key(&new.tenant, &new.signal);
        let swapped = {
            let _lock = self.lock();
            let current = self
                .iceberg
                .get(&key)?
                .map(|v| {
                    serde_json::from_slice::<IcebergPointer>(&v).map_err(|e| {
                        CatalogError::Corrupt {
                            key: format!("iceberg {}.{}", new.tenant, new.signal),
                            reason: e.to_string(),
                        }
                    })
                })
                .transpose()?;
            if current.map(|p| p.version) != expected {
                false
            } else {
                self.iceberg
                    .insert(key, serde_json::to_vec(new).map_err(storage)?)?;
                self.changes.fetch_add(1, Ordering::AcqRel);
                true
            }
        };
        if swapped {
            self.durable()?;
        }
        Ok(swapped)
    }
}

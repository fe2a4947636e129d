//! The compactor's memory budget, estimated from each input's Parquet footer before it is
//! read: how many inputs a plan may have, how many rows an input's batch may hold, and what its
//! reader holds besides (docs/control-plane.md, "Compaction").

use parquet::basic::Type as PhysicalType;
use parquet::file::metadata::ParquetMetaData;

/// Fewest rows an input batch is read with, whatever the budget: below this the merge's cost
/// goes to per-batch overhead. A budget too small for this many rows of every input is
/// exceeded (the agent's configuration refuses a `compaction.memory` under 16 MiB).
const MIN_READ_ROWS: usize = 64;

/// What the Parquet reader of an input is taken to hold besides its batches, when planning:
/// the compressed column chunks of its row group and a decompressed page and dictionary per
/// column, about 1 MiB for the flushes' small files (measured: 256 inputs held about 400 MiB
/// more than 32 did, `docs/performance.md`, "Overload soak").
const READER_BYTES: usize = 1 << 20;

/// Most inputs a plan may have under a memory budget: their readers take a quarter of it at
/// [`READER_BYTES`] each (16 at the default 64 MiB, between 2 and 256).
pub fn max_inputs_for(memory_bytes: usize) -> usize {
    (memory_bytes / 4 / READER_BYTES).clamp(2, 256)
}

/// What an input's Parquet reader holds besides its batches, from its footer: the compressed
/// column chunks of its largest row group (fetched whole) and, per column, the decompressed
/// page and dictionary being read (the row group's uncompressed size, at most 1 MiB a column).
pub(super) fn reader_bytes(meta: &ParquetMetaData) -> usize {
    let columns = meta.file_metadata().schema_descr().num_columns() as u64;
    let most = meta
        .row_groups()
        .iter()
        .map(|rg| {
            let compressed = rg.compressed_size().max(0) as u64;
            let pages = (rg.total_byte_size().max(0) as u64).min(columns.saturating_mul(1 << 20));
            compressed.saturating_add(pages)
        })
        .max()
        .unwrap_or(0);
    usize::try_from(most).unwrap_or(usize::MAX)
}

/// Rows per read batch of an input whose decoded rows take `row_bytes`, given its `share` of
/// the budget, between [`MIN_READ_ROWS`] and `max_rows`.
pub(super) fn read_rows(share: usize, row_bytes: usize, max_rows: usize) -> usize {
    (share / row_bytes.max(1)).clamp(MIN_READ_ROWS, max_rows.max(MIN_READ_ROWS))
}

/// Arrow bytes a decoded row of a file and its sort key take, from the file's footer and
/// offset index. Per column: its values' width (4-byte offsets for byte arrays), plus for byte
/// arrays the unencoded bytes per row of its widest page (the files are sorted, so wide rows
/// cluster: a file average would let every input read a batch of its widest rows at once),
/// and never less than its uncompressed Parquet size per row. Files without the byte-array
/// size statistics fall back to the uncompressed size, which undercounts a dictionary-encoded column (every value decodes in full). The widest
/// page's bytes count twice (a decoded byte array's value buffer doubles as it grows: 72 rows
/// of 4 KB were seen in 512 KiB), and the total a tenth more (buffers' rounding). The sort key
/// (Arrow's row format) takes an 8-byte offset, and per sort column 1 + the width of a
/// fixed-width value, or for a string about 2 + 9/8 of its bytes in 8-byte mini-blocks, plus 8.
///
/// Also returns what a batch takes whatever its rows: up to three buffers per leaf column,
/// each rounded up to 64 bytes.
pub(super) fn decoded_row_bytes(meta: &ParquetMetaData, sort_columns: &[&str]) -> (usize, usize) {
    let rows = meta.file_metadata().num_rows().max(1) as u64;
    let columns = meta.file_metadata().schema_descr().num_columns();
    // Per leaf column: values (bytes in the whole file), widest page (bytes per row).
    let mut values = vec![0u64; columns];
    let mut widest = vec![0u64; columns];
    for (g, rg) in meta.row_groups().iter().enumerate() {
        let pages = meta.page_index_for_row_group(g);
        let rg_rows = rg.num_rows().max(0) as u64;
        for (c, col) in rg.columns().iter().enumerate().take(columns) {
            let n = col.num_values().max(0) as u64;
            let width = match col.column_type() {
                PhysicalType::BOOLEAN => 1,
                PhysicalType::INT32 | PhysicalType::FLOAT | PhysicalType::BYTE_ARRAY => 4,
                PhysicalType::INT64 | PhysicalType::DOUBLE => 8,
                PhysicalType::INT96 => 12,
                PhysicalType::FIXED_LEN_BYTE_ARRAY => {
                    col.column_descr().type_length().max(1) as u64
                }
            };
            let unencoded = col.unencoded_byte_array_data_bytes().unwrap_or(0).max(0) as u64;
            let decoded = n.saturating_mul(width).saturating_add(unencoded);
            values[c] =
                values[c].saturating_add(decoded.max(col.uncompressed_size().max(0) as u64));
            let Some(index) = pages.offset_index(c) else {
                continue;
            };
            let (Some(sizes), locations) = (
                index.unencoded_byte_array_data_bytes(),
                index.page_locations(),
            ) else {
                continue;
            };
            for (p, &bytes) in sizes.iter().enumerate() {
                let first = locations
                    .get(p)
                    .map_or(0, |l| l.first_row_index.max(0) as u64);
                let next = locations
                    .get(p + 1)
                    .map_or(rg_rows, |l| l.first_row_index.max(0) as u64);
                let page_rows = next.saturating_sub(first).max(1);
                widest[c] = widest[c].max(bytes.max(0) as u64 / page_rows);
            }
        }
    }
    let mut per_row = 0u64;
    let mut keys = 8u64;
    let leaves = meta.file_metadata().schema_descr();
    for c in 0..columns {
        let column = leaves.column(c);
        // The widest page's bytes and an offset, or the column's average if more.
        let avg = values[c] / rows;
        // A decoded byte array's value buffer doubles as it grows: up to twice its bytes.
        let col_row = avg.max(widest[c].saturating_mul(2).saturating_add(4));
        per_row = per_row.saturating_add(col_row);
        if sort_columns.contains(&column.path().string().as_str()) {
            keys = keys.saturating_add(match column.physical_type() {
                PhysicalType::BYTE_ARRAY => {
                    10u64.saturating_add(widest[c].max(avg).saturating_mul(9) / 8)
                }
                PhysicalType::FIXED_LEN_BYTE_ARRAY => column.type_length().max(1) as u64 + 1,
                PhysicalType::BOOLEAN => 2,
                PhysicalType::INT32 | PhysicalType::FLOAT => 5,
                _ => 13,
            });
        }
    }
    let total = per_row.saturating_add(per_row / 10).saturating_add(keys);
    let per_row = usize::try_from(total).unwrap_or(usize::MAX).max(1);
    let per_batch = 3 * 64 * columns;
    (per_row, per_batch)
}

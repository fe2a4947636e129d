//! Logs batches: typed row views and column-wise edits.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, TimestampNanosecondType};
use arrow_array::{ArrayRef, Int32Array, RecordBatch, StringArray};

use crate::batch::table;
use crate::batch::{column, map_entries, map_get, replace, string_at, AttributeList};
use crate::Error;

/// A log record to add to a batch with [`Logs::append`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewLog {
    /// Event time, unix nanoseconds.
    pub timestamp: i64,
    /// OTel severity number.
    pub severity_number: i32,
    /// Severity text.
    pub severity_text: Option<String>,
    /// Body.
    pub body: Option<String>,
    /// `service.name` (also set as a resource attribute).
    pub service_name: Option<String>,
    /// Log attributes.
    pub attributes: Vec<(String, String)>,
    /// Resource attributes.
    pub resource_attributes: Vec<(String, String)>,
}

/// A logs batch of new records.
pub(crate) fn build_logs(rows: &[NewLog]) -> Result<RecordBatch, Error> {
    use arrow_array::builder::{Int32Builder, StringBuilder, TimestampNanosecondBuilder};
    use arrow_array::{MapArray, StructArray, UInt32Array};
    use arrow_buffer::OffsetBuffer;
    use weir_schema::{attribute_entries_field, attribute_entry_fields, logs_schema};

    let n = rows.len();
    let map = |pick: &dyn Fn(&NewLog) -> Vec<(String, String)>| -> ArrayRef {
        let mut offsets = vec![0i32];
        let (mut k, mut v) = (Vec::new(), Vec::new());
        for r in rows {
            for (a, b) in pick(r) {
                k.push(a);
                v.push(Some(b));
            }
            offsets.push(k.len() as i32);
        }
        let s = StructArray::new(
            attribute_entry_fields(),
            vec![
                Arc::new(StringArray::from(k)) as ArrayRef,
                Arc::new(StringArray::from(v)),
            ],
            None,
        );
        Arc::new(MapArray::new(
            attribute_entries_field(),
            OffsetBuffer::new(offsets.into()),
            s,
            None,
            false,
        ))
    };
    let strings = |pick: &dyn Fn(&NewLog) -> Option<String>| -> ArrayRef {
        let mut b = StringBuilder::new();
        for r in rows {
            b.append_option(pick(r));
        }
        Arc::new(b.finish())
    };
    let mut ts = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut sev = Int32Builder::with_capacity(n);
    for r in rows {
        ts.append_value(r.timestamp);
        sev.append_value(r.severity_number);
    }
    let ts: ArrayRef = Arc::new(ts.finish());
    let zeros = || Arc::new(UInt32Array::from(vec![0u32; n])) as ArrayRef;
    let columns = vec![
        ts.clone(),
        ts,
        Arc::new(sev.finish()) as ArrayRef,
        strings(&|r| r.severity_text.clone()),
        strings(&|r| r.body.clone()),
        strings(&|_| None),
        strings(&|_| None),
        zeros(),
        strings(&|_| None),
        zeros(),
        strings(&|r| r.service_name.clone()),
        map(&|r| {
            let mut a = r.resource_attributes.clone();
            if let Some(s) = &r.service_name {
                if !a.iter().any(|(k, _)| k == "service.name") {
                    a.push(("service.name".into(), s.clone()));
                }
            }
            a
        }),
        strings(&|_| None),
        strings(&|_| None),
        map(&|r| r.attributes.clone()),
    ];
    Ok(RecordBatch::try_new(logs_schema(), columns)?)
}

/// One log record of a batch.
#[derive(Clone, Copy)]
pub struct LogRecord<'a> {
    batch: &'a RecordBatch,
    row: usize,
}

impl<'a> LogRecord<'a> {
    /// Index of the record in the batch.
    pub fn index(&self) -> usize {
        self.row
    }

    /// Event time, unix nanoseconds.
    pub fn timestamp(&self) -> i64 {
        self.batch
            .column_by_name("timestamp")
            .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
            .map(|a| a.value(self.row))
            .unwrap_or(0)
    }

    /// OTel severity number (0 unspecified, 9 info, 13 warn, 17 error, 21 fatal).
    pub fn severity_number(&self) -> i32 {
        self.batch
            .column_by_name("severity_number")
            .and_then(|c| c.as_primitive_opt::<Int32Type>())
            .map(|a| a.value(self.row))
            .unwrap_or(0)
    }

    /// Severity text.
    pub fn severity_text(&self) -> Option<&'a str> {
        string_at(self.batch, "severity_text", self.row)
    }

    /// The body.
    pub fn body(&self) -> Option<&'a str> {
        string_at(self.batch, "body", self.row)
    }

    /// Trace id (hex).
    pub fn trace_id(&self) -> Option<&'a str> {
        string_at(self.batch, "trace_id", self.row)
    }

    /// `service.name` of the record's resource.
    pub fn service_name(&self) -> Option<&'a str> {
        string_at(self.batch, "service_name", self.row)
    }

    /// A log attribute.
    pub fn attribute(&self, key: &str) -> Option<&'a str> {
        map_get(self.batch, "attributes", self.row, key)
    }

    /// Every log attribute.
    pub fn attributes(&self) -> Vec<(&'a str, Option<&'a str>)> {
        map_entries(self.batch, "attributes", self.row)
    }

    /// A resource attribute.
    pub fn resource_attribute(&self, key: &str) -> Option<&'a str> {
        map_get(self.batch, "resource_attributes", self.row, key)
    }
}

table!(
    Logs,
    LogRecord,
    record,
    records,
    "A logs batch (one row per log record, in the logs schema)."
);

impl Logs {
    pub(crate) fn new(batch: RecordBatch) -> Result<Logs, Error> {
        column(&batch, "body")?;
        Ok(Logs::from_batch(batch))
    }

    /// Rewrites bodies: `f` returns the new body, or `None` to keep the record's body.
    pub fn update_body(
        &mut self,
        mut f: impl FnMut(&LogRecord<'_>) -> Option<String>,
    ) -> Result<(), Error> {
        let mut changed = false;
        let bodies: Vec<Option<String>> = self
            .records()
            .map(|r| match f(&r) {
                Some(new) => {
                    changed = true;
                    Some(new)
                }
                None => r.body().map(str::to_string),
            })
            .collect();
        if changed {
            let col: ArrayRef = Arc::new(StringArray::from(bodies));
            self.batch = replace(&self.batch, "body", col)?;
        }
        Ok(())
    }

    /// Sets severities: `f` returns `(number, text)`, or `None` to keep the record's.
    pub fn update_severity(
        &mut self,
        mut f: impl FnMut(&LogRecord<'_>) -> Option<(i32, String)>,
    ) -> Result<(), Error> {
        let mut numbers = Vec::with_capacity(self.len());
        let mut texts = Vec::with_capacity(self.len());
        for r in self.records() {
            match f(&r) {
                Some((n, t)) => {
                    numbers.push(n);
                    texts.push(Some(t));
                }
                None => {
                    numbers.push(r.severity_number());
                    texts.push(r.severity_text().map(str::to_string));
                }
            }
        }
        let b = replace(
            &self.batch,
            "severity_number",
            Arc::new(Int32Array::from(numbers)),
        )?;
        self.batch = replace(&b, "severity_text", Arc::new(StringArray::from(texts)))?;
        Ok(())
    }

    /// Adds records at the end of the batch.
    pub fn append(&mut self, records: &[NewLog]) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        let new = build_logs(records)?;
        self.batch =
            arrow_select::concat::concat_batches(&self.batch.schema(), [&self.batch, &new])?;
        Ok(())
    }

    /// The body column, for column-wise reads.
    pub fn bodies(&self) -> Option<&StringArray> {
        self.batch
            .column_by_name("body")
            .and_then(|c| c.as_string_opt::<i32>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn append_adds_records_and_edits_compose() {
        let mut logs = Logs::from_batch(testing::logs(&[(9, "first", &[("k", "v")])]));
        logs.append(&[NewLog {
            timestamp: 5,
            severity_number: 17,
            severity_text: Some("ERROR".into()),
            body: Some("added".into()),
            service_name: Some("svc".into()),
            attributes: vec![("origin".into(), "transform".into())],
            ..Default::default()
        }])
        .unwrap();
        assert_eq!(logs.len(), 2);
        let r = logs.record(1);
        assert_eq!(
            (r.timestamp(), r.severity_number(), r.body()),
            (5, 17, Some("added"))
        );
        assert_eq!(r.attribute("origin"), Some("transform"));
        assert_eq!(r.resource_attribute("service.name"), Some("svc"));
        logs.update_body(|r| r.body().map(|b| b.to_uppercase()))
            .unwrap();
        logs.retain(|r| r.severity_number() >= 10).unwrap();
        assert_eq!(testing::bodies(logs.batch()), vec!["ADDED"]);
    }
}

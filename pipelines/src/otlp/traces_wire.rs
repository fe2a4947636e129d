//! OTLP traces protobuf → the traces lake schema in one walk of the wire format, with no prost
//! structs: the same rows, rejections and budget refusals as prost's decode followed by
//! [`decode_traces`](super::decode_traces). A span is read whole first (its events and links
//! into reused scratch lists), since whether it is kept depends on its links' ids, which may
//! come after anything else.

use std::ops::Range;

use super::common_wire::{
    any_text, check_listed, held_lists, push_attribute, refusal, walk, Any, Items, ResourceText,
    Scope, Shape, Stop, ATTRIBUTES_LISTED,
};
use super::logs::non_empty;
use super::shape::{Field, Shape as Listed};
use super::traces::{refusal_of, span_start, SpanColumns, SpanFields};
use super::wire::{Depth, Reader, WireError};
use super::{DecodeError, Decoded, Rejections};
use crate::budget::DecodeBudget;
use crate::columns::AttributesBuilder;

const TRACES: Shape = Shape {
    resources: "resource_spans",
    scopes: "scope_spans",
    items: "spans",
};

/// Decodes the protobuf `ExportTraceServiceRequest` `body` into one record batch of the
/// traces schema; refused whole as soon as its rows are over `budget`, or when it is malformed
/// ([`DecodeError::Malformed`] names the field), which wins over the budget as it does when
/// prost decodes the body before any row is built.
pub fn decode_traces_protobuf(
    body: &[u8],
    received_at: i64,
    budget: &DecodeBudget,
) -> Result<Decoded, DecodeError> {
    let mut cols = SpanColumns::new();
    let mut spans = Spans::new(Some(&mut cols), received_at, budget);
    let walked = walk(body, &TRACES, &mut spans);
    let rejected = std::mem::take(&mut spans.rejected);
    // The scratch lists go before a refused body is walked again.
    drop(spans);
    if let Err(stop) = walked {
        drop(cols);
        let mut check = Spans::new(None, received_at, budget);
        return Err(refusal(body, &TRACES, stop, &mut check));
    }
    Ok(Decoded::new(cols.finish()?, rejected))
}

/// An event of the span being read; its attributes are a range of `Spans::event_attrs`.
struct EventView<'a> {
    time_unix_nano: u64,
    name: &'a str,
    dropped_attributes_count: u32,
    attrs: Range<usize>,
}

/// A link of the span being read; its attributes are a range of `Spans::link_attrs`.
struct LinkView<'a> {
    trace_id: &'a [u8],
    span_id: &'a [u8],
    trace_state: &'a str,
    flags: u32,
    attrs: Range<usize>,
}

/// The scalar fields of the span being read.
#[derive(Default)]
struct SpanView<'a> {
    trace_id: &'a [u8],
    span_id: &'a [u8],
    parent_span_id: &'a [u8],
    trace_state: &'a str,
    name: &'a str,
    kind: i32,
    start_time_unix_nano: u64,
    end_time_unix_nano: u64,
    status_code: i32,
    status_message: &'a str,
    flags: u32,
}

/// What a walk does with spans: appends them to `out`, or only checks them when `out` is
/// `None`. The lists are scratch space reused from span to span.
struct Spans<'a, 'o> {
    out: Option<&'o mut SpanColumns>,
    received_at: i64,
    budget: &'o DecodeBudget,
    /// Bytes the enclosing resource's and scope's lists hold ([`Items::hold`]).
    held: usize,
    rejected: Rejections,
    attrs: Vec<(&'a str, Any<'a>)>,
    events: Vec<EventView<'a>>,
    event_attrs: Vec<(&'a str, Any<'a>)>,
    links: Vec<LinkView<'a>>,
    link_attrs: Vec<(&'a str, Any<'a>)>,
}

impl<'a, 'o> Spans<'a, 'o> {
    fn new(out: Option<&'o mut SpanColumns>, received_at: i64, budget: &'o DecodeBudget) -> Self {
        Spans {
            out,
            received_at,
            budget,
            held: 0,
            rejected: Rejections::default(),
            attrs: Vec::new(),
            events: Vec::new(),
            event_attrs: Vec::new(),
            links: Vec::new(),
            link_attrs: Vec::new(),
        }
    }

    /// Reads a `Span` whose fields are at `depth` into the view and the scratch lists.
    fn read(&mut self, buf: &'a [u8], depth: Depth) -> Result<SpanView<'a>, WireError> {
        self.attrs.clear();
        self.events.clear();
        self.event_attrs.clear();
        self.links.clear();
        self.link_attrs.clear();
        let mut sp = SpanView::default();
        let mut r = Reader::new(buf);
        while !r.is_empty() {
            let (tag, wt) = r.key()?;
            match tag {
                1 => sp.trace_id = r.bytes(wt).map_err(|e| e.at("trace_id"))?,
                2 => sp.span_id = r.bytes(wt).map_err(|e| e.at("span_id"))?,
                3 => sp.trace_state = r.string(wt).map_err(|e| e.at("trace_state"))?,
                4 => sp.parent_span_id = r.bytes(wt).map_err(|e| e.at("parent_span_id"))?,
                5 => sp.name = r.string(wt).map_err(|e| e.at("name"))?,
                6 => sp.kind = r.varint_field(wt).map_err(|e| e.at("kind"))? as i32,
                7 => {
                    sp.start_time_unix_nano =
                        r.fixed64(wt).map_err(|e| e.at("start_time_unix_nano"))?;
                }
                8 => {
                    sp.end_time_unix_nano =
                        r.fixed64(wt).map_err(|e| e.at("end_time_unix_nano"))?;
                }
                9 => {
                    let i = self.attrs.len();
                    push_attribute(&mut self.attrs, &mut r, wt, depth, "attributes", i)?;
                }
                10 | 12 | 14 => {
                    let field = match tag {
                        10 => "dropped_attributes_count",
                        12 => "dropped_events_count",
                        _ => "dropped_links_count",
                    };
                    r.varint_field(wt).map_err(|e| e.at(field))?;
                }
                11 => {
                    let i = self.events.len();
                    let (m, d) = r.message(wt, depth).map_err(|e| e.at_index("events", i))?;
                    let ev =
                        event(m, d, &mut self.event_attrs).map_err(|e| e.at_index("events", i))?;
                    self.events.push(ev);
                }
                13 => {
                    let i = self.links.len();
                    let (m, d) = r.message(wt, depth).map_err(|e| e.at_index("links", i))?;
                    let l = link(m, d, &mut self.link_attrs).map_err(|e| e.at_index("links", i))?;
                    self.links.push(l);
                }
                15 => {
                    let (m, d) = r.message(wt, depth).map_err(|e| e.at("status"))?;
                    merge_status(&mut sp, m, d).map_err(|e| e.at("status"))?;
                }
                16 => sp.flags = r.fixed32(wt).map_err(|e| e.at("flags"))?,
                _ => r.skip(wt, tag, depth)?,
            }
        }
        Ok(sp)
    }
}

impl<'a> Items<'a> for Spans<'a, '_> {
    /// One `Span`: read whole, then appended unless its ids are refused.
    fn item(
        &mut self,
        buf: &'a [u8],
        depth: Depth,
        resource: &ResourceText<'a>,
        scope: &Scope<'a>,
    ) -> Result<(), Stop> {
        check_listed(buf, &SPAN_LISTED, self)?;
        let sp = self.read(buf, depth)?;
        let Some(out) = self.out.as_deref_mut() else {
            return Ok(());
        };
        let links = self
            .links
            .iter()
            .map(|l| (l.trace_id.len(), l.span_id.len()));
        if let Some(reason) = refusal_of(sp.name, sp.trace_id, sp.span_id, sp.parent_span_id, links)
        {
            self.rejected.reject(|| reason);
            return Ok(());
        }
        let start = span_start(sp.start_time_unix_nano, self.received_at);
        for ev in &self.events {
            let attrs = self.event_attrs.get(ev.attrs.clone()).unwrap_or_default();
            out.event(
                ev.time_unix_nano,
                start,
                ev.name,
                ev.dropped_attributes_count,
                |b| attributes_of(b, attrs),
            );
        }
        for l in &self.links {
            let attrs = self.link_attrs.get(l.attrs.clone()).unwrap_or_default();
            out.link(l.trace_id, l.span_id, l.trace_state, l.flags, |b| {
                attributes_of(b, attrs)
            });
        }
        let fields = SpanFields {
            trace_id: sp.trace_id,
            span_id: sp.span_id,
            parent_span_id: sp.parent_span_id,
            trace_state: sp.trace_state,
            name: sp.name,
            kind: sp.kind,
            start_time_unix_nano: sp.start_time_unix_nano,
            end_time_unix_nano: sp.end_time_unix_nano,
            status_code: sp.status_code,
            status_message: sp.status_message,
            flags: sp.flags,
            received_at: self.received_at,
            service_name: resource.service_name,
            scope_name: non_empty(scope.name),
            scope_version: non_empty(scope.version),
        };
        let attrs = &self.attrs;
        out.span(
            &fields,
            |b| {
                for (k, v) in &resource.attrs {
                    b.entry(k, v.as_deref());
                }
            },
            |b| attributes_of(b, attrs),
        );
        self.budget
            .check(out.bytes().saturating_add(held_lists(self.held)))
            .map_err(Stop::OverBudget)
    }

    fn budget(&self) -> (&DecodeBudget, usize) {
        let rows = self.out.as_deref().map_or(0, |out| out.bytes());
        (self.budget, rows.saturating_add(self.held))
    }

    fn hold(&mut self, bytes: usize) {
        self.held = bytes;
    }
}

static EVENT_LISTED: Listed = Listed {
    fields: &[(3, ATTRIBUTES_LISTED)],
};
static LINK_LISTED: Listed = Listed {
    fields: &[(4, ATTRIBUTES_LISTED)],
};
/// What a `Span` puts in the walk's scratch lists: attributes, events, links and theirs.
static SPAN_LISTED: Listed = Listed {
    fields: &[
        (9, ATTRIBUTES_LISTED),
        (
            11,
            Field::Repeated(std::mem::size_of::<EventView<'static>>(), &EVENT_LISTED),
        ),
        (
            13,
            Field::Repeated(std::mem::size_of::<LinkView<'static>>(), &LINK_LISTED),
        ),
    ],
};

/// Appends attributes read from the wire, as `attributes_into` appends prost's.
fn attributes_of(b: &mut AttributesBuilder, attrs: &[(&str, Any<'_>)]) {
    for (k, v) in attrs {
        let text = any_text(v);
        b.entry(k, text.as_deref());
    }
}

/// A `Span.Event` whose fields are at `depth`; its attributes go to the end of `attrs`.
fn event<'a>(
    buf: &'a [u8],
    depth: Depth,
    attrs: &mut Vec<(&'a str, Any<'a>)>,
) -> Result<EventView<'a>, WireError> {
    let first = attrs.len();
    let mut ev = EventView {
        time_unix_nano: 0,
        name: "",
        dropped_attributes_count: 0,
        attrs: first..first,
    };
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => ev.time_unix_nano = r.fixed64(wt).map_err(|e| e.at("time_unix_nano"))?,
            2 => ev.name = r.string(wt).map_err(|e| e.at("name"))?,
            3 => {
                let i = attrs.len() - first;
                push_attribute(attrs, &mut r, wt, depth, "attributes", i)?;
            }
            4 => {
                let v = r
                    .varint_field(wt)
                    .map_err(|e| e.at("dropped_attributes_count"))?;
                ev.dropped_attributes_count = v as u32;
            }
            _ => r.skip(wt, tag, depth)?,
        }
    }
    ev.attrs = first..attrs.len();
    Ok(ev)
}

/// A `Span.Link` whose fields are at `depth`; its attributes go to the end of `attrs`.
fn link<'a>(
    buf: &'a [u8],
    depth: Depth,
    attrs: &mut Vec<(&'a str, Any<'a>)>,
) -> Result<LinkView<'a>, WireError> {
    let first = attrs.len();
    let mut l = LinkView {
        trace_id: &[],
        span_id: &[],
        trace_state: "",
        flags: 0,
        attrs: first..first,
    };
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => l.trace_id = r.bytes(wt).map_err(|e| e.at("trace_id"))?,
            2 => l.span_id = r.bytes(wt).map_err(|e| e.at("span_id"))?,
            3 => l.trace_state = r.string(wt).map_err(|e| e.at("trace_state"))?,
            4 => {
                let i = attrs.len() - first;
                push_attribute(attrs, &mut r, wt, depth, "attributes", i)?;
            }
            5 => {
                r.varint_field(wt)
                    .map_err(|e| e.at("dropped_attributes_count"))?;
            }
            6 => l.flags = r.fixed32(wt).map_err(|e| e.at("flags"))?,
            _ => r.skip(wt, tag, depth)?,
        }
    }
    l.attrs = first..attrs.len();
    Ok(l)
}

/// Merges a `Status` (field 1 is reserved and skipped like any unknown field).
fn merge_status<'a>(sp: &mut SpanView<'a>, buf: &'a [u8], depth: Depth) -> Result<(), WireError> {
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        match tag {
            2 => sp.status_message = r.string(wt).map_err(|e| e.at("message"))?,
            3 => sp.status_code = r.varint_field(wt).map_err(|e| e.at("code"))? as i32,
            _ => r.skip(wt, tag, depth)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

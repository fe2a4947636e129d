//! The messages every OTLP signal shares (`AnyValue`, `KeyValue`, `Resource`,
//! `InstrumentationScope`) and the walk of a request's resources and scopes down to its items
//! (log records, spans), read from the wire into borrowed views, with prost's merge rules:
//! the last value of a scalar or string field wins, a repeated field appends, and a message
//! field that appears twice is merged (for the `AnyValue` oneof: merged when both are the same
//! array or kvlist variant, replaced otherwise).

use std::borrow::Cow;

use base64::Engine;
use serde_json::Value as Json;

use super::shape::{self as counted, Field};
use super::wire::{Depth, Reader, WireError, WireType};
use super::DecodeError;
use crate::budget::{DecodeBudget, OverBudget};

/// An item (a log record, a span) of fewer bytes than this cannot list enough entries to
/// matter (at most 32 K, about 2 MB, freed before the next item); a larger one has the
/// entries it will put in the walk's scratch lists counted against the budget before it is
/// read: an empty attribute is two bytes on the wire and a 40-byte entry listed, so one span
/// of millions of them would otherwise hold hundreds of MiB before its row is checked.
/// Resources and scopes are counted as they are listed, summed over every occurrence (their
/// attributes are merged into one list), and checked once their lists pass
/// [`LISTED_FLOOR`].
const LISTED_CHECK_BYTES: usize = 64 << 10;

/// Lists of a resource or scope level smaller than this are not checked against the budget
/// (they are freed with the level), so a small body is refused for its rows only, as prost's
/// path refuses it.
const LISTED_FLOOR: usize = 1 << 20;

/// The bytes of enclosing lists a row check counts: `held` once it is past [`LISTED_FLOOR`]
/// (below it, a body is refused for its rows alone, as prost's path refuses it).
pub(crate) fn held_lists(held: usize) -> usize {
    if held > LISTED_FLOOR {
        held
    } else {
        0
    }
}

/// Refuses `listed` bytes of lists past [`LISTED_FLOOR`] that would put the `used` bytes of
/// rows over `budget`.
fn check_level(budget: &DecodeBudget, used: usize, listed: usize) -> Result<(), Stop> {
    if listed <= LISTED_FLOOR {
        return Ok(());
    }
    budget
        .check(used.saturating_add(listed))
        .map_err(Stop::OverBudget)
}

/// An attribute as the walk lists it.
type Entry<'a> = (&'a str, Any<'a>);

static ANY_LISTED: counted::Shape = counted::Shape {
    fields: &[
        (5, Field::Message(&ARRAY_LISTED)),
        (6, Field::Message(&KVLIST_LISTED)),
    ],
};
static ARRAY_LISTED: counted::Shape = counted::Shape {
    fields: &[(
        1,
        Field::Repeated(std::mem::size_of::<Any<'static>>(), &ANY_LISTED),
    )],
};
static KVLIST_LISTED: counted::Shape = counted::Shape {
    fields: &[(
        1,
        Field::Repeated(std::mem::size_of::<Entry<'static>>(), &KV_LISTED),
    )],
};
static KV_LISTED: counted::Shape = counted::Shape {
    fields: &[(2, Field::Message(&ANY_LISTED))],
};
/// A repeated `KeyValue` field as the walk lists it.
pub(crate) const ATTRIBUTES_LISTED: Field =
    Field::Repeated(std::mem::size_of::<Entry<'static>>(), &KV_LISTED);
/// An `AnyValue` field (a log record's body) as the walk lists it.
pub(crate) const ANY_VALUE_LISTED: Field = Field::Message(&ANY_LISTED);
static RESOURCE_LISTED: counted::Shape = counted::Shape {
    fields: &[(1, ATTRIBUTES_LISTED)],
};
static SCOPE_LISTED: counted::Shape = counted::Shape {
    fields: &[(3, ATTRIBUTES_LISTED)],
};

/// Refuses the item `buf` when what the walk will list of it (by `shape`) would put what
/// `items` holds (rows and enclosing lists) over its budget; small items pass uncounted.
pub(crate) fn check_listed<'a>(
    buf: &[u8],
    shape: &counted::Shape,
    items: &impl Items<'a>,
) -> Result<(), Stop> {
    // On the hot path: the bytes held are only summed for a large item.
    if buf.len() < LISTED_CHECK_BYTES {
        return Ok(());
    }
    let (budget, used) = items.budget();
    budget
        .check(used.saturating_add(counted::struct_bytes(buf, shape)))
        .map_err(Stop::OverBudget)
}

/// Why a walk stopped early.
pub(crate) enum Stop {
    Malformed(WireError),
    OverBudget(OverBudget),
}

impl From<WireError> for Stop {
    fn from(e: WireError) -> Stop {
        Stop::Malformed(e)
    }
}

/// Why a body whose walk stopped is refused: a malformed body wins over the budget, as when
/// prost decodes the whole body before any row is built, so a body that went over the budget
/// is walked again to its end by `check`, which builds nothing (the caller has dropped the
/// rows built so far).
pub(crate) fn refusal<'a>(
    body: &'a [u8],
    shape: &Shape,
    stop: Stop,
    check: &mut impl Items<'a>,
) -> DecodeError {
    match stop {
        Stop::Malformed(e) => e.into(),
        Stop::OverBudget(over) => match walk(body, shape, check) {
            Err(Stop::Malformed(e)) => e.into(),
            _ => over.into(),
        },
    }
}

impl Stop {
    fn at(self, field: &'static str) -> Stop {
        match self {
            Stop::Malformed(e) => Stop::Malformed(e.at(field)),
            over => over,
        }
    }

    fn at_index(self, field: &'static str, index: usize) -> Stop {
        match self {
            Stop::Malformed(e) => Stop::Malformed(e.at_index(field, index)),
            over => over,
        }
    }
}

/// The names of a signal's three nested repeated fields (`resource_logs`, `scope_logs`,
/// `log_records`), for error paths.
pub(crate) struct Shape {
    pub resources: &'static str,
    pub scopes: &'static str,
    pub items: &'static str,
}

/// What a walk does with each item of a request.
pub(crate) trait Items<'a> {
    /// One item (a log record, a span) of `scope` in `resource`, its fields at `depth`.
    fn item(
        &mut self,
        buf: &'a [u8],
        depth: Depth,
        resource: &ResourceText<'a>,
        scope: &Scope<'a>,
    ) -> Result<(), Stop>;

    /// The budget of the request's rows, and the bytes held so far: the rows built and the
    /// lists of the enclosing resource and scope ([`Items::hold`]).
    fn budget(&self) -> (&DecodeBudget, usize);

    /// Sets the bytes the enclosing resource and scope lists hold while their items are read.
    fn hold(&mut self, bytes: usize);
}

/// Walks an `Export*ServiceRequest` whose field 1 is a repeated `Resource*` message (field 1
/// its resource, 2 its repeated `Scope*`, 3 its schema URL), each `Scope*` with field 1 its
/// scope, 2 its repeated items and 3 its schema URL: the shape of logs, traces and metrics.
/// The resource and the scope are read first wherever they are, then the items in order.
pub(crate) fn walk<'a>(
    body: &'a [u8],
    shape: &Shape,
    items: &mut impl Items<'a>,
) -> Result<(), Stop> {
    let depth = Depth::TOP;
    let mut r = Reader::new(body);
    let mut i = 0;
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => {
                let (m, d) = r
                    .message(wt, depth)
                    .map_err(|e| e.at_index(shape.resources, i))?;
                resource_level(m, d, shape, items).map_err(|s| s.at_index(shape.resources, i))?;
                i += 1;
            }
            _ => r.skip(wt, tag, depth)?,
        }
    }
    Ok(())
}

fn resource_level<'a>(
    buf: &'a [u8],
    depth: Depth,
    shape: &Shape,
    items: &mut impl Items<'a>,
) -> Result<(), Stop> {
    let mut resources = Vec::with_capacity(1);
    let mut scopes = Vec::new();
    // What this level lists, counted as it is listed with the rows built so far: a frame per
    // resource and scope occurrence, and the attributes of every resource occurrence (they
    // are merged into one list, so they are summed, however small each occurrence is).
    let (budget, used) = {
        let (b, used) = items.budget();
        (*b, used)
    };
    let mut listed = 0usize;
    let frame = std::mem::size_of::<(&[u8], Depth)>();
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => {
                let (m, d) = r.message(wt, depth).map_err(|e| e.at("resource"))?;
                listed = listed
                    .saturating_add(frame)
                    .saturating_add(counted::struct_bytes(m, &RESOURCE_LISTED));
                check_level(&budget, used, listed)?;
                resources.push((m, d));
            }
            2 => {
                let j = scopes.len();
                let scope = r
                    .message(wt, depth)
                    .map_err(|e| e.at_index(shape.scopes, j))?;
                listed = listed.saturating_add(frame);
                check_level(&budget, used, listed)?;
                scopes.push(scope);
            }
            3 => {
                r.string(wt).map_err(|e| e.at("schema_url"))?;
            }
            _ => r.skip(wt, tag, depth)?,
        }
    }
    let mut attrs = Vec::new();
    for (m, d) in resources {
        merge_resource(&mut attrs, m, d).map_err(|e| Stop::from(e).at("resource"))?;
    }
    let resource = ResourceText::new(&attrs);
    for (j, (m, d)) in scopes.into_iter().enumerate() {
        scope_level(m, d, shape, &resource, listed, items)
            .map_err(|s| s.at_index(shape.scopes, j))?;
    }
    items.hold(0);
    Ok(())
}

/// A `Scope*` message: its scope, then its items, while the resource level holds `held`
/// bytes of lists.
fn scope_level<'a>(
    buf: &'a [u8],
    depth: Depth,
    shape: &Shape,
    resource: &ResourceText<'a>,
    held: usize,
    items: &mut impl Items<'a>,
) -> Result<(), Stop> {
    items.hold(held);
    let mut scope = Scope::default();
    let mut r = Reader::new(buf);
    let mut k = 0;
    // The attributes of every scope occurrence are merged into one list: summed.
    let mut listed = 0usize;
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => {
                let (m, d) = r.message(wt, depth).map_err(|e| e.at("scope"))?;
                listed = listed.saturating_add(counted::struct_bytes(m, &SCOPE_LISTED));
                let (budget, used) = items.budget();
                check_level(budget, used, listed)?;
                merge_scope(&mut scope, m, d).map_err(|e| e.at("scope"))?;
            }
            2 => {
                // Only the frame here; the item is read on the second pass.
                r.message(wt, depth)
                    .map_err(|e| e.at_index(shape.items, k))?;
                k += 1;
            }
            3 => {
                r.string(wt).map_err(|e| e.at("schema_url"))?;
            }
            _ => r.skip(wt, tag, depth)?,
        }
    }
    items.hold(held.saturating_add(listed));
    let mut r = Reader::new(buf);
    let mut k = 0;
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        if tag == 2 {
            let (m, d) = r.message(wt, depth)?;
            items
                .item(m, d, resource, &scope)
                .map_err(|s| s.at_index(shape.items, k))?;
            k += 1;
        } else {
            r.skip(wt, tag, depth)?;
        }
    }
    Ok(())
}

/// How many items the body holds, to size the builders; a malformed body counts what comes
/// before the first problem.
pub(crate) fn count_items(body: &[u8]) -> usize {
    fn each<'a>(buf: &'a [u8], field: u32, mut f: impl FnMut(&'a [u8])) -> Option<()> {
        let mut r = Reader::new(buf);
        while !r.is_empty() {
            let (tag, wt) = r.key().ok()?;
            if tag == field && wt == WireType::LengthDelimited {
                f(r.message(wt, Depth::TOP).ok()?.0);
            } else {
                r.skip(wt, tag, Depth::TOP).ok()?;
            }
        }
        Some(())
    }
    let mut n = 0;
    each(body, 1, |resources| {
        each(resources, 2, |scopes| {
            each(scopes, 2, |_| n += 1);
        });
    });
    n
}

/// A decoded `AnyValue`, borrowing its strings and bytes from the body. Only arrays and kvlists
/// (rare in logs) allocate.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) enum Any<'a> {
    /// No value (absent, or an `AnyValue` with no field set).
    #[default]
    Empty,
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    Array(Vec<Any<'a>>),
    Kvlist(Vec<(&'a str, Any<'a>)>),
    Strindex(i32),
}

/// Merges the `AnyValue` message `buf`, whose fields are at `depth`, into `v`.
pub(crate) fn merge_any<'a>(v: &mut Any<'a>, buf: &'a [u8], depth: Depth) -> Result<(), WireError> {
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => *v = Any::Str(r.string(wt).map_err(|e| e.at("string_value"))?),
            2 => *v = Any::Bool(r.varint_field(wt).map_err(|e| e.at("bool_value"))? != 0),
            3 => *v = Any::Int(r.varint_field(wt).map_err(|e| e.at("int_value"))? as i64),
            4 => {
                let bits = r.fixed64(wt).map_err(|e| e.at("double_value"))?;
                *v = Any::Double(f64::from_bits(bits));
            }
            5 => {
                let (m, d) = r.message(wt, depth).map_err(|e| e.at("array_value"))?;
                if !matches!(v, Any::Array(_)) {
                    *v = Any::Array(Vec::new());
                }
                if let Any::Array(items) = v {
                    merge_array(items, m, d).map_err(|e| e.at("array_value"))?;
                }
            }
            6 => {
                let (m, d) = r.message(wt, depth).map_err(|e| e.at("kvlist_value"))?;
                if !matches!(v, Any::Kvlist(_)) {
                    *v = Any::Kvlist(Vec::new());
                }
                if let Any::Kvlist(entries) = v {
                    merge_kvlist(entries, m, d).map_err(|e| e.at("kvlist_value"))?;
                }
            }
            7 => *v = Any::Bytes(r.bytes(wt).map_err(|e| e.at("bytes_value"))?),
            8 => {
                let i = r
                    .varint_field(wt)
                    .map_err(|e| e.at("string_value_strindex"))?;
                *v = Any::Strindex(i as i32);
            }
            _ => r.skip(wt, tag, depth)?,
        }
    }
    Ok(())
}

/// `ArrayValue.values`.
fn merge_array<'a>(items: &mut Vec<Any<'a>>, buf: &'a [u8], depth: Depth) -> Result<(), WireError> {
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => {
                let i = items.len();
                let (m, d) = r.message(wt, depth).map_err(|e| e.at_index("values", i))?;
                let mut item = Any::Empty;
                merge_any(&mut item, m, d).map_err(|e| e.at_index("values", i))?;
                items.push(item);
            }
            _ => r.skip(wt, tag, depth)?,
        }
    }
    Ok(())
}

/// `KeyValueList.values`.
fn merge_kvlist<'a>(
    entries: &mut Vec<(&'a str, Any<'a>)>,
    buf: &'a [u8],
    depth: Depth,
) -> Result<(), WireError> {
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => {
                let i = entries.len();
                let (m, d) = r.message(wt, depth).map_err(|e| e.at_index("values", i))?;
                entries.push(key_value(m, d).map_err(|e| e.at_index("values", i))?);
            }
            _ => r.skip(wt, tag, depth)?,
        }
    }
    Ok(())
}

/// A `KeyValue` message whose fields are at `depth`.
pub(crate) fn key_value<'a>(buf: &'a [u8], depth: Depth) -> Result<(&'a str, Any<'a>), WireError> {
    let mut key = "";
    let mut value = Any::Empty;
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => key = r.string(wt).map_err(|e| e.at("key"))?,
            2 => {
                let (m, d) = r.message(wt, depth).map_err(|e| e.at("value"))?;
                merge_any(&mut value, m, d).map_err(|e| e.at("value"))?;
            }
            3 => {
                r.varint_field(wt).map_err(|e| e.at("key_strindex"))?;
            }
            _ => r.skip(wt, tag, depth)?,
        }
    }
    Ok((key, value))
}

/// Appends the `KeyValue` message field `buf` (read at the depth of its parent's fields) to
/// `attrs`, naming it item `index` of `field` in an error.
#[inline]
pub(crate) fn push_attribute<'a>(
    attrs: &mut Vec<(&'a str, Any<'a>)>,
    r: &mut Reader<'a>,
    wt: super::wire::WireType,
    depth: Depth,
    field: &'static str,
    index: usize,
) -> Result<(), WireError> {
    let (m, d) = r.message(wt, depth).map_err(|e| e.at_index(field, index))?;
    attrs.push(key_value(m, d).map_err(|e| e.at_index(field, index))?);
    Ok(())
}

/// Merges the `Resource` message `buf` (fields at `depth`), appending its attributes.
pub(crate) fn merge_resource<'a>(
    attrs: &mut Vec<(&'a str, Any<'a>)>,
    buf: &'a [u8],
    depth: Depth,
) -> Result<(), WireError> {
    let mut r = Reader::new(buf);
    let mut entity_refs = 0;
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => {
                let i = attrs.len();
                push_attribute(attrs, &mut r, wt, depth, "attributes", i)?;
            }
            2 => {
                r.varint_field(wt)
                    .map_err(|e| e.at("dropped_attributes_count"))?;
            }
            3 => {
                let (m, d) = r
                    .message(wt, depth)
                    .map_err(|e| e.at_index("entity_refs", entity_refs))?;
                entity_ref(m, d).map_err(|e| e.at_index("entity_refs", entity_refs))?;
                entity_refs += 1;
            }
            _ => r.skip(wt, tag, depth)?,
        }
    }
    Ok(())
}

/// Checks an `EntityRef` (all strings), which the lake does not keep.
fn entity_ref(buf: &[u8], depth: Depth) -> Result<(), WireError> {
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        let field = match tag {
            1 => "schema_url",
            2 => "type",
            3 => "id_keys",
            4 => "description_keys",
            _ => {
                r.skip(wt, tag, depth)?;
                continue;
            }
        };
        r.string(wt).map_err(|e| e.at(field))?;
    }
    Ok(())
}

/// The fields of an `InstrumentationScope` the lake keeps.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Scope<'a> {
    pub name: &'a str,
    pub version: &'a str,
}

/// Merges the `InstrumentationScope` message `buf` (fields at `depth`) into `scope`; its
/// attributes are checked and dropped (the lake has no column for them).
pub(crate) fn merge_scope<'a>(
    scope: &mut Scope<'a>,
    buf: &'a [u8],
    depth: Depth,
) -> Result<(), WireError> {
    let mut r = Reader::new(buf);
    let mut attributes = 0;
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => scope.name = r.string(wt).map_err(|e| e.at("name"))?,
            2 => scope.version = r.string(wt).map_err(|e| e.at("version"))?,
            3 => {
                let (m, d) = r
                    .message(wt, depth)
                    .map_err(|e| e.at_index("attributes", attributes))?;
                key_value(m, d).map_err(|e| e.at_index("attributes", attributes))?;
                attributes += 1;
            }
            4 => {
                r.varint_field(wt)
                    .map_err(|e| e.at("dropped_attributes_count"))?;
            }
            _ => r.skip(wt, tag, depth)?,
        }
    }
    Ok(())
}

/// Resource attributes as the lake keeps them, converted once per resource and copied to each
/// row, and the resource's `service.name`.
#[derive(Debug, Default)]
pub(crate) struct ResourceText<'a> {
    pub attrs: Vec<(&'a str, Option<Cow<'a, str>>)>,
    pub service_name: Option<&'a str>,
}

impl<'a> ResourceText<'a> {
    /// As `attributes_into` and `service_name` see the attributes of the resource.
    pub fn new(attrs: &[(&'a str, Any<'a>)]) -> ResourceText<'a> {
        let service_name = attrs
            .iter()
            .find(|(k, _)| *k == "service.name")
            .and_then(|(_, v)| match v {
                Any::Str(s) => Some(*s),
                _ => None,
            });
        ResourceText {
            attrs: attrs.iter().map(|(k, v)| (*k, any_text(v))).collect(),
            service_name,
        }
    }
}

/// The lake's text of a value (also [`any_value_to_string`](super::any_value_to_string)'s):
/// strings verbatim (borrowed), bytes as base64, other values as JSON (a string-table index
/// only has a meaning inside profiles: its number is kept); nothing for no value.
#[inline]
pub(crate) fn any_text<'a>(v: &Any<'a>) -> Option<Cow<'a, str>> {
    match v {
        Any::Empty => None,
        Any::Str(s) => Some(Cow::Borrowed(s)),
        Any::Bytes(b) => Some(Cow::Owned(
            base64::engine::general_purpose::STANDARD.encode(b),
        )),
        other => Some(Cow::Owned(to_json(other).to_string())),
    }
}

fn to_json(v: &Any<'_>) -> Json {
    match v {
        Any::Empty => Json::Null,
        Any::Str(s) => Json::String((*s).to_string()),
        Any::Bool(b) => Json::Bool(*b),
        Any::Int(i) => Json::from(*i),
        Any::Double(d) => serde_json::Number::from_f64(*d)
            .map(Json::Number)
            .unwrap_or_else(|| Json::String(d.to_string())),
        Any::Bytes(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Any::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Any::Kvlist(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| ((*k).to_string(), to_json(v)))
                .collect(),
        ),
        Any::Strindex(i) => Json::from(*i),
    }
}

/// Lowercase hex of an id of at most 16 bytes, written into `buf`; `None` when it is longer.
pub(crate) fn hex_in<'b>(id: &[u8], buf: &'b mut [u8; 32]) -> Option<&'b str> {
    let out = buf.get_mut(..2 * id.len())?;
    hex::encode_to_slice(id, out).ok()?;
    std::str::from_utf8(out).ok()
}

/// As [`hex_id`](super::hex_id) without allocating: `None` when the id is empty or all zeros.
pub(crate) fn hex_id_in<'b>(id: &[u8], buf: &'b mut [u8; 32]) -> Option<&'b str> {
    if id.iter().all(|&b| b == 0) {
        None
    } else {
        hex_in(id, buf)
    }
}

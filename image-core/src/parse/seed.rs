//! The seed that decodes one JSON value into a Go-typed place of the model:
//! [`Fill`], generic over the place's type through [`Decode`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Unexpected, Visitor,
};

use super::fields::{CONFIG, Field, HEALTH, HISTORY, ROOTFS, Slot};
use super::{Ctx, go_string, lookup};
use crate::model::{ContainerConfig, HealthConfig, History, RootFs};
use crate::time::{Timestamp, TimestampError};

/// The JSON type a Go type is read from, which decides the serde_json
/// `deserialize_*` call.
#[derive(Clone, Copy)]
pub(super) enum Shape {
    Bool,
    Int,
    /// A string; serde_json also hands an array to such a visitor.
    Str,
    Seq,
    Map,
}

/// How one Go type takes a JSON value. Each method receives the values of
/// one JSON type; by default it refuses them, as Go refuses a value of the
/// wrong type.
pub(super) trait Decode {
    /// What the value must be, for error messages.
    const EXPECTED: &'static str;
    const SHAPE: Shape;

    /// Applies `null`; by default the value stays as it is.
    fn null(&mut self) {}

    fn bool<E: de::Error>(&mut self, v: bool, at: &At<'_>) -> Result<(), E> {
        Err(refuse::<Self, _>(Unexpected::Bool(v), at))
    }

    fn int<E: de::Error>(&mut self, v: i64, at: &At<'_>) -> Result<(), E> {
        Err(refuse::<Self, _>(Unexpected::Signed(v), at))
    }

    /// A string as raw bytes; `escaped` as for [`go_string`].
    fn string<E: de::Error>(&mut self, _v: &[u8], _escaped: bool, at: &At<'_>) -> Result<(), E> {
        Err(refuse::<Self, _>(Unexpected::Other("string"), at))
    }

    fn seq<'de, A: SeqAccess<'de>>(&mut self, _seq: A, at: &At<'_>) -> Result<(), A::Error> {
        Err(refuse::<Self, _>(Unexpected::Seq, at))
    }

    fn map<'de, A: MapAccess<'de>>(&mut self, _map: A, at: &At<'_>) -> Result<(), A::Error> {
        Err(refuse::<Self, _>(Unexpected::Map, at))
    }
}

fn refuse<T: Decode + ?Sized, E: de::Error>(found: Unexpected<'_>, at: &At<'_>) -> E {
    E::invalid_type(found, &Expect(T::EXPECTED, at))
}

/// Where a value sits in the document (`config.Healthcheck.Retries`,
/// `history[2].created`), for error messages; built on the stack as the
/// decoder descends and only formatted when a value is refused.
pub(super) struct At<'a> {
    ctx: &'a Ctx,
    /// The enclosing value; `None` for the document itself.
    parent: Option<&'a Self>,
    step: Step,
}

enum Step {
    Key(&'static str),
    Index(usize),
}

impl<'a> At<'a> {
    pub(super) fn root(ctx: &'a Ctx) -> Self {
        Self {
            ctx,
            parent: None,
            step: Step::Key(""),
        }
    }

    fn child(&'a self, step: Step) -> Self {
        Self {
            ctx: self.ctx,
            parent: Some(self),
            step,
        }
    }

    /// The error for a time string that does not parse; the typed error is
    /// kept in the context for [`super::decode`] to report.
    fn invalid_time<E: de::Error>(&self, err: TimestampError) -> E {
        let field = self.to_string();
        let message = format!("invalid {field}: {err}");
        self.ctx.record(field, err);
        E::custom(message)
    }
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(parent) = self.parent else {
            return Ok(());
        };
        parent.fmt(f)?;
        match self.step {
            Step::Key(name) if parent.parent.is_some() => write!(f, ".{name}"),
            Step::Key(name) => f.write_str(name),
            Step::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// What a value at a place must be: "a boolean for config.Tty".
struct Expect<'a>(&'static str, &'a At<'a>);

impl de::Expected for Expect<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)?;
        match self.1.parent {
            Some(_) => write!(f, " for {}", self.1),
            None => Ok(()),
        }
    }
}

/// Decodes one JSON value into `dst`, by `T`'s [`Decode`] rules.
pub(super) struct Fill<'a, T> {
    pub(super) dst: &'a mut T,
    pub(super) at: &'a At<'a>,
}

impl<'de, T: Decode> DeserializeSeed<'de> for Fill<'_, T> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, T: Decode> Visitor<'de> for Fill<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        de::Expected::fmt(&Expect(T::EXPECTED, self.at), f)
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.dst.null();
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match T::SHAPE {
            Shape::Bool => d.deserialize_bool(self),
            Shape::Int => d.deserialize_i64(self),
            Shape::Str => d.deserialize_bytes(self),
            Shape::Seq => d.deserialize_seq(self),
            Shape::Map => d.deserialize_map(self),
        }
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.dst.bool(v, self.at)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.dst.int(v, self.at)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        match i64::try_from(v) {
            Ok(v) => self.dst.int(v, self.at),
            Err(_) => Err(E::invalid_value(Unexpected::Unsigned(v), &self)),
        }
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<(), E> {
        self.dst.string(v, false, self.at)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        self.dst.string(v, true, self.at)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.dst.seq(seq, self.at)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.dst.map(map, self.at)
    }
}

impl Decode for String {
    const EXPECTED: &'static str = "a string";
    const SHAPE: Shape = Shape::Str;
    fn string<E: de::Error>(&mut self, v: &[u8], escaped: bool, _: &At<'_>) -> Result<(), E> {
        *self = go_string(v, escaped);
        Ok(())
    }
}

impl Decode for bool {
    const EXPECTED: &'static str = "a boolean";
    const SHAPE: Shape = Shape::Bool;
    fn bool<E: de::Error>(&mut self, v: bool, _: &At<'_>) -> Result<(), E> {
        *self = v;
        Ok(())
    }
}

/// Go's `int64`, `int` and `time.Duration`: integer literals only.
impl Decode for i64 {
    const EXPECTED: &'static str = "a 64-bit integer";
    const SHAPE: Shape = Shape::Int;
    fn int<E: de::Error>(&mut self, v: i64, _: &At<'_>) -> Result<(), E> {
        *self = v;
        Ok(())
    }
}

/// A `*time.Time`: an RFC 3339 string.
impl Decode for Option<Timestamp> {
    const EXPECTED: &'static str = "an RFC 3339 time string";
    const SHAPE: Shape = Shape::Str;
    fn null(&mut self) {
        *self = None;
    }
    fn string<E: de::Error>(&mut self, v: &[u8], _: bool, at: &At<'_>) -> Result<(), E> {
        match Timestamp::parse_rfc3339(&go_string(v, false)) {
            Ok(t) => *self = Some(t),
            Err(err) => return Err(at.invalid_time(err)),
        }
        Ok(())
    }
}

/// A pointer, or a slice or map the model keeps as `Option`: `null` makes it
/// absent; any other value decodes into the existing value or a new one.
impl<T: Decode + Default> Decode for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    const SHAPE: Shape = T::SHAPE;
    fn null(&mut self) {
        *self = None;
    }
    fn bool<E: de::Error>(&mut self, v: bool, at: &At<'_>) -> Result<(), E> {
        self.get_or_insert_default().bool(v, at)
    }
    fn int<E: de::Error>(&mut self, v: i64, at: &At<'_>) -> Result<(), E> {
        self.get_or_insert_default().int(v, at)
    }
    fn string<E: de::Error>(&mut self, v: &[u8], escaped: bool, at: &At<'_>) -> Result<(), E> {
        self.get_or_insert_default().string(v, escaped, at)
    }
    fn seq<'de, A: SeqAccess<'de>>(&mut self, seq: A, at: &At<'_>) -> Result<(), A::Error> {
        self.get_or_insert_default().seq(seq, at)
    }
    fn map<'de, A: MapAccess<'de>>(&mut self, map: A, at: &At<'_>) -> Result<(), A::Error> {
        self.get_or_insert_default().map(map, at)
    }
}

/// A slice, decoded as Go decodes into one: element `i` decodes into the
/// existing element `i` (or a new zero value), and the list ends where the
/// array does. `null` empties it.
impl<T: Decode + Default> Decode for Vec<T> {
    const EXPECTED: &'static str = "a list";
    const SHAPE: Shape = Shape::Seq;
    fn null(&mut self) {
        self.clear();
    }
    fn seq<'de, A: SeqAccess<'de>>(&mut self, mut seq: A, at: &At<'_>) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let fresh = i >= self.len();
            if fresh {
                self.push(T::default());
            }
            let at = at.child(Step::Index(i));
            let seed = Fill {
                dst: &mut self[i],
                at: &at,
            };
            if seq.next_element_seed(seed)?.is_none() {
                if fresh {
                    self.pop();
                }
                break;
            }
            i += 1;
        }
        self.truncate(i);
        Ok(())
    }
}

/// Docker's `strslice.StrSlice`: a list of strings or a bare string, which
/// becomes a one-element list. It is read whole into a fresh value, so a
/// repeated key replaces rather than merges.
#[derive(Default)]
pub(super) struct StrSlice(pub(super) Option<Vec<String>>);

impl Decode for StrSlice {
    const EXPECTED: &'static str = "a string or a list of strings";
    // serde_json hands an array to a visitor asked for bytes.
    const SHAPE: Shape = Shape::Str;
    fn null(&mut self) {
        self.0 = None;
    }
    fn string<E: de::Error>(&mut self, v: &[u8], escaped: bool, _: &At<'_>) -> Result<(), E> {
        self.0 = Some(vec![go_string(v, escaped)]);
        Ok(())
    }
    fn seq<'de, A: SeqAccess<'de>>(&mut self, seq: A, at: &At<'_>) -> Result<(), A::Error> {
        self.0.insert(Vec::new()).seq(seq, at)
    }
}

/// Go's `struct{}`, the value type of a set: any object.
impl Decode for () {
    const EXPECTED: &'static str = "an object (usually {})";
    const SHAPE: Shape = Shape::Map;
    fn map<'de, A: MapAccess<'de>>(&mut self, mut map: A, _: &At<'_>) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

/// `map[string]struct{}`; entries add to those already there.
impl Decode for BTreeSet<String> {
    const EXPECTED: &'static str = "an object";
    const SHAPE: Shape = Shape::Map;
    fn null(&mut self) {
        self.clear();
    }
    fn map<'de, A: MapAccess<'de>>(&mut self, mut map: A, at: &At<'_>) -> Result<(), A::Error> {
        while let Some(key) = map_key(&mut map, at)? {
            map.next_value_seed(Fill { dst: &mut (), at })?;
            self.insert(key);
        }
        Ok(())
    }
}

/// `map[string]string`; entries add to those already there, and a `null`
/// value reads as the empty string.
impl Decode for BTreeMap<String, String> {
    const EXPECTED: &'static str = "an object of strings";
    const SHAPE: Shape = Shape::Map;
    fn map<'de, A: MapAccess<'de>>(&mut self, mut map: A, at: &At<'_>) -> Result<(), A::Error> {
        while let Some(key) = map_key(&mut map, at)? {
            let mut value = String::new();
            map.next_value_seed(Fill {
                dst: &mut value,
                at,
            })?;
            self.insert(key, value);
        }
        Ok(())
    }
}

/// Reads a map key (a label name, a port, a volume path) as a Go string.
fn map_key<'de, A: MapAccess<'de>>(map: &mut A, at: &At<'_>) -> Result<Option<String>, A::Error> {
    let mut key = String::new();
    let seed = Fill { dst: &mut key, at };
    Ok(map.next_key_seed(seed)?.map(|()| key))
}

/// A Go struct, described by the table of its JSON names.
pub(super) trait Struct: Sized + 'static {
    const FIELDS: &'static [Field<Self>];
}

impl<T: Struct> Decode for T {
    const EXPECTED: &'static str = "an object";
    const SHAPE: Shape = Shape::Map;
    fn map<'de, A: MapAccess<'de>>(&mut self, map: A, at: &At<'_>) -> Result<(), A::Error> {
        fields(map, self, T::FIELDS, at)
    }
}

impl Struct for ContainerConfig {
    const FIELDS: &'static [Field<Self>] = CONFIG;
}

impl Struct for HealthConfig {
    const FIELDS: &'static [Field<Self>] = HEALTH;
}

impl Struct for RootFs {
    const FIELDS: &'static [Field<Self>] = ROOTFS;
}

impl Struct for History {
    const FIELDS: &'static [Field<Self>] = HISTORY;
}

/// Decodes an object into the struct `dst` whose keys `table` lists: keys
/// in document order, each assigning its field; unknown keys are skipped.
pub(super) fn fields<'de, A: MapAccess<'de>, T: 'static>(
    mut map: A,
    dst: &mut T,
    table: &'static [Field<T>],
    at: &At<'_>,
) -> Result<(), A::Error> {
    while let Some(field) = map.next_key_seed(KeySeed(table))? {
        match field {
            Some((name, slot)) => {
                let at = at.child(Step::Key(name));
                map.next_value_seed(SlotSeed {
                    slot: slot(dst),
                    at: &at,
                })?;
            }
            None => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(())
}

/// Decodes a field a table selected, by its type.
struct SlotSeed<'a> {
    slot: Slot<'a>,
    at: &'a At<'a>,
}

impl<'de> DeserializeSeed<'de> for SlotSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let at = self.at;
        match self.slot {
            Slot::Str(dst) => Fill { dst, at }.deserialize(d),
            Slot::Bool(dst) => Fill { dst, at }.deserialize(d),
            Slot::Int(dst) => Fill { dst, at }.deserialize(d),
            Slot::OptInt(dst) => Fill { dst, at }.deserialize(d),
            Slot::Time(dst) => Fill { dst, at }.deserialize(d),
            Slot::List(dst) => Fill { dst, at }.deserialize(d),
            Slot::Vec(dst) => Fill { dst, at }.deserialize(d),
            Slot::StrSlice(dst) => {
                let mut value = StrSlice::default();
                let result = Fill {
                    dst: &mut value,
                    at,
                }
                .deserialize(d);
                *dst = value.0;
                result
            }
            Slot::Set(dst) => Fill { dst, at }.deserialize(d),
            Slot::OptSet(dst) => Fill { dst, at }.deserialize(d),
            Slot::Labels(dst) => Fill { dst, at }.deserialize(d),
            Slot::Config(dst) => Fill { dst, at }.deserialize(d),
            Slot::OptConfig(dst) => Fill { dst, at }.deserialize(d),
            Slot::Health(dst) => Fill { dst, at }.deserialize(d),
            Slot::RootFs(dst) => Fill { dst, at }.deserialize(d),
            Slot::History(dst) => Fill { dst, at }.deserialize(d),
        }
    }
}

/// Reads an object key and finds the field of `table` it names, if any.
struct KeySeed<T: 'static>(&'static [Field<T>]);

impl<'de, T: 'static> DeserializeSeed<'de> for KeySeed<T> {
    type Value = Option<Field<T>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_bytes(self)
    }
}

impl<T: 'static> Visitor<'_> for KeySeed<T> {
    type Value = Option<Field<T>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(lookup(v, self.0).copied())
    }
}

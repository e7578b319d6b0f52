//! Tracing the serialized shape of every type a state and its command reach.
//!
//! serde-reflection's own `Tracer` explores every variant of the type it is asked to trace,
//! but only the first variant of an enum nested inside it, and once a field's format is known
//! it stops looking inside that field's `Option`, `Vec` or map: an enum in a state's field
//! was never fully traced. This tracer keeps serde-reflection's formats (so the recorded
//! file is the same for the types it could trace) and drives the exploration itself.
//!
//! It deserializes the roots over and over from placeholder values. At each enum it picks
//! the variant to build: one not explored yet if there is any, otherwise one whose content
//! still leads to something unexplored, otherwise the one that ends the value soonest (or,
//! while no variant of it has ended yet, the next in turn).
//! Every `Option`, sequence and map holds one element, except inside a recursion (a type
//! already being built further out), where they are empty so the value ends. It stops when
//! nothing reachable from the roots is left unexplored.

use std::any::type_name;
use std::collections::{BTreeMap, BTreeSet};

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde_reflection::{ContainerFormat, Error, Format, FormatHolder, Named, Registry, VariantFormat};

/// How deep a value may nest named types before tracing gives up (a recursive type whose
/// every variant recurses has no finite value to build), and how deep options, sequences,
/// maps and tuples may nest (only a `#[serde(transparent)]` type that contains itself nests
/// them without end: its shape has no name to refer to itself by).
const MAX_DEPTH: usize = 128;
/// How many times the roots may be rebuilt; each pass explores at least one variant or fills
/// in one container left empty, so only a bug reaches this.
const MAX_PASSES: usize = 10_000;

/// The traced shapes: both roots' formats and every named type they reach.
pub(super) struct Traced {
    pub state: Format,
    pub command: Format,
    pub types: Registry,
}

/// Traces `S` and `C` and every type they reach, with every variant of every enum.
pub(super) fn trace<S, C>() -> Result<Traced, Error>
where
    S: de::DeserializeOwned,
    C: de::DeserializeOwned,
{
    let mut tracer = Tracer::default();
    for _ in 0..MAX_PASSES {
        let mut state = Format::unknown();
        let built = S::deserialize(Tracing { tracer: &mut tracer, slot: &mut state });
        built.map_err(|e| tracer.locate(e))?;
        let mut command = Format::unknown();
        let built = C::deserialize(Tracing { tracer: &mut tracer, slot: &mut command });
        built.map_err(|e| tracer.locate(e))?;
        assert!(tracer.stack.is_empty() && tracer.repeated == 0 && tracer.unnamed == 0, "every type entered was left");
        if !tracer.leads_to_unexplored(&[&state, &command], &BTreeSet::new(), false) {
            return tracer.finish(state, command);
        }
    }
    Err(Error::Custom(format!(
        "gave up tracing after {MAX_PASSES} passes; still unexplored: {:?}",
        tracer.registry.keys().filter(|k| tracer.unexplored(k)).collect::<Vec<_>>()
    )))
}

#[derive(Default)]
struct Tracer {
    /// Every named type met so far, by key; a container left empty is an unknown format.
    registry: Registry,
    /// The key of each Rust type met, by `type_name`.
    keys: BTreeMap<&'static str, String>,
    /// The serde name of each key that is not its serde name (another type had it first).
    renamed: BTreeMap<String, &'static str>,
    /// For each enum key: how many variants it has, and how many times one was chosen while
    /// none had ended (the first choices take the variants in order, later ones in turn).
    variants: BTreeMap<String, (u32, u32)>,
    /// The keys of the named types being built, outermost first.
    stack: Vec<String>,
    /// How many entries of the stack repeat a key further out: above 0, the value is inside
    /// a recursion and containers are left empty so that it ends.
    repeated: usize,
    /// How many options, sequences, maps and tuples are being built, one inside another.
    unnamed: usize,
    /// The stack when building a value first failed: where the error arose.
    failed_at: Option<Vec<String>>,
}

impl Tracer {
    /// The key a Rust type is recorded under: its serde name, or, when another type already
    /// has that name (a generic struct with another parameter, or a namesake in another
    /// module), its type name without module paths (`Tagged<Level2>`), or in full.
    fn key(&mut self, name: &'static str, rust: &'static str) -> String {
        if let Some(key) = self.keys.get(rust) {
            return key.clone();
        }
        let taken = |key: &str| self.keys.values().any(|k| k == key);
        let key = [name.to_string(), without_paths(rust), rust.to_string()]
            .into_iter()
            .find(|key| !taken(key))
            .expect("no other type has this one's full type name");
        self.keys.insert(rust, key.clone());
        if key != name {
            self.renamed.insert(key.clone(), name);
        }
        key
    }

    fn enter(&mut self, key: &str) -> Result<(), Error> {
        if self.stack.len() >= MAX_DEPTH {
            self.failed_at = Some(Vec::new()); // the message names the type; the path is the same type
            return Err(Error::Custom(format!(
                "{key} nests more than {MAX_DEPTH} named types deep: is it a recursive type whose every variant recurses?"
            )));
        }
        if self.on_stack(key) {
            self.repeated += 1;
        }
        self.stack.push(key.to_string());
        Ok(())
    }

    fn leave(&mut self) {
        let key = self.stack.pop().expect("leave follows enter");
        if self.on_stack(&key) {
            self.repeated -= 1;
        }
    }

    /// Starts building an option, sequence, map or tuple; `close` ends it.
    fn open(&mut self) -> Result<(), Error> {
        if self.unnamed >= MAX_DEPTH {
            return Err(Error::Custom(format!(
                "options, sequences, maps or tuples nest more than {MAX_DEPTH} deep: is it a \
                 #[serde(transparent)] type that contains itself?"
            )));
        }
        self.unnamed += 1;
        Ok(())
    }

    fn close(&mut self) {
        self.unnamed -= 1;
    }

    fn on_stack(&self, key: &str) -> bool {
        self.stack.iter().any(|k| k == key)
    }

    /// Notes where `value` failed, if it is the first failure, and leaves the type.
    fn leave_after<T>(&mut self, value: &Result<T, Error>) {
        if value.is_err() && self.failed_at.is_none() {
            self.failed_at = Some(self.stack.clone());
        }
        self.leave();
    }

    /// `error`, saying in which type it arose.
    fn locate(&mut self, error: Error) -> Error {
        match self.failed_at.take() {
            Some(path) if !path.is_empty() => Error::Custom(format!("{error} (building {})", path.join(" > "))),
            _ => error,
        }
    }

    fn in_recursion(&self) -> bool {
        self.repeated > 0
    }

    fn record(&mut self, key: &str, format: ContainerFormat) -> Result<(), Error> {
        match self.registry.get_mut(key) {
            Some(known) => known.unify(format),
            None => {
                self.registry.insert(key.to_string(), format);
                Ok(())
            }
        }
    }

    /// Which variant of enum `key` (with `count` variants) to build now.
    fn choose_variant(&mut self, key: &str, count: u32) -> u32 {
        let (_, chosen) = self.variants.entry(key.to_string()).or_insert((count, 0));
        if *chosen < count {
            *chosen += 1;
            return *chosen - 1;
        }
        // Every variant was chosen but none has ended yet: they are all still being built
        // further out (the type recursed to here). Take them in turn, so that a value which
        // ends only through another enum's later variant is still found.
        let Some(ContainerFormat::Enum(known)) = self.registry.get(key) else {
            let index = *chosen % count;
            *chosen += 1;
            return index;
        };
        if !self.on_stack(key) {
            let avoid: BTreeSet<String> = self.stack.iter().cloned().chain([key.to_string()]).collect();
            let cut = self.in_recursion();
            if let Some((&index, _)) = known
                .iter()
                .find(|(_, variant)| self.leads_to_unexplored(&variant_contents(&variant.value), &avoid, cut))
            {
                return index;
            }
        }
        let ranks = self.ranks();
        known
            .iter()
            .min_by_key(|&(&index, variant)| (variant_rank(&variant.value, &ranks), index))
            .map_or(0, |(&index, _)| index)
    }

    /// Whether a key still has something to explore: a variant never built, or a container
    /// left empty inside a recursion.
    fn unexplored(&self, key: &str) -> bool {
        if let Some((count, chosen)) = self.variants.get(key)
            && chosen < count
        {
            return true;
        }
        self.registry.get(key).is_some_and(|container| {
            contents(container).into_iter().any(|format| !references(format, false, &mut Vec::new()))
        })
    }

    /// Whether any of `formats` has an unknown part or reaches a key with something to
    /// explore, through keys not in `avoid` (and not through containers if `cut`).
    fn leads_to_unexplored<'a>(&'a self, formats: &[&'a Format], avoid: &BTreeSet<String>, cut: bool) -> bool {
        let mut seen = avoid.clone();
        let mut pending = formats.to_vec();
        while let Some(format) = pending.pop() {
            let mut names = Vec::new();
            if !references(format, cut, &mut names) {
                return true;
            }
            for name in names {
                if !seen.insert(name.clone()) {
                    continue;
                }
                if self.unexplored(&name) {
                    return true;
                }
                match self.registry.get(&name) {
                    Some(container) => pending.extend(contents(container)),
                    None => return true,
                }
            }
        }
        false
    }

    /// For each key, how many named types deep its shortest value nests when containers are
    /// empty (`u32::MAX` for a type with no finite value known yet).
    fn ranks(&self) -> BTreeMap<&str, u32> {
        let mut ranks: BTreeMap<&str, u32> = self.registry.keys().map(|k| (k.as_str(), u32::MAX)).collect();
        loop {
            let mut changed = false;
            for (key, container) in &self.registry {
                let rank = match container {
                    ContainerFormat::Enum(variants) => {
                        variants.values().map(|v| variant_rank(&v.value, &ranks)).min().unwrap_or(u32::MAX)
                    }
                    other => rank(contents(other), &ranks),
                };
                if rank < ranks[key.as_str()] {
                    ranks.insert(key.as_str(), rank);
                    changed = true;
                }
            }
            if !changed {
                return ranks;
            }
        }
    }

    fn finish(self, mut state: Format, mut command: Format) -> Result<Traced, Error> {
        let mut types = self.registry;
        for (name, format) in types.iter_mut() {
            format.normalize().map_err(|_| Error::UnknownFormatInContainer(name.clone()))?;
        }
        // The roots are reduced, not normalized, as serde-reflection's `Tracer` left them:
        // a root tuple stays a tuple in files recorded before.
        state.reduce();
        command.reduce();
        // Namesakes of the same shape share their serde name, as serde-reflection's `Tracer`
        // recorded them (it merged all types of one name); merging one can make others equal.
        let mut renamed = self.renamed;
        while let Some((key, name)) =
            renamed.iter().map(|(k, &n)| (k.clone(), n)).find(|(key, name)| types.get(*name) == types.get(key))
        {
            renamed.remove(&key);
            types.remove(&key);
            let mut rename = |format: &mut Format| {
                if *format == Format::TypeName(key.clone()) {
                    *format = Format::TypeName(name.to_string());
                }
                Ok(())
            };
            for container in types.values_mut() {
                container.visit_mut(&mut rename)?;
            }
            state.visit_mut(&mut rename)?;
            command.visit_mut(&mut rename)?;
        }
        Ok(Traced { state, command, types })
    }
}

/// `a::b::Tagged<c::Level2>` as `Tagged<Level2>`.
fn without_paths(rust: &str) -> String {
    let mut out = String::new();
    let mut segment = String::new();
    for c in rust.chars() {
        if c.is_alphanumeric() || c == '_' {
            segment.push(c);
        } else if c == ':' {
            segment.clear();
        } else {
            out.push_str(&segment);
            segment.clear();
            out.push(c);
        }
    }
    out + &segment
}

/// The formats directly inside a named type.
fn contents(container: &ContainerFormat) -> Vec<&Format> {
    match container {
        ContainerFormat::UnitStruct => Vec::new(),
        ContainerFormat::NewTypeStruct(format) => vec![&**format],
        ContainerFormat::TupleStruct(formats) => formats.iter().collect(),
        ContainerFormat::Struct(fields) => fields.iter().map(|f| &f.value).collect(),
        ContainerFormat::Enum(variants) => variants.values().flat_map(|v| variant_contents(&v.value)).collect(),
    }
}

/// The formats directly inside a variant (this tracer records every variant with its
/// content, never as a variable).
fn variant_contents(variant: &VariantFormat) -> Vec<&Format> {
    match variant {
        VariantFormat::Unit | VariantFormat::Variable(_) => Vec::new(),
        VariantFormat::NewType(format) => vec![&**format],
        VariantFormat::Tuple(formats) => formats.iter().collect(),
        VariantFormat::Struct(fields) => fields.iter().map(|f| &f.value).collect(),
    }
}

/// Collects the named types `format` refers to (not inside containers if `cut`); false if
/// part of it is unknown.
fn references(format: &Format, cut: bool, names: &mut Vec<String>) -> bool {
    match format {
        Format::Variable(variable) => match &*variable.borrow() {
            None => false,
            Some(format) => references(format, cut, names),
        },
        Format::TypeName(name) => {
            names.push(name.clone());
            true
        }
        Format::Option(inner) | Format::Seq(inner) => cut || references(inner, cut, names),
        Format::Map { key, value } => cut || (references(key, cut, names) && references(value, cut, names)),
        Format::Tuple(formats) => formats.iter().all(|f| references(f, cut, names)),
        Format::TupleArray { content, .. } => references(content, cut, names),
        _ => true,
    }
}

fn format_rank(format: &Format, ranks: &BTreeMap<&str, u32>) -> u32 {
    match format {
        Format::Variable(variable) => variable.borrow().as_ref().map_or(0, |f| format_rank(f, ranks)),
        Format::TypeName(name) => ranks.get(name.as_str()).map_or(u32::MAX, |r| r.saturating_add(1)),
        Format::Tuple(formats) => rank(formats.iter().collect(), ranks),
        Format::TupleArray { content, .. } => format_rank(content, ranks),
        // Containers are left empty inside a recursion.
        _ => 0,
    }
}

fn variant_rank(variant: &VariantFormat, ranks: &BTreeMap<&str, u32>) -> u32 {
    rank(variant_contents(variant), ranks)
}

/// The rank of a value made of `formats`: that of the deepest.
fn rank(formats: Vec<&Format>, ranks: &BTreeMap<&str, u32>) -> u32 {
    formats.into_iter().map(|f| format_rank(f, ranks)).max().unwrap_or(0)
}

/// A deserializer that builds a placeholder value and writes its format into `slot`.
struct Tracing<'t> {
    tracer: &'t mut Tracer,
    slot: &'t mut Format,
}

/// Builds `len` elements through `visit`: its result, and the elements' formats.
fn elements<T>(tracer: &mut Tracer, len: usize, visit: impl FnOnce(Elements<'_>) -> T) -> (T, Vec<Format>) {
    let mut formats: Vec<Format> = std::iter::repeat_with(Format::unknown).take(len).collect();
    let value = visit(Elements { tracer, formats: formats.iter_mut() });
    (value, formats)
}

/// A struct's (or struct variant's) fields, named.
fn named_fields(names: &[&str], formats: Vec<Format>) -> Vec<Named<Format>> {
    names.iter().zip(formats).map(|(name, value)| Named { name: name.to_string(), value }).collect()
}

impl Tracing<'_> {
    /// Builds a named type with `len` parts through `visit`, recording its format.
    fn named<'de, V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visit: impl FnOnce(Elements<'_>) -> Result<V::Value, Error>,
        container: impl FnOnce(Vec<Format>) -> ContainerFormat,
    ) -> Result<V::Value, Error> {
        let key = self.tracer.key(name, type_name::<V::Value>());
        *self.slot = Format::TypeName(key.clone());
        self.tracer.enter(&key)?;
        let (value, formats) = elements(self.tracer, len, visit);
        self.tracer.leave_after(&value);
        let value = value?;
        self.tracer.record(&key, container(formats))?;
        Ok(value)
    }
}

macro_rules! primitives {
    ($($method:ident => $visit:ident($($value:expr)?), $format:ident;)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                *self.slot = Format::$format;
                visitor.$visit($($value)?)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Tracing<'_> {
    type Error = Error;

    primitives! {
        deserialize_bool => visit_bool(false), Bool;
        deserialize_i8 => visit_i8(0), I8;
        deserialize_i16 => visit_i16(0), I16;
        deserialize_i32 => visit_i32(0), I32;
        deserialize_i64 => visit_i64(0), I64;
        deserialize_i128 => visit_i128(0), I128;
        deserialize_u8 => visit_u8(0), U8;
        deserialize_u16 => visit_u16(0), U16;
        deserialize_u32 => visit_u32(0), U32;
        deserialize_u64 => visit_u64(0), U64;
        deserialize_u128 => visit_u128(0), U128;
        deserialize_f32 => visit_f32(0.0), F32;
        deserialize_f64 => visit_f64(0.0), F64;
        deserialize_char => visit_char('A'), Char;
        deserialize_str => visit_borrowed_str(""), Str;
        deserialize_string => visit_string(String::new()), Str;
        deserialize_bytes => visit_borrowed_bytes(b""), Bytes;
        deserialize_byte_buf => visit_byte_buf(Vec::new()), Bytes;
        deserialize_unit => visit_unit(), Unit;
    }

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(Error::NotSupported(
            "deserialize_any: a type that reads any value (an untagged or internally tagged enum, \
             #[serde(flatten)], or a hand-written Deserialize) has no fixed shape to record",
        ))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(Error::NotSupported("deserialize_identifier"))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(Error::NotSupported("deserialize_ignored_any"))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.tracer.open()?;
        let mut inner = Format::unknown();
        let value = if self.tracer.in_recursion() {
            visitor.visit_none()
        } else {
            visitor.visit_some(Tracing { tracer: self.tracer, slot: &mut inner })
        };
        self.tracer.close();
        *self.slot = Format::Option(Box::new(inner));
        value
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.tracer.open()?;
        let len = usize::from(!self.tracer.in_recursion());
        let (value, mut formats) = elements(self.tracer, len, |elements| visitor.visit_seq(elements));
        self.tracer.close();
        *self.slot = Format::Seq(Box::new(formats.pop().unwrap_or_else(Format::unknown)));
        value
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.tracer.open()?;
        let len = if self.tracer.in_recursion() { 0 } else { 2 };
        let (value, mut formats) = elements(self.tracer, len, |elements| visitor.visit_map(elements));
        self.tracer.close();
        let value_format = formats.pop().unwrap_or_else(Format::unknown);
        let key_format = formats.pop().unwrap_or_else(Format::unknown);
        *self.slot = Format::Map { key: Box::new(key_format), value: Box::new(value_format) };
        value
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        self.tracer.open()?;
        let (value, formats) = elements(self.tracer, len, |elements| visitor.visit_seq(elements));
        self.tracer.close();
        *self.slot = Format::Tuple(formats);
        value
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, Error> {
        self.named::<V>(name, 0, |_| visitor.visit_unit(), |_| ContainerFormat::UnitStruct)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, Error> {
        self.named::<V>(
            name,
            1,
            |Elements { tracer, mut formats }| {
                let slot = formats.next().expect("one format for the newtype's content");
                visitor.visit_newtype_struct(Tracing { tracer, slot })
            },
            |mut formats| ContainerFormat::NewTypeStruct(Box::new(formats.remove(0))),
        )
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.named::<V>(name, len, |elements| visitor.visit_seq(elements), ContainerFormat::TupleStruct)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.named::<V>(
            name,
            fields.len(),
            |elements| visitor.visit_seq(elements),
            |formats| ContainerFormat::Struct(named_fields(fields, formats)),
        )
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        if variants.is_empty() {
            return Err(Error::NotSupported("deserialize_enum with 0 variants"));
        }
        let key = self.tracer.key(name, type_name::<V::Value>());
        *self.slot = Format::TypeName(key.clone());
        let count = u32::try_from(variants.len()).expect("an enum has fewer than 2^32 variants");
        let index = self.tracer.choose_variant(&key, count);
        self.tracer.enter(&key)?;
        let mut format = None;
        let value = visitor.visit_enum(Variant { tracer: self.tracer, index, format: &mut format });
        self.tracer.leave_after(&value);
        let value = value?;
        let format = format.ok_or(Error::NotSupported("an enum variant whose content was not read"))?;
        let variant = Named { name: variants[index as usize].to_string(), value: format };
        self.tracer.record(&key, ContainerFormat::Enum(BTreeMap::from([(index, variant)])))?;
        Ok(value)
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// The elements of a sequence, tuple, struct or map: one per format.
struct Elements<'t> {
    tracer: &'t mut Tracer,
    formats: std::slice::IterMut<'t, Format>,
}

impl<'de> de::SeqAccess<'de> for Elements<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        match self.formats.next() {
            None => Ok(None),
            Some(slot) => seed.deserialize(Tracing { tracer: self.tracer, slot }).map(Some),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.formats.size_hint().1
    }
}

impl<'de> de::MapAccess<'de> for Elements<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        de::SeqAccess::next_element_seed(self, seed)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Error> {
        let slot = self.formats.next().expect("a map's formats come in key and value pairs");
        seed.deserialize(Tracing { tracer: self.tracer, slot })
    }

    fn size_hint(&self) -> Option<usize> {
        self.formats.size_hint().1.map(|n| n / 2)
    }
}

/// The chosen variant of an enum being built.
struct Variant<'t> {
    tracer: &'t mut Tracer,
    index: u32,
    format: &'t mut Option<VariantFormat>,
}

impl<'de> de::EnumAccess<'de> for Variant<'_> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<(T::Value, Self), Error> {
        let index: de::value::U32Deserializer<Error> = self.index.into_deserializer();
        Ok((seed.deserialize(index)?, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        *self.format = Some(VariantFormat::Unit);
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        let mut inner = Format::unknown();
        let value = seed.deserialize(Tracing { tracer: self.tracer, slot: &mut inner });
        *self.format = Some(VariantFormat::NewType(Box::new(inner)));
        value
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        let (value, formats) = elements(self.tracer, len, |elements| visitor.visit_seq(elements));
        *self.format = Some(VariantFormat::Tuple(formats));
        value
    }

    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], visitor: V) -> Result<V::Value, Error> {
        let (value, formats) = elements(self.tracer, fields.len(), |elements| visitor.visit_seq(elements));
        *self.format = Some(VariantFormat::Struct(named_fields(fields, formats)));
        value
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde::Deserialize;
    use serde_reflection::{Tracer as Reflection, TracerConfig};

    use super::*;

    /// Types serde-reflection's own tracer handles (no nested enum): the same shape, so files
    /// recorded before stay equal.
    #[derive(Deserialize)]
    #[expect(dead_code, reason = "only traced")]
    struct Flat {
        name: String,
        counts: HashMap<String, (u64, u64)>,
        pair: (u8, i16),
        bytes: [u8; 4],
        label: Label,
        unit: Marker,
        maybe: Option<Vec<Label>>,
        nested: BTreeMap<u32, Inner>,
    }

    #[derive(Deserialize)]
    struct Label(#[expect(dead_code, reason = "only traced")] String);

    #[derive(Deserialize)]
    struct Marker;

    #[derive(Deserialize)]
    #[expect(dead_code, reason = "only traced")]
    struct Inner(char, bool, f64);

    #[derive(Deserialize)]
    #[expect(dead_code, reason = "only traced")]
    enum Command {
        Rename { to: Label },
        Drop(u32, u32),
        Clear,
        Wrap(Inner),
    }

    #[test]
    fn types_serde_reflection_traced_get_the_same_shape() {
        let mut reflection = Reflection::new(TracerConfig::default());
        let (state, _) = reflection.trace_simple_type::<Flat>().expect("serde-reflection traces Flat");
        let (command, _) = reflection.trace_simple_type::<Command>().expect("and Command");
        let types = reflection.registry().expect("no nested enum");
        let ours = trace::<Flat, Command>().expect("trace");
        assert_eq!((ours.state, ours.command), (state, command));
        assert_eq!(ours.types, types);
        assert!(
            matches!(ours.types["Flat"], ContainerFormat::Struct(ref f) if f[3].value == Format::TupleArray { content: Box::new(Format::U8), size: 4 })
        );
    }

    /// Recursion through the first variant (which serde-reflection's tracer overflows the
    /// stack on), through a box, a vector and an option, and between two types.
    #[derive(Deserialize)]
    #[expect(dead_code, reason = "only traced")]
    enum Expr {
        Neg(Box<Expr>),
        Pair(Box<Expr>, Box<Expr>),
        Call { name: String, args: Vec<Expr>, block: Option<Block> },
        Lit(i64),
    }

    #[derive(Deserialize)]
    #[expect(dead_code, reason = "only traced")]
    struct Block {
        body: Vec<Expr>,
        last: Box<Expr>,
    }

    #[test]
    fn recursive_types_are_traced_with_every_variant() {
        let traced = trace::<Expr, Block>().expect("trace");
        let ContainerFormat::Enum(variants) = &traced.types["Expr"] else { panic!("Expr is an enum") };
        let names: Vec<&str> = variants.values().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["Neg", "Pair", "Call", "Lit"]);
        assert_eq!(
            variants[&2].value,
            VariantFormat::Struct(vec![
                Named { name: "name".into(), value: Format::Str },
                Named { name: "args".into(), value: Format::Seq(Box::new(Format::TypeName("Expr".into()))) },
                Named { name: "block".into(), value: Format::Option(Box::new(Format::TypeName("Block".into()))) },
            ])
        );
    }

    #[derive(Deserialize)]
    #[expect(dead_code, reason = "only traced")]
    enum Endless {
        Again(Box<Endless>),
    }

    #[test]
    fn a_type_with_no_finite_value_is_an_error_not_a_stack_overflow() {
        let error = trace::<Endless, ()>().err().expect("no value of Endless can be built");
        assert!(error.to_string().contains("every variant recurses"), "{error}");
    }

    /// Recursion through boxes only, where the value ends in another enum's last variant
    /// (`Term::Ann(Ty::Base)`), and a cycle of three enums that only the third ends.
    #[derive(Deserialize)]
    #[expect(dead_code, reason = "only traced")]
    enum Term {
        App(Box<Term>, Box<Term>),
        Ann(Box<Ty>),
    }

    #[derive(Deserialize)]
    #[expect(dead_code, reason = "only traced")]
    enum Ty {
        Of(Box<Term>),
        Base,
    }

    #[derive(Deserialize)]
    #[expect(dead_code, reason = "only traced")]
    enum First {
        Again(Box<First>),
        On(Box<Second>),
    }

    #[derive(Deserialize)]
    #[expect(dead_code, reason = "only traced")]
    enum Second {
        Back(Box<First>),
        On(Box<Third>),
    }

    #[derive(Deserialize)]
    #[expect(dead_code, reason = "only traced")]
    enum Third {
        Back(Box<First>),
        Again(Box<Second>),
        End,
    }

    #[test]
    fn a_recursion_ended_only_by_another_enum_is_traced() {
        let traced = trace::<Term, First>().expect("Term::Ann(Ty::Base) and First::On(Second::On(Third::End)) end");
        for (name, count) in [("Term", 2), ("Ty", 2), ("First", 2), ("Second", 2), ("Third", 3)] {
            let ContainerFormat::Enum(variants) = &traced.types[name] else { panic!("{name} is an enum") };
            assert_eq!(variants.len(), count, "{name}");
        }
    }

    /// Transparent structs have no name in serde's data model: one that contains itself has
    /// no finite shape (`Option<Option<…>>`), and tracing it used to nest values until the
    /// stack overflowed, aborting the test binary.
    #[derive(Deserialize)]
    #[serde(transparent)]
    struct Chain {
        #[expect(dead_code, reason = "only traced")]
        next: Option<Box<Chain>>,
    }

    #[derive(Deserialize)]
    #[serde(transparent)]
    struct Pairs(#[expect(dead_code, reason = "only traced")] (u8, Box<Pairs>));

    #[test]
    fn a_transparent_type_that_contains_itself_is_an_error_not_a_stack_overflow() {
        for error in [trace::<Chain, ()>().err(), trace::<(), Vec<Pairs>>().err()] {
            let error = error.expect("no finite shape");
            assert!(error.to_string().contains("transparent"), "{error}");
        }
    }

    /// A `Deserialize` that refuses the placeholder it is given.
    #[derive(Debug)]
    struct Even;

    impl<'de> Deserialize<'de> for Even {
        fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            match u8::deserialize(deserializer)? {
                n if n % 2 == 1 => Ok(Even),
                _ => Err(de::Error::custom("not odd")),
            }
        }
    }

    #[derive(Deserialize)]
    #[expect(dead_code, reason = "only traced")]
    struct Holder {
        inner: Option<Wrapper>,
    }

    #[derive(Deserialize)]
    #[expect(dead_code, reason = "only traced")]
    enum Wrapper {
        Plain,
        Checked { value: Even },
    }

    #[test]
    fn a_value_that_cannot_be_built_says_where() {
        let error = trace::<Holder, ()>().err().expect("Even refuses 0");
        assert!(error.to_string().contains("not odd") && error.to_string().contains("Holder > Wrapper"), "{error}");
    }

    mod elsewhere {
        /// A namesake of the outer `Label`, of the same shape.
        #[derive(serde::Deserialize)]
        pub struct Label(#[expect(dead_code, reason = "only traced")] pub String);
    }

    #[derive(Deserialize)]
    #[expect(dead_code, reason = "only traced")]
    struct Namesakes {
        here: Label,
        there: Vec<elsewhere::Label>,
        generic: Option<Tagged<Label>>,
        generic_too: Tagged<elsewhere::Label>,
        other: Tagged<u8>,
    }

    #[derive(Deserialize)]
    #[expect(dead_code, reason = "only traced")]
    struct Tagged<T> {
        value: T,
    }

    #[test]
    fn namesakes_of_one_shape_share_a_name_and_others_get_their_type_name() {
        let traced = trace::<Namesakes, ()>().expect("trace");
        let names: Vec<&str> = traced.types.keys().map(String::as_str).collect();
        assert_eq!(names, ["Label", "Namesakes", "Tagged", "Tagged<u8>"]);
        let ContainerFormat::Struct(fields) = &traced.types["Namesakes"] else { panic!("a struct") };
        let tagged = Format::TypeName("Tagged".into());
        assert_eq!(fields[3].value, tagged);
        assert_eq!(fields[4].value, Format::TypeName("Tagged<u8>".into()));
    }

    #[test]
    fn module_paths_are_left_out_of_a_disambiguated_name() {
        assert_eq!(without_paths("a::b::Tagged<c::Level2, (d::E, [u8; 3])>"), "Tagged<Level2, (E, [u8; 3])>");
        assert_eq!(without_paths("Plain"), "Plain");
    }
}

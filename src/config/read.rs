//! Reading one TOML table into one raw struct while collecting every problem.
//!
//! Why not a single `toml::from_str::<RawConfig>()`: serde stops at the first error, and
//! `cutover validate` must report every mistake at once. So every struct-typed field of
//! the raw structs is a [`Sub`] (the TOML value kept as it is) and read on its own with
//! [`read`]. Within one table, unknown keys are found before serde runs (their names
//! come from the struct itself, see [`field_names`]); then a field whose value serde
//! rejects is reported, removed, and the table read again, so a bad `timeout` does not
//! hide a bad `interval` next to it, nor anything in a sub-table.

use std::collections::BTreeSet;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;

/// One thing wrong with the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `services.web.health.checks[1].http.path`.
    pub key: String,
    /// What was wrong and what was expected.
    pub message: String,
}

/// Problems found so far, in the order they were found.
#[derive(Debug, Default)]
pub(super) struct Problems {
    list: Vec<Problem>,
}

impl Problems {
    pub fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.list.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// Number found so far: compare before and after a piece to know if it was clean.
    pub fn count(&self) -> usize {
        self.list.len()
    }

    pub fn into_vec(self) -> Vec<Problem> {
        self.list
    }
}

/// A sub-table (or any value) to be read later as `T` with [`read`]. Keeping it as a
/// `toml::Value` means a mistake inside it cannot fail the enclosing table.
pub struct Sub<T> {
    value: toml::Value,
    _as: PhantomData<fn() -> T>,
}

impl<T> Sub<T> {
    pub fn value(&self) -> &toml::Value {
        &self.value
    }
}

impl<'de, T> Deserialize<'de> for Sub<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        toml::Value::deserialize(deserializer).map(|value| Sub {
            value,
            _as: PhantomData,
        })
    }
}

impl<T> fmt::Debug for Sub<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.value, f)
    }
}

/// A table read as `T`: fields whose values were rejected are `None` in `raw` and
/// listed in `rejected` (already reported, so "missing" must not be reported again).
#[derive(Debug)]
pub(super) struct Read<T> {
    pub raw: T,
    pub at: String,
    rejected: BTreeSet<String>,
}

impl<T> Read<T> {
    /// The table read from an absent section: all defaults.
    pub fn absent(at: &str) -> Self
    where
        T: Default,
    {
        Read {
            raw: T::default(),
            at: at.to_string(),
            rejected: BTreeSet::new(),
        }
    }

    /// Full dotted key of one of this table's fields.
    pub fn key(&self, field: &str) -> String {
        join(&self.at, field)
    }

    /// Whether `field` had a value serde rejected (and was reported).
    pub fn rejected(&self, field: &str) -> bool {
        self.rejected.contains(field)
    }

    /// `value`, else `default`; `None` when the field was rejected.
    pub fn or<V>(&self, field: &str, value: Option<V>, default: V) -> Option<V> {
        if self.rejected(field) {
            return None;
        }
        Some(value.unwrap_or(default))
    }

    /// An optional field: `Some(None)` when absent, `Some(Some(x))` when `check` accepts
    /// it, `None` when rejected (by serde or by `check`, which reports its problem).
    pub fn optional<V, X>(
        &self,
        field: &str,
        value: Option<V>,
        check: impl FnOnce(V) -> Option<X>,
    ) -> Option<Option<X>> {
        if self.rejected(field) {
            return None;
        }
        match value {
            None => Some(None),
            Some(v) => check(v).map(Some),
        }
    }

    /// `value`, else a "missing" problem (unless the field was rejected).
    pub fn required<V>(
        &self,
        field: &str,
        value: Option<V>,
        what: &str,
        problems: &mut Problems,
    ) -> Option<V> {
        if value.is_none() && !self.rejected(field) {
            problems.add(
                self.key(field),
                format!("missing required key `{field}`, expected {what}"),
            );
        }
        value
    }
}

/// Reads `sub` (found at key `at`) as `T`; an absent sub-table reads as `T::default()`.
pub(super) fn read_opt<T: DeserializeOwned + Default>(
    sub: Option<&Sub<T>>,
    at: &str,
    problems: &mut Problems,
) -> Option<Read<T>> {
    match sub {
        Some(sub) => read(sub.value(), at, problems),
        None => Some(Read::absent(at)),
    }
}

/// Reads `value` (found at key `at`) as `T`, reporting unknown keys and every rejected
/// field. `None` only when `value` is not a table at all.
pub(super) fn read<T: DeserializeOwned>(
    value: &toml::Value,
    at: &str,
    problems: &mut Problems,
) -> Option<Read<T>> {
    let toml::Value::Table(table) = value else {
        problems.add(at, format!("expected a table, got {}", describe(value)));
        return None;
    };
    let expected = field_names::<T>();
    let mut table = table.clone();
    let unknown: Vec<String> = table
        .keys()
        .filter(|k| !expected.contains(&k.as_str()))
        .cloned()
        .collect();
    for name in unknown {
        problems.add(join(at, &name), unknown_key_message(&name, expected));
        table.remove(&name);
    }
    let mut rejected = BTreeSet::new();
    loop {
        match serde_path_to_error::deserialize::<_, T>(toml::Value::Table(table.clone())) {
            Ok(raw) => {
                return Some(Read {
                    raw,
                    at: at.to_string(),
                    rejected,
                })
            }
            Err(err) => {
                let mut key = at.to_string();
                let mut field = None;
                for segment in err.path().iter() {
                    match segment {
                        serde_path_to_error::Segment::Seq { index } => {
                            key.push_str(&format!("[{index}]"))
                        }
                        serde_path_to_error::Segment::Map { key: k }
                        | serde_path_to_error::Segment::Enum { variant: k } => {
                            field.get_or_insert_with(|| k.clone());
                            key = join(&key, k);
                        }
                        serde_path_to_error::Segment::Unknown => {}
                    }
                }
                problems.add(key, toml_words(err.inner().message()));
                // Drop the offending field and read the rest again; give up if the
                // error cannot be pinned on a field (it then cannot repeat anyway).
                match field {
                    Some(f) if table.remove(&f).is_some() => {
                        rejected.insert(f);
                    }
                    _ => return None,
                }
            }
        }
    }
}

/// serde's words for shapes, in TOML's: a "sequence" is an array, a "map" a table.
fn toml_words(message: &str) -> String {
    message
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table")
        .replace("expected i64", "expected an integer")
        .replace("floating point", "float")
}

/// `at.name`, quoting `name` the TOML way when it is not a bare key.
pub(super) fn join(at: &str, name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let part = if bare {
        name.to_string()
    } else {
        format!("{name:?}")
    };
    if at.is_empty() {
        part
    } else {
        format!("{at}.{part}")
    }
}

/// What a value is, for "expected X, got Y" messages.
pub(super) fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("string {s:?}"),
        toml::Value::Integer(i) => format!("integer `{i}`"),
        toml::Value::Float(f) => format!("float `{f}`"),
        toml::Value::Boolean(b) => format!("boolean `{b}`"),
        toml::Value::Datetime(d) => format!("datetime `{d}`"),
        toml::Value::Array(_) => "an array".to_string(),
        toml::Value::Table(_) => "a table".to_string(),
    }
}

fn unknown_key_message(name: &str, expected: &[&str]) -> String {
    let hint = expected
        .iter()
        .filter(|e| edit_distance(name, e) <= 2.max(e.len() / 4))
        .min_by_key(|e| edit_distance(name, e))
        .map(|e| format!(" (did you mean `{e}`?)"))
        .unwrap_or_default();
    format!(
        "unknown key `{name}`{hint}, expected one of: {}",
        expected.join(", ")
    )
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The field names a derived `Deserialize` struct accepts (after renames), taken from
/// the struct itself so the unknown-key message can never drift from the schema.
pub(super) fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Grab<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for Grab<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields taken"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Grab(&mut fields));
    fields
}

//! The shapes a single field of a `PodFilesystemSync` may take, beyond its canonical type: how
//! each is read and how the CRD schema says it (the original operator's spellings; see
//! [`super::legacy`] for why and for the spec-level ones).
//!
//! Decisions:
//! - Each reader works on the deserializer it is given (a visitor, never a detour through a
//!   generic value where it can be avoided), so an error inside keeps its precise path
//!   (`spec.podSelector.matchExpressions[0].operator: …`).
//! - Strings of digits (the original's Go types held numbers as strings) are
//!   `x-kubernetes-int-or-string` with a pattern: the API server refuses `"abc"` as `inject` does.
//! - `podSelector` keeps unknown keys (the plain labels of the short form: a map of labels
//!   cannot be listed beside matchLabels in a structural schema), and `automaticEncryption`
//!   is left open (a boolean or an object: structural schemas know no "one of two types" but
//!   int-or-string); the readers here check what the API server cannot.
//! - Nothing here knows the resource's types, so the types can name these functions in their
//!   attributes without an import cycle.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// `podSelector`: a LabelSelector, or a plain map of labels (the short form) meaning
/// `matchLabels`. Read entry by entry, so an error inside `matchExpressions` keeps its path.
pub fn pod_selector<'de, D: Deserializer<'de>>(deserializer: D) -> Result<LabelSelector, D::Error> {
    struct SelectorVisitor;
    impl<'de> Visitor<'de> for SelectorVisitor {
        type Value = LabelSelector;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a label selector (matchLabels, matchExpressions) or a map of labels")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LabelSelector, A::Error> {
            let mut selector = LabelSelector::default();
            let mut plain: BTreeMap<String, String> = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                match key.as_str() {
                    "matchLabels" => {
                        selector.match_labels = map.next_value::<Option<_>>()?;
                    }
                    "matchExpressions" => {
                        selector.match_expressions =
                            map.next_value::<Option<Vec<LabelSelectorRequirement>>>()?;
                    }
                    _ => match map.next_value::<Value>()? {
                        Value::String(value) => {
                            plain.insert(key, value);
                        }
                        // An object or a list is no label: a misspelt matchLabels, say
                        // (the caller's "did you mean" finds it).
                        Value::Object(_) | Value::Array(_) => {
                            return Err(de::Error::custom(format!(
                                "unknown field `{key}`, expected `matchLabels` or \
                                 `matchExpressions` (or a label with a string value)"
                            )));
                        }
                        other => {
                            return Err(de::Error::custom(format!(
                                "the label {key:?} has the value {other}: a label's value is \
                                 a string (quote it)"
                            )));
                        }
                    },
                }
            }
            let structured =
                selector.match_labels.is_some() || selector.match_expressions.is_some();
            if structured && !plain.is_empty() {
                let keys: Vec<&str> = plain.keys().map(String::as_str).collect();
                return Err(de::Error::custom(format!(
                    "mixes matchLabels/matchExpressions with plain labels ({}): put those under \
                     matchLabels",
                    keys.join(", ")
                )));
            }
            if !structured && !plain.is_empty() {
                selector.match_labels = Some(plain);
            }
            Ok(selector)
        }
    }
    deserializer.deserialize_map(SelectorVisitor)
}

/// A whole number written as a number or as a string of digits (the original's Go types held
/// these as strings); the text says what is expected.
struct Digits(&'static str);

impl<'de> Visitor<'de> for Digits {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<u64>, E> {
        Ok(Some(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<u64>, E> {
        u64::try_from(v)
            .map(Some)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<u64>, E> {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(E::invalid_value(de::Unexpected::Str(v), &self));
        }
        v.parse()
            .map(Some)
            .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_any(self)
    }
}

/// `maxOneSyncPerMinutes`: 15 or "15".
pub fn minutes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    let expected = Digits(r#"a whole number of minutes (15 or "15")"#);
    match deserializer.deserialize_any(expected)? {
        None => Ok(None),
        Some(n) => u32::try_from(n).map(Some).map_err(|_| {
            de::Error::invalid_value(de::Unexpected::Unsigned(n), &"at most 4294967295 minutes")
        }),
    }
}

/// `permissions.uid` / `.gid`: 1001 or "1001".
pub fn id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    let expected = Digits(r#"a uid or gid: a whole number (1001 or "1001")"#);
    match deserializer.deserialize_any(expected)? {
        None => Ok(None),
        Some(n) => i64::try_from(n)
            .map(Some)
            .map_err(|_| de::Error::invalid_value(de::Unexpected::Unsigned(n), &"a smaller id")),
    }
}

/// A whole number or a string of digits, for the API server.
fn digits_schema() -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "pattern": "^[0-9]+$",
    })
}

pub fn minutes_schema(_: &mut SchemaGenerator) -> Schema {
    let mut schema = digits_schema();
    schema.insert("minimum".into(), 0.into());
    schema
}

pub fn id_schema(_: &mut SchemaGenerator) -> Schema {
    digits_schema()
}

/// A LabelSelector that keeps unknown keys: the plain labels of the short form (a map of
/// labels cannot be listed as properties beside matchLabels).
pub fn pod_selector_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = LabelSelector::json_schema(generator);
    schema.insert("x-kubernetes-preserve-unknown-fields".into(), true.into());
    schema
}

/// A boolean or an object, kept as written by the API server and checked by the reader.
pub fn automatic_encryption_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

/// Adds the spec's legacy fields and drops the defaults of fields that have a legacy twin.
pub fn spec_schema(schema: &mut Schema) {
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    // The nested defaults of syncOptions (method, cleanUp …) still apply; schedule's does not.
    if let Some(options) = properties
        .get_mut("syncOptions")
        .and_then(Value::as_object_mut)
    {
        options.insert("default".into(), serde_json::json!({}));
    }
    if let Some(list) = properties
        .get_mut("envFromSecret")
        .and_then(Value::as_object_mut)
    {
        list.remove("default");
    }
    properties.insert(
        "schedule".into(),
        serde_json::json!({
            "description": "The original operator's spelling of syncOptions.schedule.",
            "type": "string",
        }),
    );
    properties.insert(
        "envFromSecrets".into(),
        serde_json::json!({
            "description": "The original operator's spelling of envFromSecret: [{name: NAME}].",
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"description": "The Secret's name.", "type": "string"}},
                "required": ["name"],
            },
        }),
    );
}

/// Adds `allowedDirections` (a copy of `allowedDirectories`) and drops the defaults of both and
/// of `schedule`.
pub fn sync_options_schema(schema: &mut Schema) {
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(schedule) = properties
        .get_mut("schedule")
        .and_then(Value::as_object_mut)
    {
        schedule.remove("default");
    }
    if let Some(Value::Object(directories)) = properties.get_mut("allowedDirectories") {
        directories.remove("default");
        let mut legacy = directories.clone();
        legacy.insert(
            "description".into(),
            "The original operator's spelling of allowedDirectories.".into(),
        );
        properties.insert("allowedDirections".into(), Value::Object(legacy));
    }
}

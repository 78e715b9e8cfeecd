//! Dotted paths into a JSON document (`checks.database`, `items.0.id`).
//!
//! Config files name values this way in health conditions, smoke expectations and
//! captures. It is deliberately not JSONPath: one syntax, no wildcards, nothing to
//! escape, so a path in a TOML string reads the same as the JSON it points into.

use serde_json::Value;

/// The value at `path` in `root`, or `None` when some segment does not exist.
///
/// Segments are separated by `.`. On an object a segment is a key; on an array it must
/// be a decimal index. The empty path is the root itself.
pub fn get<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(root);
    }
    path.split('.')
        .try_fold(root, |value, segment| match value {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
}

/// JSON equality where numbers compare by value (`1 == 1.0`), recursively.
pub fn values_equal(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(a), Some(b)) => a == b,
            _ => match (a.as_u64(), b.as_u64()) {
                (Some(a), Some(b)) => a == b,
                _ => a.as_f64() == b.as_f64(),
            },
        },
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| values_equal(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| values_equal(v, w)))
        }
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "status": "ok",
            "checks": {"database": "healthy", "cache": {"hits": 3}},
            "items": [{"id": 7}, {"id": 8, "tags": ["a", "b"]}],
            "0": "key that looks like an index"
        })
    }

    #[test]
    fn a_dotted_path_walks_nested_objects() {
        assert_eq!(get(&doc(), "checks.database"), Some(&json!("healthy")));
        assert_eq!(get(&doc(), "checks.cache.hits"), Some(&json!(3)));
    }

    #[test]
    fn numeric_segments_index_into_arrays() {
        assert_eq!(get(&doc(), "items.1.id"), Some(&json!(8)));
        assert_eq!(get(&doc(), "items.1.tags.0"), Some(&json!("a")));
    }

    #[test]
    fn numeric_segments_on_objects_are_keys() {
        assert_eq!(
            get(&doc(), "0"),
            Some(&json!("key that looks like an index"))
        );
    }

    #[test]
    fn missing_keys_out_of_range_indexes_and_scalars_give_none() {
        assert_eq!(get(&doc(), "checks.queue"), None);
        assert_eq!(get(&doc(), "items.2.id"), None);
        assert_eq!(get(&doc(), "items.first"), None);
        assert_eq!(get(&doc(), "status.length"), None);
        assert_eq!(get(&doc(), "items.-1"), None);
    }

    #[test]
    fn the_empty_path_is_the_root() {
        assert_eq!(get(&doc(), ""), Some(&doc()));
    }

    #[test]
    fn numbers_compare_by_value_whatever_their_representation() {
        assert!(values_equal(&json!(1), &json!(1.0)));
        assert!(values_equal(
            &json!({"a": [1, 2.5]}),
            &json!({"a": [1.0, 2.5]})
        ));
        assert!(!values_equal(&json!(1), &json!(2)));
        assert!(!values_equal(&json!(1), &json!("1")));
        assert!(!values_equal(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(values_equal(&json!(u64::MAX), &json!(u64::MAX)));
    }
}

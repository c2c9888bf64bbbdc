//! `tools/call` arguments checked against the tool's cached `inputSchema` before they reach the
//! child, so a malformed call gets a clear −32602 naming the field instead of a stack trace from
//! the server.
//!
//! A deliberately small JSON Schema subset, built to never reject what a full validator accepts:
//! `type`, `properties`, `required`, `additionalProperties` (keys a `patternProperties` pattern
//! may match are not additional), `items` (2020-12: only past the `prefixItems` positions;
//! the array form of draft-07 is not checked), `enum`, `const`,
//! `minimum`/`maximum`/`exclusiveMinimum`/`exclusiveMaximum` (numeric forms, compared exactly),
//! `minLength`/`maxLength`, `minItems`/`maxItems`, `allOf`, `anyOf`/`oneOf` (treated as "any of":
//! lenient), local `$ref` (`#/$defs/…`, `#/definitions/…`; alone under draft-04/06/07, which
//! ignore its siblings). Every other keyword (`format`, `pattern`, `if`/`then`, the values under
//! `patternProperties`, …) is ignored, i.e. accepted. The full `jsonschema` crate would add ~40
//! crates to a binary that every container runs; the subset covers what MCP SDKs generate
//! (pydantic / zod). The promise is tested against that crate over generated schemas (tests below).

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

/// Depth bound for `$ref` chains and nesting, so a cyclic schema cannot recurse forever.
const MAX_DEPTH: usize = 64;

/// The first violation found, as `path: problem` (path like `arguments.items[2].name`).
pub fn validate(schema: &Value, args: &Value) -> Result<(), String> {
    check(schema, schema, args, "arguments", 0)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => match v {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true, // unknown type name: not ours to judge
    }
}

fn resolve<'a>(root: &'a Value, r: &str) -> Option<&'a Value> {
    let ptr = r.strip_prefix('#')?;
    root.pointer(ptr)
}

/// Drafts 4 to 7 ignore the siblings of `$ref`; 2019-09 and later (and a schema that names no
/// dialect: MCP's default is 2020-12) apply them too.
fn ref_hides_siblings(root: &Value) -> bool {
    root.get("$schema")
        .and_then(Value::as_str)
        .is_some_and(|d| {
            ["draft-04", "draft-06", "draft-07"]
                .iter()
                .any(|x| d.contains(x))
        })
}

fn check(root: &Value, schema: &Value, v: &Value, path: &str, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let s = match schema {
        Value::Bool(false) => return Err(format!("{path}: not allowed")),
        Value::Object(s) => s,
        _ => return Ok(()),
    };
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        if let Some(target) = resolve(root, r) {
            check(root, target, v, path, depth + 1)?;
        }
        if ref_hides_siblings(root) {
            return Ok(());
        }
    }
    if let Some(t) = s.get("type") {
        let ok = match t {
            Value::String(t) => is_type(v, t),
            Value::Array(ts) => {
                ts.iter().filter_map(Value::as_str).any(|t| is_type(v, t)) || ts.is_empty()
            }
            _ => true,
        };
        if !ok {
            let want = match t {
                Value::String(t) => t.clone(),
                _ => t
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(" or ")
                    })
                    .unwrap_or_default(),
            };
            return Err(format!("{path}: expected {want}, got {}", type_name(v)));
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.iter().any(|x| json_eq(x, v)) {
            return Err(format!(
                "{path}: must be one of {}",
                Value::Array(e.clone())
            ));
        }
    }
    if let Some(c) = s.get("const") {
        if !json_eq(c, v) {
            return Err(format!("{path}: must be {c}"));
        }
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for sub in all {
            check(root, sub, v, path, depth + 1)?;
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(any) = s.get(key).and_then(Value::as_array) {
            let mut first_err = None;
            let ok = any
                .iter()
                .any(|sub| match check(root, sub, v, path, depth + 1) {
                    Ok(()) => true,
                    Err(e) => {
                        first_err.get_or_insert(e);
                        false
                    }
                });
            if !ok && !any.is_empty() {
                return Err(first_err.unwrap_or_else(|| format!("{path}: matches none of {key}")));
            }
        }
    }
    match v {
        Value::Object(o) => check_object(root, s, o, path, depth)?,
        Value::Array(a) => {
            if let Some(n) = s.get("minItems").and_then(Value::as_u64) {
                if (a.len() as u64) < n {
                    return Err(format!("{path}: needs at least {n} items"));
                }
            }
            if let Some(n) = s.get("maxItems").and_then(Value::as_u64) {
                if a.len() as u64 > n {
                    return Err(format!("{path}: allows at most {n} items"));
                }
            }
            // 2020-12: `items` covers the positions after `prefixItems` (whose own schemas are
            // not checked). Under draft-07 `prefixItems` means nothing and `items` covers all:
            // skipping the first positions there only accepts more.
            let prefix = s
                .get("prefixItems")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            if let Some(items) = s.get("items").filter(|i| i.is_object() || i.is_boolean()) {
                for (i, x) in a.iter().enumerate().skip(prefix) {
                    check(root, items, x, &format!("{path}[{i}]"), depth + 1)?;
                }
            }
        }
        Value::String(st) => {
            let len = st.chars().count() as u64;
            if let Some(n) = s.get("minLength").and_then(Value::as_u64) {
                if len < n {
                    return Err(format!("{path}: must be at least {n} characters"));
                }
            }
            if let Some(n) = s.get("maxLength").and_then(Value::as_u64) {
                if len > n {
                    return Err(format!("{path}: must be at most {n} characters"));
                }
            }
        }
        Value::Number(n) => {
            use Ordering::{Equal, Greater, Less};
            let bounds = [
                ("minimum", "≥", &[Less][..]),
                ("maximum", "≤", &[Greater]),
                ("exclusiveMinimum", ">", &[Less, Equal]),
                ("exclusiveMaximum", "<", &[Greater, Equal]),
            ];
            for (key, rel, refused) in bounds {
                let Some(Value::Number(m)) = s.get(key) else {
                    continue;
                };
                if compare(n, m).is_some_and(|o| refused.contains(&o)) {
                    let m = m.as_f64().unwrap_or_default();
                    return Err(format!("{path}: must be {rel} {m}"));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn check_object(
    root: &Value,
    s: &Map<String, Value>,
    o: &Map<String, Value>,
    path: &str,
    depth: usize,
) -> Result<(), String> {
    if let Some(req) = s.get("required").and_then(Value::as_array) {
        for name in req.iter().filter_map(Value::as_str) {
            if !o.contains_key(name) {
                return Err(format!("{path}.{name}: required property is missing"));
            }
        }
    }
    let props = s.get("properties").and_then(Value::as_object);
    // Compiled once per object, and only if some key is not in `properties`.
    let mut patterns: Option<Vec<Option<regex::Regex>>> = None;
    for (k, x) in o {
        let sub = format!("{path}.{k}");
        if let Some(ps) = props.and_then(|p| p.get(k)) {
            check(root, ps, x, &sub, depth + 1)?;
            continue;
        }
        // A key some pattern may match is not "additional" (its value's schema is not checked:
        // `regex` and ECMA-262 may disagree on which pattern matches).
        let patterns = patterns.get_or_insert_with(|| {
            s.get("patternProperties")
                .and_then(Value::as_object)
                .map(|p| p.keys().map(|re| trusted_regex(re)).collect())
                .unwrap_or_default()
        });
        if patterns
            .iter()
            .any(|re| re.as_ref().is_none_or(|re| re.is_match(k)))
        {
            continue;
        }
        match s.get("additionalProperties") {
            Some(Value::Bool(false)) => {
                return Err(format!(
                    "{sub}: unknown property (the tool accepts no others)"
                ))
            }
            Some(ap @ Value::Object(_)) => check(root, ap, x, &sub, depth + 1)?,
            _ => {}
        }
    }
    Ok(())
}

/// The ECMA-262 regex `pattern` (JSON Schema's dialect) as a `regex` whose "no match" can be
/// trusted, or `None`: "may match anything". Trusted are patterns built from literals, `.`,
/// classes of literals and ranges, groups, alternation, anchors and quantifiers, where whatever
/// ECMA-262 (with the `u` flag) matches, `regex` matches too. Anything else, or a pattern `regex`
/// cannot compile, is `None`.
fn trusted_regex(pattern: &str) -> Option<regex::Regex> {
    if !same_in_both_dialects(pattern) {
        return None;
    }
    regex::Regex::new(pattern).ok()
}

/// No construct whose meaning differs between ECMA-262 and `regex`: class escapes (`\d`, `\w`,
/// `\s`, `\b`, `\p` and their negations reach ASCII only in ECMA-262, or other characters),
/// `[` or a set operator (`&&`, `--`, `~~`) inside a class (nested classes in `regex`, literals
/// in ECMA-262), and `(?` other than `(?:` (flags, lookaround, named groups).
fn same_in_both_dialects(pattern: &str) -> bool {
    let mut chars = pattern.char_indices().peekable();
    let mut in_class = false;
    let mut prev = None;
    while let Some((i, c)) = chars.next() {
        let rest = &pattern[i + c.len_utf8()..];
        match c {
            '\\' => match chars.next() {
                Some((_, 'd' | 'D' | 'w' | 'W' | 's' | 'S' | 'b' | 'B' | 'p' | 'P')) | None => {
                    return false
                }
                Some(_) => {
                    prev = None;
                    continue;
                }
            },
            '[' if in_class => return false,
            // `[]` and `[^]` are an empty and a full class in ECMA-262; `regex` reads a `]`.
            '[' if rest.starts_with(']') || rest.starts_with("^]") => return false,
            '[' => in_class = true,
            ']' if in_class => in_class = false,
            '&' | '-' | '~' if in_class && prev == Some(c) => return false,
            '(' if !in_class && rest.starts_with('?') && !rest.starts_with("?:") => return false,
            _ => {}
        }
        prev = Some(c);
    }
    true
}

/// `x` against a schema bound, exactly: integers as integers, floats as floats. An integer beyond
/// 2^53 that rounds to the float it is compared with is undecided (`None`): no refusal on a
/// rounding. f64 rounding is monotonic, so a strict order between the rounded values holds for
/// the exact ones.
fn compare(x: &Number, bound: &Number) -> Option<Ordering> {
    fn int(n: &Number) -> Option<i128> {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    }
    let exact = |n: &Number| int(n).is_none_or(|i| i.unsigned_abs() <= 1 << 53);
    if let (Some(a), Some(b)) = (int(x), int(bound)) {
        return Some(a.cmp(&b));
    }
    match x.as_f64()?.partial_cmp(&bound.as_f64()?)? {
        Ordering::Equal if !(exact(x) && exact(bound)) => None,
        o => Some(o),
    }
}

/// JSON equality with numbers compared by value (1 == 1.0), as JSON Schema defines it.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, p)| y.get(k).is_some_and(|q| json_eq(p, q)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_field_that_fails() {
        let s = json!({"type": "object", "properties": {
            "text": {"type": "string", "maxLength": 5},
            "n": {"type": "integer", "minimum": 1},
            "tags": {"type": "array", "items": {"type": "string"}},
            "mode": {"enum": ["a", "b"]},
            "opt": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "item": {"$ref": "#/$defs/Item"}
        }, "required": ["text"], "additionalProperties": false,
        "$defs": {"Item": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}}});
        assert_eq!(
            validate(
                &s,
                &json!({"text": "hi", "n": 2, "opt": null, "item": {"id": 1}})
            ),
            Ok(())
        );
        assert_eq!(
            validate(&s, &json!({"n": 1})).unwrap_err(),
            "arguments.text: required property is missing"
        );
        assert_eq!(
            validate(&s, &json!({"text": 3})).unwrap_err(),
            "arguments.text: expected string, got integer"
        );
        assert!(validate(&s, &json!({"text": "toolong"}))
            .unwrap_err()
            .starts_with("arguments.text:"));
        assert!(validate(&s, &json!({"text": "x", "n": 0}))
            .unwrap_err()
            .starts_with("arguments.n:"));
        assert!(validate(&s, &json!({"text": "x", "n": 1.5}))
            .unwrap_err()
            .starts_with("arguments.n:"));
        assert_eq!(validate(&s, &json!({"text": "x", "n": 2.0})), Ok(()));
        assert_eq!(
            validate(&s, &json!({"text": "x", "tags": ["a", 1]})).unwrap_err(),
            "arguments.tags[1]: expected string, got integer"
        );
        assert!(validate(&s, &json!({"text": "x", "mode": "c"}))
            .unwrap_err()
            .starts_with("arguments.mode:"));
        assert!(validate(&s, &json!({"text": "x", "opt": 1}))
            .unwrap_err()
            .starts_with("arguments.opt:"));
        assert_eq!(
            validate(&s, &json!({"text": "x", "item": {}})).unwrap_err(),
            "arguments.item.id: required property is missing"
        );
        assert!(validate(&s, &json!({"text": "x", "zzz": 1}))
            .unwrap_err()
            .starts_with("arguments.zzz: unknown"));
        assert_eq!(
            validate(&s, &json!([])).unwrap_err(),
            "arguments: expected object, got array"
        );
    }

    #[test]
    fn unknown_keywords_and_cycles_are_accepted() {
        let s = json!({"type": "object", "properties": {"u": {"type": "string", "format": "uri", "pattern": "^x"}},
                       "$defs": {"L": {"$ref": "#/$defs/L"}}, "allOf": [{"$ref": "#/$defs/L"}]});
        assert_eq!(validate(&s, &json!({"u": "not a uri"})), Ok(()));
        assert_eq!(validate(&json!({}), &json!({"anything": [1, 2]})), Ok(()));
        assert_eq!(validate(&json!(true), &json!(1)), Ok(()));
    }

    #[test]
    fn keys_a_pattern_allows_are_not_additional() {
        let s = json!({"type": "object", "properties": {"name": {"type": "string"}},
                       "patternProperties": {"^x-": {"type": "string"}}, "additionalProperties": false});
        assert_eq!(validate(&s, &json!({"name": "n", "x-trace": "t"})), Ok(()));
        assert!(validate(&s, &json!({"y": 1}))
            .unwrap_err()
            .starts_with("arguments.y: unknown"));
        // additionalProperties as a schema applies to the keys no pattern matches.
        let s =
            json!({"patternProperties": {"^n_": {}}, "additionalProperties": {"type": "string"}});
        assert_eq!(validate(&s, &json!({"n_1": 1, "s": "x"})), Ok(()));
        assert!(validate(&s, &json!({"s": 1})).is_err());
        // A pattern whose meaning differs between ECMA-262 and `regex` allows every key.
        let s = json!({"patternProperties": {"^\\d+$": {}, "^(?=a)": {}, "^[^]$": {}},
                       "additionalProperties": false});
        assert_eq!(validate(&s, &json!({"\u{663}": 1, "zz": 2})), Ok(()));
    }

    #[test]
    fn patterns_are_trusted_only_where_the_dialects_agree() {
        for p in [
            "^x",
            "^[a-c]+$",
            "^(foo|bar)$",
            "a.b",
            "^[\\-.]+$",
            "(?:ab)*",
            "\\.json$",
        ] {
            assert!(same_in_both_dialects(p), "{p}");
        }
        for p in [
            "\\d", "\\w+", "^\\S$", "\\bx", "\\p{L}", "[a[b]]", "[a&&b]", "[a--b]", "[]", "[^]",
            "(?i)x", "(?=a)", "(?<n>a)", "\\",
        ] {
            assert!(!same_in_both_dialects(p), "{p}");
        }
        let re = trusted_regex("^x").unwrap();
        assert!(re.is_match("xy") && !re.is_match("yx"));
        assert!(
            trusted_regex("(").is_none(),
            "a pattern regex cannot compile"
        );
    }

    #[test]
    fn items_skips_the_prefix_items_positions() {
        let s = json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "boolean"}],
                       "items": {"type": "integer"}});
        assert_eq!(validate(&s, &json!(["a", true, 1, 2])), Ok(()));
        assert_eq!(
            validate(&s, &json!(["a", true, "b"])).unwrap_err(),
            "arguments[2]: expected integer, got string"
        );
        // draft-07's array form (a tuple) is not checked.
        let s = json!({"$schema": "http://json-schema.org/draft-07/schema#",
                       "items": [{"type": "string"}], "additionalItems": false});
        assert_eq!(validate(&s, &json!([1, 2])), Ok(()));
    }

    #[test]
    fn ref_siblings_are_ignored_before_2019_09() {
        let defs = json!({"A": {"type": "integer"}});
        let s = json!({"$schema": "http://json-schema.org/draft-07/schema#", "definitions": defs,
                       "properties": {"n": {"$ref": "#/definitions/A", "minimum": 5}}});
        assert_eq!(validate(&s, &json!({"n": 1})), Ok(()));
        assert!(validate(&s, &json!({"n": "x"})).is_err());
        let s = json!({"$defs": defs, "properties": {"n": {"$ref": "#/$defs/A", "minimum": 5}}});
        assert!(validate(&s, &json!({"n": 1})).is_err());
    }

    #[test]
    fn bounds_compare_integers_exactly() {
        let big = 9_007_199_254_740_993_u64; // 2^53 + 1: no f64 holds it
        let s = json!({"exclusiveMaximum": big});
        assert_eq!(validate(&s, &json!(big - 1)), Ok(()));
        assert!(validate(&s, &json!(big)).is_err());
        assert_eq!(validate(&json!({"minimum": big}), &json!(big)), Ok(()));
        // 2^53 + 1 against the float 2^53: rounding makes them equal, so no refusal either way.
        let s = json!({"exclusiveMinimum": 9_007_199_254_740_992.0});
        assert_eq!(validate(&s, &json!(big)), Ok(()));
        assert!(validate(&json!({"maximum": 1.5}), &json!(2)).is_err());
        assert_eq!(validate(&json!({"maximum": 1.5}), &json!(1)), Ok(()));
        assert_eq!(validate(&json!({"minimum": 2}), &json!(2.0)), Ok(()));
    }

    /// The promise, differentially: over generated schemas and instances, whatever the
    /// `jsonschema` crate (a full validator) accepts, `validate` accepts. Schemas the crate
    /// refuses to compile are skipped. Vocabulary kept small so that collisions (valid instances,
    /// keys that patterns match, `$ref`s that resolve) are frequent.
    mod differential {
        use std::cell::Cell;

        use super::super::validate;
        use proptest::prelude::*;
        use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
        use serde_json::{json, Map, Value};

        const KEYS: &[&str] = &["a", "b", "x1", "foo", "\u{e9}", "9"];
        const PATTERNS: &[&str] = &["^x", "^[a-c]$", "^(foo|bar)$", "o+", "\\d", "^.$"];
        const TYPES: &[&str] = &[
            "null", "boolean", "integer", "number", "string", "array", "object",
        ];

        /// Small numbers, and the integers beyond 2^53 that f64 rounds together (often enough
        /// that bound and instance collide there).
        fn number() -> impl Strategy<Value = Value> {
            prop_oneof![
                prop::sample::select(vec![json!(-1), json!(0), json!(1), json!(0.5), json!(2.0)]),
                prop::sample::select(vec![
                    json!(9_007_199_254_740_992_u64),
                    json!(9_007_199_254_740_993_u64),
                    json!(9_007_199_254_740_992.0),
                ]),
            ]
        }

        fn scalar() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                number(),
                prop::sample::select(vec!["", "a", "x1", "foo", "\u{e9}\u{1f600}", "ab c"])
                    .prop_map(Value::from),
            ]
        }

        fn instance() -> impl Strategy<Value = Value> {
            scalar().prop_recursive(2, 16, 3, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..=3).prop_map(Value::Array),
                    prop::collection::btree_map(prop::sample::select(KEYS), inner, 0..=3).prop_map(
                        |m| { Value::Object(m.into_iter().map(|(k, v)| (k.into(), v)).collect()) }
                    ),
                ]
            })
        }

        fn key_map(m: std::collections::BTreeMap<&str, Value>) -> Value {
            Value::Object(m.into_iter().map(|(k, v)| (k.into(), v)).collect())
        }

        /// Keywords that take no subschema.
        fn flat(with_ref: bool) -> impl Strategy<Value = (String, Value)> {
            let kw = |k: &'static str| Just(k.to_string());
            prop_oneof![
                (
                    kw("type"),
                    prop::sample::select(TYPES).prop_map(Value::from)
                ),
                (
                    kw("type"),
                    prop::sample::subsequence(TYPES, 1..=3).prop_map(|t| json!(t))
                ),
                (
                    kw("enum"),
                    prop::collection::vec(scalar(), 1..=3).prop_map(Value::Array)
                ),
                (kw("const"), scalar()),
                (
                    prop::sample::select(vec![
                        "minimum",
                        "maximum",
                        "exclusiveMinimum",
                        "exclusiveMaximum"
                    ])
                    .prop_map(String::from),
                    number()
                ),
                (
                    prop::sample::select(vec!["minLength", "maxLength", "minItems", "maxItems"])
                        .prop_map(String::from),
                    (0u64..=3).prop_map(Value::from)
                ),
                (
                    kw("required"),
                    prop::sample::subsequence(KEYS, 0..=2).prop_map(|k| json!(k))
                ),
                (
                    kw("additionalProperties"),
                    any::<bool>().prop_map(Value::from)
                ),
                (
                    kw("$ref"),
                    Just(Value::from(if with_ref { "#/$defs/A" } else { "#" }))
                ),
            ]
            .prop_filter("no $ref outside the root", move |(k, _)| {
                with_ref || k != "$ref"
            })
        }

        /// Keywords that take subschemas from `inner`.
        fn nested(inner: BoxedStrategy<Value>) -> impl Strategy<Value = (String, Value)> {
            let kw = |k: &'static str| Just(k.to_string());
            let many = prop::collection::vec(inner.clone(), 1..=3).prop_map(Value::Array);
            prop_oneof![
                (
                    kw("properties"),
                    prop::collection::btree_map(prop::sample::select(KEYS), inner.clone(), 0..=3)
                        .prop_map(key_map)
                ),
                (
                    kw("patternProperties"),
                    prop::collection::btree_map(
                        prop::sample::select(PATTERNS),
                        inner.clone(),
                        1..=2
                    )
                    .prop_map(key_map)
                ),
                (kw("additionalProperties"), inner.clone()),
                (kw("items"), inner.clone()),
                (kw("items"), many.clone()), // draft-07's tuple form
                (kw("additionalItems"), inner.clone()),
                (
                    kw("prefixItems"),
                    prop::collection::vec(inner.clone(), 0..=3).prop_map(Value::Array)
                ),
                (
                    prop::sample::select(vec!["allOf", "anyOf", "oneOf"]).prop_map(String::from),
                    many
                ),
                (kw("not"), inner),
            ]
        }

        fn schema(with_ref: bool) -> BoxedStrategy<Value> {
            let object = |kws: Vec<(String, Value)>| Value::Object(kws.into_iter().collect());
            let leaf = prop_oneof![
                1 => any::<bool>().prop_map(Value::Bool),
                5 => prop::collection::vec(flat(with_ref), 0..=3).prop_map(object),
            ];
            leaf.prop_recursive(3, 24, 4, move |inner| {
                prop::collection::vec(
                    prop_oneof![flat(with_ref).boxed(), nested(inner).boxed()],
                    0..=4,
                )
                .prop_map(object)
            })
            .boxed()
        }

        /// A root with `$defs/A` for the `$ref`s, under 2020-12 (the default) or draft-07.
        fn root() -> impl Strategy<Value = Value> {
            (schema(true), schema(false), any::<bool>()).prop_map(|(body, a, draft7)| {
                let mut root = Map::new();
                if draft7 {
                    root.insert(
                        "$schema".into(),
                        json!("http://json-schema.org/draft-07/schema#"),
                    );
                }
                root.insert("$defs".into(), json!({ "A": a }));
                root.insert("allOf".into(), json!([body]));
                Value::Object(root)
            })
        }

        #[test]
        fn never_refuses_what_jsonschema_accepts() {
            let mut runner = TestRunner::new(Config {
                cases: 3000,
                failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
                    "proptest-regressions",
                ))),
                source_file: Some(file!()),
                ..Config::default()
            });
            let (compiled, accepted) = (Cell::new(0u32), Cell::new(0u32));
            let cases = (root(), prop::collection::vec(instance(), 12));
            runner
                .run(&cases, |(schema, instances)| {
                    let Ok(full) = jsonschema::validator_for(&schema) else {
                        return Ok(());
                    };
                    compiled.set(compiled.get() + 1);
                    for x in &instances {
                        if full.is_valid(x) {
                            accepted.set(accepted.get() + 1);
                            prop_assert_eq!(validate(&schema, x), Ok(()), "instance {}", x);
                        }
                    }
                    Ok(())
                })
                .unwrap();
            // Not vacuous: most schemas compile, and many instances are valid.
            let (compiled, accepted) = (compiled.get(), accepted.get());
            assert!(compiled > 1500, "{compiled} schemas compiled");
            assert!(accepted > 6000, "{accepted} instances accepted");
        }
    }
}

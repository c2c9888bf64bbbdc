//! `tools/call` arguments checked against the tool's cached `inputSchema` before they reach the
//! child, so a malformed call gets a clear −32602 naming the field instead of a stack trace from
//! the server.
//!
//! A deliberately small JSON Schema subset, built to never reject what a full validator accepts:
//! `type`, `properties`, `required`, `additionalProperties`, `items`, `enum`, `const`,
//! `minimum`/`maximum`/`exclusiveMinimum`/`exclusiveMaximum` (numeric forms), `minLength`/
//! `maxLength`, `minItems`/`maxItems`, `allOf`, `anyOf`/`oneOf` (treated as "any of": lenient),
//! local `$ref` (`#/$defs/…`, `#/definitions/…`). Every other keyword (`format`, `pattern`,
//! `if`/`then`, …) is ignored, i.e. accepted. The full `jsonschema` crate would add ~40 crates to a
//! binary that every container runs; the subset covers what MCP SDKs generate (pydantic / zod).

use serde_json::{Map, Value};

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
            if let Some(items) = s.get("items").filter(|i| i.is_object() || i.is_boolean()) {
                for (i, x) in a.iter().enumerate() {
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
            let x = n.as_f64().unwrap_or(0.0);
            let num = |k: &str| s.get(k).and_then(Value::as_f64);
            if let Some(m) = num("minimum") {
                if x < m {
                    return Err(format!("{path}: must be ≥ {m}"));
                }
            }
            if let Some(m) = num("maximum") {
                if x > m {
                    return Err(format!("{path}: must be ≤ {m}"));
                }
            }
            if let Some(m) = num("exclusiveMinimum") {
                if x <= m {
                    return Err(format!("{path}: must be > {m}"));
                }
            }
            if let Some(m) = num("exclusiveMaximum") {
                if x >= m {
                    return Err(format!("{path}: must be < {m}"));
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
    for (k, x) in o {
        let sub = format!("{path}.{k}");
        match props.and_then(|p| p.get(k)) {
            Some(ps) => check(root, ps, x, &sub, depth + 1)?,
            None => match s.get("additionalProperties") {
                Some(Value::Bool(false)) => {
                    return Err(format!(
                        "{sub}: unknown property (the tool accepts no others)"
                    ))
                }
                Some(ap @ Value::Object(_)) if s.get("patternProperties").is_none() => {
                    check(root, ap, x, &sub, depth + 1)?
                }
                _ => {}
            },
        }
    }
    Ok(())
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
}

//! Schemas of a spec as JSON Schema: the OpenAPI 3.0 dialect rewritten (`nullable`), the dialect
//! chosen, and response schemas compiled against the spec document itself, with no retrieval.

use std::collections::{HashMap, HashSet};

use jsonschema::{Draft, Registry, Retrieve, Uri, Validator};
use serde_json::{json, Map, Value};

/// The made-up URI the spec document is registered under, so that `#/components/...` references
/// resolve inside it. Nothing is ever fetched from it.
const SPEC_URI: &str = "urn:twinwatch:openapi-spec";

/// The JSON Schema draft for an OpenAPI version: Draft 4 for 3.0 (boolean `exclusiveMinimum`),
/// the document's `jsonSchemaDialect` for 3.1+ when it names a known draft, else Draft 2020-12.
pub(super) fn draft_for(minor: u32, root: &Map<String, Value>) -> Draft {
    if minor == 0 {
        return Draft::Draft4;
    }
    match root.get("jsonSchemaDialect").and_then(Value::as_str).map(Draft::from_schema_uri) {
        Some(draft @ (Draft::Draft4 | Draft::Draft6 | Draft::Draft7 | Draft::Draft201909)) => draft,
        _ => Draft::Draft202012,
    }
}

/// Rewrites every schema of an OpenAPI 3.0 document as JSON Schema: `nullable: true` becomes
/// `"null"` added to `type` (and to `enum`), or, for a schema with `$ref` or a combinator,
/// `{"anyOf": [schema, {"type": "null"}]}`. Examples and extensions are left alone.
pub(super) fn convert_30(doc: &mut Value) {
    if let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
        schemas.values_mut().for_each(convert_schema);
    }
    walk_document(doc);
}

/// Finds the schemas outside `components/schemas`: the `schema` of parameters, headers and
/// media types, wherever they are.
fn walk_document(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                match key.as_str() {
                    "schema" => convert_schema(child),
                    "schemas" | "example" | "examples" => {}
                    k if k.starts_with("x-") => {}
                    _ => walk_document(child),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(walk_document),
        _ => {}
    }
}

fn convert_schema(schema: &mut Value) {
    let Value::Object(map) = schema else { return };
    for key in ["properties", "patternProperties", "definitions", "$defs", "dependentSchemas"] {
        if let Some(Value::Object(children)) = map.get_mut(key) {
            children.values_mut().for_each(convert_schema);
        }
    }
    for key in ["allOf", "anyOf", "oneOf", "prefixItems", "items"] {
        if let Some(Value::Array(children)) = map.get_mut(key) {
            children.iter_mut().for_each(convert_schema);
        }
    }
    for key in [
        "items",
        "additionalProperties",
        "additionalItems",
        "not",
        "if",
        "then",
        "else",
        "contains",
        "propertyNames",
        "unevaluatedItems",
        "unevaluatedProperties",
    ] {
        if let Some(child @ Value::Object(_)) = map.get_mut(key) {
            convert_schema(child);
        }
    }
    if map.remove("nullable") != Some(Value::Bool(true)) {
        return;
    }
    if ["$ref", "allOf", "anyOf", "oneOf", "not"].iter().any(|k| map.contains_key(*k)) {
        let inner = std::mem::take(map);
        *schema = json!({"anyOf": [Value::Object(inner), {"type": "null"}]});
        return;
    }
    match map.get_mut("type") {
        Some(Value::String(t)) => {
            let t = std::mem::take(t);
            map.insert("type".into(), json!([t, "null"]));
        }
        Some(Value::Array(types)) if !types.contains(&json!("null")) => types.push(json!("null")),
        _ => {}
    }
    if let Some(Value::Array(values)) = map.get_mut("enum") {
        if !values.contains(&Value::Null) {
            values.push(Value::Null);
        }
    }
}

/// Refuses every retrieval: a reference outside the spec document does not compile.
struct NoRetrieval;

impl Retrieve for NoRetrieval {
    fn retrieve(&self, uri: &Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("{uri} is outside the spec; only references within it are resolved").into())
    }
}

/// The spec document registered as a schema resource, to compile one operation's response
/// schemas against.
pub(super) struct Schemas<'a> {
    registry: Registry<'a>,
    draft: Draft,
}

impl<'a> Schemas<'a> {
    pub(super) fn new(doc: &'a Value, draft: Draft) -> Result<Self, String> {
        let registry = Registry::new()
            .retriever(NoRetrieval)
            .draft(draft)
            .add(SPEC_URI, doc)
            .and_then(|builder| builder.prepare())
            .map_err(|e| e.to_string())?;
        Ok(Schemas { registry, draft })
    }

    /// Compiles the schema at `pointer` (a JSON pointer into the document). Formats are
    /// annotations only, as in most OpenAPI tools.
    pub(super) fn compile(&self, pointer: &str) -> Result<Validator, String> {
        let root = json!({"$ref": format!("{SPEC_URI}#{}", fragment(pointer))});
        jsonschema::options()
            .with_draft(self.draft)
            .with_registry(&self.registry)
            .with_retriever(NoRetrieval)
            .should_validate_formats(false)
            .build(&root)
            .map_err(|e| e.to_string())
    }
}

/// Escapes one JSON pointer token (`~` → `~0`, `/` → `~1`).
pub(super) fn token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// A JSON pointer as a URI fragment: everything but unreserved characters and `/` percent-encoded.
fn fragment(pointer: &str) -> String {
    super::plan::encode(pointer, |b| b == b'/')
}

/// A URI fragment from a `$ref` back to a JSON pointer (percent-decoded).
pub(super) fn unfragment(fragment: &str) -> Option<String> {
    let bytes = fragment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The longest chain of schemas applying in place to one value (`$ref`, `allOf`, `anyOf`,
/// `oneOf`, `not`, `if`/`then`/`else`, `dependentSchemas`), over every schema in the document,
/// counted in schemas; a cycle counts once. Validation recurses once per schema in such a chain
/// at each level of the body, so this bounds the stack a validation needs.
pub(super) fn longest_chain(doc: &Value) -> usize {
    let mut roots = Vec::new();
    if let Some(schemas) = doc.pointer("/components/schemas").and_then(Value::as_object) {
        roots.extend(schemas.values());
    }
    schema_positions(doc, &mut roots);

    // Every schema reachable from those, by any keyword or reference.
    let mut all = Vec::new();
    let mut seen = HashSet::new();
    while let Some(schema) = roots.pop() {
        if seen.insert(std::ptr::from_ref(schema)) {
            all.push(schema);
            roots.extend(in_place(doc, schema));
            roots.extend(nested(schema));
        }
    }

    // Longest in-place path, by an iterative depth-first search (the document can be deep).
    let mut memo: HashMap<*const Value, usize> = HashMap::new();
    let mut on_path = HashSet::new();
    let mut longest = 0;
    for root in all {
        if memo.contains_key(&std::ptr::from_ref(root)) {
            continue;
        }
        let mut stack = vec![(root, in_place(doc, root), 0)];
        on_path.insert(std::ptr::from_ref(root));
        while let Some((node, children, best)) = stack.last_mut() {
            if let Some(child) = children.pop() {
                let key = std::ptr::from_ref(child);
                if let Some(&length) = memo.get(&key) {
                    *best = (*best).max(length);
                } else if on_path.insert(key) {
                    let grandchildren = in_place(doc, child);
                    stack.push((child, grandchildren, 0));
                }
            } else {
                let (key, length) = (std::ptr::from_ref(*node), *best + 1);
                stack.pop();
                on_path.remove(&key);
                memo.insert(key, length);
                longest = longest.max(length);
                if let Some((_, _, best)) = stack.last_mut() {
                    *best = (*best).max(length);
                }
            }
        }
    }
    longest
}

/// The `schema` of parameters, headers and media types, wherever they are.
fn schema_positions<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match key.as_str() {
                    "schema" => out.push(child),
                    "schemas" | "example" | "examples" => {}
                    k if k.starts_with("x-") => {}
                    _ => schema_positions(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| schema_positions(item, out)),
        _ => {}
    }
}

/// The schemas that apply to the same value as `schema`, a `$ref` resolved within `doc`.
fn in_place<'a>(doc: &'a Value, schema: &'a Value) -> Vec<&'a Value> {
    let Value::Object(map) = schema else { return Vec::new() };
    let mut out = Vec::new();
    if let Some(target) = map.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')) {
        out.extend(unfragment(target).and_then(|pointer| doc.pointer(&pointer)));
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        out.extend(map.get(key).and_then(Value::as_array).into_iter().flatten());
    }
    out.extend(["not", "if", "then", "else"].iter().filter_map(|key| map.get(*key)));
    for key in ["dependentSchemas", "dependencies"] {
        out.extend(map.get(key).and_then(Value::as_object).into_iter().flat_map(|m| m.values()));
    }
    out
}

/// The schemas that apply to values inside the one `schema` applies to.
fn nested(schema: &Value) -> Vec<&Value> {
    let Value::Object(map) = schema else { return Vec::new() };
    let mut out = Vec::new();
    for key in ["properties", "patternProperties", "$defs", "definitions"] {
        out.extend(map.get(key).and_then(Value::as_object).into_iter().flat_map(|m| m.values()));
    }
    for key in ["items", "prefixItems"] {
        match map.get(key) {
            Some(Value::Array(items)) => out.extend(items),
            Some(item) => out.push(item),
            None => {}
        }
    }
    for key in [
        "additionalProperties",
        "additionalItems",
        "contains",
        "propertyNames",
        "unevaluatedItems",
        "unevaluatedProperties",
    ] {
        out.extend(map.get(key));
    }
    out
}

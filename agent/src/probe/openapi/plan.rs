//! Probe plans: the GET request for an operation, with the path, query, header and cookie
//! parameters the spec gives values for, or the reason it cannot be made without guessing.

use serde_json::{Map, Value};

use super::{resolve, target, Plan, PlanOptions, MAX_REF_HOPS};

/// The longest path and query, and header value, a plan may have.
const MAX_TARGET: usize = 8192;
/// The most parameters an operation may have (its own and its path's) to be planned.
const MAX_PARAMETERS: usize = 256;
/// The most schemas looked into for one parameter's example (`$ref`s and `allOf`/`anyOf`/
/// `oneOf` members), so a spec cannot make the search branch without end.
const MAX_SCHEMAS: usize = 64;

/// What planning needs to know about the whole spec.
pub(super) struct Context<'a> {
    pub doc: &'a Value,
    /// OpenAPI 3.1 and later: a schema's `$ref` applies beside its sibling keywords, as in JSON
    /// Schema 2020-12. In 3.0 a `$ref` replaces its object and siblings are ignored.
    pub ref_siblings: bool,
    pub root_security: Option<&'a Value>,
    pub options: PlanOptions,
}

impl Context<'_> {
    /// A GET the agent may call: it needs no credentials, or the service has some.
    pub fn callable(&self, method: &str, op: &Value) -> bool {
        method == "get" && (self.options.authenticated || !requires_auth(op.get("security").or(self.root_security)))
    }
}

/// Decides whether and how to probe one operation.
pub(super) fn plan(
    cx: &Context<'_>,
    path: &str,
    method: &str,
    path_parameters: Option<&Value>,
    op: &Value,
) -> Result<Plan, String> {
    if method != "get" {
        return Err(format!("method {} is not probed", method.to_ascii_uppercase()));
    }
    if !cx.callable(method, op) {
        return Err("requires authentication".into());
    }
    let doc = cx.doc;
    let parameters = parameters(doc, path_parameters, op.get("parameters"))?;
    let find = |name: &str, place: &str| parameters.iter().find(|p| p.name == name && p.place == place);

    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&encode(&rest[..open], |b| b"!$&'()*+,;=:@/%".contains(&b)));
        let close = rest[open..].find('}').ok_or_else(|| format!("path template `{path}` is malformed"))? + open;
        let name = &rest[open + 1..close];
        let p = find(name, "path").ok_or_else(|| format!("path parameter `{name}` is not declared"))?;
        out.push_str(&p.render(cx, true)?.unwrap_or_default());
        rest = &rest[close + 1..];
        if out.len() > MAX_TARGET {
            return Err(format!("the request target would be longer than {MAX_TARGET} bytes"));
        }
    }
    out.push_str(&encode(rest, |b| b"!$&'()*+,;=:@/%".contains(&b)));

    let mut query = Vec::new();
    let mut headers = Vec::new();
    let mut cookies = Vec::new();
    for p in &parameters {
        let value = match p.place.as_str() {
            "path" => continue,
            "header" if ["accept", "content-type", "authorization"].contains(&p.name.to_ascii_lowercase().as_str()) => {
                continue
            }
            _ => match p.render(cx, false)? {
                Some(value) => value,
                None => continue,
            },
        };
        match p.place.as_str() {
            "query" => query.push(value),
            "header" => headers.push((p.name.clone(), value)),
            "cookie" => cookies.push(value),
            other => return Err(format!("required {other} parameter `{}` is not supported", p.name)),
        }
    }
    if !query.is_empty() {
        out.push('?');
        out.push_str(&query.join("&"));
    }
    if !cookies.is_empty() {
        headers.push(("Cookie".into(), cookies.join("; ")));
    }
    if out.len() > MAX_TARGET {
        return Err(format!("the request target would be longer than {MAX_TARGET} bytes"));
    }
    if let Some((name, _)) = headers.iter().find(|(_, value)| value.len() > MAX_TARGET) {
        return Err(format!("header {name} would be longer than {MAX_TARGET} bytes"));
    }
    Ok(Plan { path_and_query: out, headers })
}

/// Security requirements demand credentials unless there are none or one of the alternatives is
/// the empty requirement `{}`.
pub(super) fn requires_auth(security: Option<&Value>) -> bool {
    match security.and_then(Value::as_array) {
        Some(alternatives) => {
            !alternatives.is_empty() && !alternatives.iter().any(|a| a.as_object().is_some_and(Map::is_empty))
        }
        None => false,
    }
}

/// A parameter object, resolved.
struct Parameter<'a> {
    name: String,
    /// `in`: path, query, header or cookie.
    place: String,
    object: &'a Value,
}

/// The path item's parameters merged with the operation's (which win by name and `in`).
fn parameters<'a>(
    doc: &'a Value,
    path: Option<&'a Value>,
    op: Option<&'a Value>,
) -> Result<Vec<Parameter<'a>>, String> {
    let mut merged: Vec<Parameter<'a>> = Vec::new();
    for list in [path, op].into_iter().flatten() {
        let list = list.as_array().map_or(&[][..], Vec::as_slice);
        if merged.len() + list.len() > MAX_PARAMETERS {
            return Err(format!("more than {MAX_PARAMETERS} parameters"));
        }
        for p in list {
            let (_, object) = resolve(doc, String::new(), p).map_err(|e| format!("parameter {e}"))?;
            let text = |key| object.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
            let (name, place) = (text("name"), text("in"));
            merged.retain(|m| m.name != name || m.place != place);
            merged.push(Parameter { name, place, object });
        }
    }
    Ok(merged)
}

impl<'a> Parameter<'a> {
    /// The parameter as it goes into the request (`name=value` for query and cookie), `None`
    /// for an optional one, or why it cannot be sent.
    fn render(&self, cx: &Context<'a>, in_path: bool) -> Result<Option<String>, String> {
        let (name, place) = (&self.name, &self.place);
        let required = in_path || self.object.get("required") == Some(&Value::Bool(true));
        if !required {
            return Ok(None);
        }
        let Some(value) = self.example(cx) else {
            return Err(format!("required {place} parameter `{name}` has no example or default"));
        };
        let default_style = match place.as_str() {
            "query" | "cookie" => "form",
            _ => "simple",
        };
        let style = self.object.get("style").and_then(Value::as_str).unwrap_or(default_style);
        let explode = self.object.get("explode").and_then(Value::as_bool).unwrap_or(style == "form");
        let unsupported = |what: &str| Err(format!("{place} parameter `{name}`: {what} is not supported"));
        let items: Vec<String> = match value {
            Value::Object(_) => return unsupported("an object value"),
            Value::Array(items) => {
                let ok = (style == "simple" && place != "cookie") || (style == "form" && place == "query");
                if !ok {
                    return unsupported(&format!("style {style} with an array value"));
                }
                let items: Option<Vec<String>> = items.iter().map(primitive).collect();
                let Some(items) = items else { return unsupported("an array of arrays or objects") };
                items
            }
            scalar => vec![primitive(scalar).unwrap_or_default()],
        };
        let enc = |s: &str| encode(s, |_| false);
        let joined = || items.iter().map(|i| enc(i)).collect::<Vec<_>>().join(",");
        Ok(Some(match (place.as_str(), style) {
            ("path", "simple") => joined(),
            ("path", "label") if items.len() == 1 => format!(".{}", joined()),
            ("path", "matrix") if items.len() == 1 => format!(";{}={}", enc(name), joined()),
            ("path", _) => return unsupported(&format!("style {style}")),
            ("query", _) if explode && value.is_array() => {
                items.iter().map(|i| format!("{}={}", enc(name), enc(i))).collect::<Vec<_>>().join("&")
            }
            ("query" | "cookie", _) => format!("{}={}", enc(name), joined()),
            ("header", _) => {
                let value = items.join(",");
                let valid_name = !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                if !valid_name || !value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
                    return unsupported("a header name or value with control or non-ASCII characters");
                }
                value
            }
            (other, _) => return Err(format!("required {other} parameter `{name}` is not supported")),
        }))
    }

    /// The first of the parameter's `example` and `examples` (the first by name, with a
    /// `value`), then what its schema suggests (see [`schema_example`]). Null counts as absent.
    fn example(&self, cx: &Context<'a>) -> Option<&'a Value> {
        let doc = cx.doc;
        let object = self.object;
        let from_examples = || {
            let examples = object.get("examples")?.as_object()?;
            examples.values().find_map(|e| present(resolve(doc, String::new(), e).ok()?.1.get("value")))
        };
        let from_schema = || {
            let mut budget = MAX_SCHEMAS;
            schema_example(cx, object.get("schema")?, 0, &mut budget)
        };
        present(object.get("example")).or_else(from_examples).or_else(from_schema)
    }
}

fn present(value: Option<&Value>) -> Option<&Value> {
    value.filter(|v| !v.is_null())
}

/// The first value a schema suggests: its `example`, `default`, first `examples` entry (the
/// JSON Schema array), first non-null `enum` value or `const`; then the same of the schema its
/// `$ref` names, then of its `allOf`, `anyOf` and `oneOf` members, depth first. In 3.1 a
/// `$ref`'s siblings are read before the schema it names, so they win (FastAPI writes
/// `{"$ref": ".../Weekday", "examples": ["mon"]}`); in 3.0 they are ignored.
/// `budget` counts down the schemas still to be looked into.
fn schema_example<'a>(cx: &Context<'a>, schema: &'a Value, hops: usize, budget: &mut usize) -> Option<&'a Value> {
    if hops > MAX_REF_HOPS || *budget == 0 {
        return None;
    }
    *budget -= 1;
    let reference = schema.get("$ref").and_then(Value::as_str);
    if reference.is_none() || cx.ref_siblings {
        let own = present(schema.get("example"))
            .or_else(|| present(schema.get("default")))
            .or_else(|| present(schema.get("examples")?.as_array()?.first()))
            .or_else(|| schema.get("enum")?.as_array()?.iter().find(|v| !v.is_null()))
            .or_else(|| present(schema.get("const")));
        if own.is_some() {
            return own;
        }
    }
    if let Some(reference) = reference {
        let (_, referenced) = target(cx.doc, reference).ok()?;
        if let Some(found) = schema_example(cx, referenced, hops + 1, budget) {
            return Some(found);
        }
        if !cx.ref_siblings {
            return None;
        }
    }
    ["allOf", "anyOf", "oneOf"]
        .iter()
        .filter_map(|key| schema.get(*key)?.as_array())
        .flatten()
        .find_map(|member| schema_example(cx, member, hops + 1, budget))
}

/// A scalar as text; `None` for arrays and objects.
pub(super) fn primitive(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

/// Percent-encodes every byte but ASCII letters, digits, `-._~` and those `keep` accepts.
pub(super) fn encode(text: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

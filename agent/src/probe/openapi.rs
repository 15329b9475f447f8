//! OpenAPI 3.0/3.1 specs for HTTP probes: the operations a spec declares, a GET probe plan for
//! each one that can be called without guessing, and validation of response bodies against the
//! spec's schemas, each violation with its JSON pointer.
//!
//! Pure (sans-IO): the caller fetches the spec and the responses. Nothing here reads a file or
//! the network; a `$ref` outside the spec document does not resolve.
//!
//! ```text
//! let spec = Spec::parse_with(&bytes, PlanOptions { authenticated: false })?;
//! for (i, op) in spec.operations.iter().enumerate() {
//!     let Ok(plan) = &op.plan else { continue };            // Err: why it is not probed
//!     let validator = spec.validator(i)?;                   // compile once, reuse per probe
//!     // GET {server}{plan.path_and_query} with plan.headers, then:
//!     let violations = validator.validate(status, content_type, &body);
//! }
//! ```
//!
//! Operations are listed by path (byte order), then in the method order get, put, post, delete,
//! options, head, patch, trace (the parsed document keeps no key order).

mod load;
mod plan;
mod schema;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use jsonschema::{Draft, Validator};
use serde_json::{Map, Value};

pub use load::{MAX_SPEC_BYTES, MAX_VALUES};

/// The most violations [`ResponseValidator::validate`] returns for one response.
pub const MAX_VIOLATIONS: usize = 16;
/// Operation ids are cut to this many characters.
pub const MAX_ID_LEN: usize = 100;
/// A violation's message is cut to this many bytes (messages quote the offending value).
const MAX_MESSAGE: usize = 300;
/// How many `$ref`s in a row are followed before giving up (cycles included).
const MAX_REF_HOPS: usize = 16;
/// The longest chain of in-place schemas (`$ref`, `allOf`, ...) a spec may have to be validated
/// against; see [`schema::longest_chain`].
const MAX_CHAIN: usize = 64;
/// Schemas a validation may have on its stack at once: (chain + 2) × (body depth + 1). Each costs
/// a few hundred bytes; this stays well within a 2 MiB thread stack.
const STACK_BUDGET: usize = 3000;
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// Why a spec could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("spec is {size} bytes, more than the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("spec is empty")]
    Empty,
    #[error("spec holds more than {limit} values")]
    TooManyValues { limit: usize },
    #[error("spec is neither JSON nor YAML: {0}")]
    Syntax(String),
    #[error("not an OpenAPI document: {0}")]
    NotOpenApi(String),
    #[error("unsupported version: `{field}: {version}`; only OpenAPI 3.0 and 3.1 are supported")]
    UnsupportedVersion { field: &'static str, version: String },
    #[error("spec has no `paths` mapping")]
    MissingPaths,
    #[error("no operation #{0} in this spec")]
    NoSuchOperation(usize),
    #[error("operation `{operation}`: {message}")]
    Response { operation: String, message: String },
}

/// How probes are planned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// The service's probe configuration supplies credentials (headers), so operations that
    /// require authentication are planned too.
    pub authenticated: bool,
}

/// A parsed OpenAPI 3.x document.
#[derive(Clone)]
pub struct Spec {
    /// `info.title`.
    pub title: String,
    /// `info.version`: the API's version, not the OpenAPI version.
    pub version: String,
    /// The OpenAPI version, as written (`3.0.3`, `3.1.0`).
    pub openapi: String,
    /// `servers[].url`, with `{variables}` replaced by their defaults. Empty when the spec names
    /// none (OpenAPI then means the spec's own origin). Path- and operation-level servers are not
    /// read. A plan's `path_and_query` goes after the server URL's path.
    pub servers: Vec<String>,
    pub operations: Vec<Operation>,
    /// The document, its 3.0 schemas rewritten as JSON Schema.
    doc: Arc<Value>,
    draft: Draft,
    /// [`schema::longest_chain`] of the document.
    chain: usize,
}

/// One operation: a method on a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The `operationId`, characters outside `[A-Za-z0-9._:-]` as `_`; without one, the method
    /// and the path's alphanumeric runs joined by `_` (`get_pets_petId`). At most
    /// [`MAX_ID_LEN`] characters, unique within the spec (`_2`, `_3`, ... appended).
    pub id: String,
    /// Upper case: `GET`.
    pub method: String,
    /// The path template as in the spec: `/pets/{petId}`.
    pub path: String,
    /// A GET the agent may call: one that needs no credentials, or whose service has them.
    /// Coverage is probed operations over callable ones.
    pub callable: bool,
    /// How to probe it, or why it is not probed.
    pub plan: Result<Plan, String>,
    /// JSON pointer to the operation object in the document.
    pointer: String,
}

/// A GET request that exercises an operation with values the spec itself gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The path with its parameters substituted and the query string, percent-encoded:
    /// `/pets/42?limit=10`.
    pub path_and_query: String,
    /// Header parameters, and a `Cookie` header for cookie parameters.
    pub headers: Vec<(String, String)>,
}

/// Where a response body departs from the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer into the body (`/items/0/price`); `""` is the whole body.
    pub pointer: String,
    pub message: String,
}

impl Violation {
    fn whole(message: String) -> Self {
        Violation { pointer: String::new(), message }
    }
}

impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spec")
            .field("title", &self.title)
            .field("version", &self.version)
            .field("openapi", &self.openapi)
            .field("servers", &self.servers)
            .field("operations", &self.operations)
            .finish_non_exhaustive()
    }
}

impl Spec {
    /// [`Spec::parse_with`] for a service without credentials.
    pub fn parse(bytes: &[u8]) -> Result<Spec, SpecError> {
        Spec::parse_with(bytes, PlanOptions::default())
    }

    /// Parses a spec: JSON if it parses as JSON, else YAML. At most [`MAX_SPEC_BYTES`] bytes,
    /// [`MAX_VALUES`] values and 128 levels of nesting.
    pub fn parse_with(bytes: &[u8], options: PlanOptions) -> Result<Spec, SpecError> {
        let mut doc = load::document(bytes)?;
        let Some(root) = doc.as_object() else {
            return Err(SpecError::NotOpenApi(format!("the top level is {}, not a mapping", kind(&doc))));
        };
        let (openapi, minor) = openapi_version(root)?;
        let draft = schema::draft_for(minor, root);
        let paths = root.get("paths").and_then(Value::as_object).ok_or(SpecError::MissingPaths)?;
        let info = root.get("info");
        let text = |key: &str| clip(info.and_then(|i| i.get(key)).map(scalar_text).unwrap_or_default(), 200);
        let (title, version) = (text("title"), text("version"));
        let servers = root
            .get("servers")
            .and_then(Value::as_array)
            .map_or_else(Vec::new, |s| s.iter().filter_map(server_url).collect());

        let cx = plan::Context { doc: &doc, ref_siblings: minor >= 1, root_security: root.get("security"), options };
        let mut operations = Vec::new();
        let mut ids = Ids::default();
        for (path, item) in paths.iter().filter(|(path, _)| !path.starts_with("x-")) {
            let pointer = format!("/paths/{}", schema::token(path));
            let Ok((pointer, Value::Object(item))) = resolve(&doc, pointer, item) else { continue };
            for method in METHODS {
                let Some(op @ Value::Object(_)) = item.get(method) else { continue };
                let id = op.get("operationId").and_then(Value::as_str).filter(|id| !id.is_empty());
                let id = id.map_or_else(|| derived_id(method, path), sanitize_id);
                let plan = plan::plan(&cx, path, method, item.get("parameters"), op);
                operations.push(Operation {
                    id: ids.unique(id),
                    method: method.to_ascii_uppercase(),
                    path: path.clone(),
                    callable: cx.callable(method, op),
                    plan,
                    pointer: format!("{pointer}/{method}"),
                });
            }
        }
        if minor == 0 {
            schema::convert_30(&mut doc);
        }
        let chain = schema::longest_chain(&doc);
        Ok(Spec { title, version, openapi, servers, operations, doc: Arc::new(doc), draft, chain })
    }

    /// The index of the operation with this id.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.operations.iter().position(|op| op.id == id)
    }

    /// Compiles the response schemas of operation `operation` (an index into `operations`), to
    /// validate every probe's response with. Fails when a response `$ref` does not resolve, a
    /// JSON response schema does not compile (including `$ref`s outside the document), or the
    /// spec chains more than 64 schemas in place (`$ref` to `allOf` to `$ref`...).
    pub fn validator(&self, operation: usize) -> Result<ResponseValidator, SpecError> {
        let op = self.operations.get(operation).ok_or(SpecError::NoSuchOperation(operation))?;
        let error = |message: String| SpecError::Response { operation: op.id.clone(), message };
        let responses = self.doc.pointer(&op.pointer).and_then(|o| o.get("responses")).and_then(Value::as_object);
        let responses: Vec<_> = responses.into_iter().flatten().filter(|(key, _)| !key.starts_with("x-")).collect();
        let mut schemas = None;
        let mut compiled = Vec::new();
        for (key, response) in &responses {
            let pointer = format!("{}/responses/{}", op.pointer, schema::token(key));
            let (pointer, response) = resolve(&self.doc, pointer, response).map_err(error)?;
            let mut media = Vec::new();
            for (range, media_type) in response.get("content").and_then(Value::as_object).into_iter().flatten() {
                let range = range.to_ascii_lowercase();
                let validator = match media_type.get("schema") {
                    Some(_) if json_range(&range) => {
                        let at = format!("{pointer}/content/{}/schema", schema::token(&range));
                        let schemas = match &mut schemas {
                            Some(schemas) => schemas,
                            None if self.chain > MAX_CHAIN => {
                                return Err(error(format!(
                                    "the spec chains {} schemas in place ($ref, allOf, ...); more than {MAX_CHAIN} \
                                     are not validated",
                                    self.chain
                                )))
                            }
                            None => schemas.insert(schema::Schemas::new(&self.doc, self.draft).map_err(error)?),
                        };
                        let validator = schemas.compile(&at).map_err(|e| error(format!("schema at {at}: {e}")))?;
                        Some(Box::new(validator))
                    }
                    _ => None,
                };
                media.push(Media { range, validator });
            }
            compiled.push(Response { status: key.to_ascii_uppercase(), media });
        }
        let max_depth = (STACK_BUDGET / (self.chain + 2)).saturating_sub(1);
        Ok(ResponseValidator { documented: !responses.is_empty(), responses: compiled, max_depth })
    }
}

/// The compiled response schemas of one operation.
#[derive(Debug)]
pub struct ResponseValidator {
    /// The operation lists at least one response.
    documented: bool,
    responses: Vec<Response>,
    /// The deepest body validated (levels of arrays and objects), to bound the stack; 128 or
    /// more (JSON's own bound here) unless the schemas chain more than 21 deep.
    max_depth: usize,
}

#[derive(Debug)]
struct Response {
    /// `200`, `2XX` or `DEFAULT`.
    status: String,
    media: Vec<Media>,
}

#[derive(Debug)]
struct Media {
    /// The media range as documented, lower case: `application/json`, `*/*`.
    range: String,
    /// Present for a JSON media type with a schema.
    validator: Option<Box<Validator>>,
}

impl ResponseValidator {
    /// The violations of a response: at most [`MAX_VIOLATIONS`], in the validator's order (see
    /// [`ResponseValidator::validate_counted`] for the total).
    ///
    /// The response for `status` is the exact code, else its range (`2XX`), else `default`; a
    /// status none of them covers is a violation, unless the operation documents no responses.
    /// Among its media types, the one `content_type` matches (exactly, then `type/*`, `*/*`) is
    /// used; a JSON or unmatched content type falls back to the JSON one documented
    /// (`application/json` first). JSON media types are `*/json`, `*/*+json`, and `application/*`
    /// or `*/*` when they carry a schema. Not validated: responses without a JSON schema, and
    /// non-JSON content types a documented non-JSON or wildcard media type covers. The caller
    /// bounds the body's size; JSON nesting is bounded at 128 levels.
    pub fn validate(&self, status: u16, content_type: Option<&str>, body: &[u8]) -> Vec<Violation> {
        self.validate_counted(status, content_type, body).0
    }

    /// [`ResponseValidator::validate`], with the total number of violations found (which can be
    /// more than the [`MAX_VIOLATIONS`] returned).
    pub fn validate_counted(&self, status: u16, content_type: Option<&str>, body: &[u8]) -> (Vec<Violation>, usize) {
        if !self.documented {
            return (Vec::new(), 0);
        }
        let Some(response) = self.response(status) else {
            return (vec![Violation::whole(format!("status {status} is not documented for this operation"))], 1);
        };
        let Some(validator) = response.validator(content_type) else { return (Vec::new(), 0) };
        let body: Value = match serde_json::from_slice(body) {
            Ok(body) => body,
            Err(e) => return (vec![Violation::whole(clip(format!("body is not JSON: {e}"), MAX_MESSAGE))], 1),
        };
        let depth = depth(&body);
        if depth > self.max_depth {
            let max = self.max_depth;
            let message =
                format!("not validated: the body nests {depth} levels deep, this spec's schemas {max} at most");
            return (vec![Violation::whole(message)], 1);
        }
        let mut violations = Vec::new();
        let mut total = 0;
        for error in validator.iter_errors(&body) {
            total += 1;
            if violations.len() < MAX_VIOLATIONS {
                let pointer = error.instance_path().as_str().to_owned();
                violations.push(Violation { pointer, message: clip(error.to_string(), MAX_MESSAGE) });
            }
        }
        (violations, total)
    }

    fn response(&self, status: u16) -> Option<&Response> {
        let find = |key: &str| self.responses.iter().find(|r| r.status == key);
        find(&status.to_string()).or_else(|| find(&format!("{}XX", status / 100))).or_else(|| find("DEFAULT"))
    }
}

impl Response {
    fn validator(&self, content_type: Option<&str>) -> Option<&Validator> {
        let essence = content_type.map(|ct| ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        let find = |range: &str| self.media.iter().find(|m| m.range == range);
        let fallback = || {
            let json = || self.media.iter().filter(|m| m.validator.is_some());
            find("application/json")
                .filter(|m| m.validator.is_some())
                .or_else(|| json().find(|m| is_json(&m.range)))
                .or_else(|| json().next())
        };
        let chosen = match essence {
            None => fallback(),
            Some(ct) => match find(&ct) {
                Some(exact) => Some(exact),
                None => {
                    let wildcard =
                        ct.split_once('/').and_then(|(t, _)| find(&format!("{t}/*"))).or_else(|| find("*/*"));
                    match wildcard {
                        Some(w) if is_json(&ct) && w.validator.is_some() => Some(w),
                        Some(_) if !is_json(&ct) => None,
                        _ => fallback(),
                    }
                }
            },
        };
        chosen.and_then(|m| m.validator.as_deref())
    }
}

/// Levels of arrays and objects: 0 for a scalar, 1 for `[1]` or `{}`, 2 for `[[]]`.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0)];
    while let Some((value, level)) = stack.pop() {
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, level + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, level + 1))),
            _ => continue,
        }
        deepest = deepest.max(level + 1);
    }
    deepest
}

/// `application/json`, `text/json`, `application/problem+json`.
fn is_json(essence: &str) -> bool {
    essence.split_once('/').is_some_and(|(_, sub)| sub == "json" || sub.ends_with("+json"))
}

/// A documented media range whose schema describes JSON.
fn json_range(range: &str) -> bool {
    is_json(range) || range == "application/*" || range == "*/*"
}

/// The `openapi` version and its minor number; refuses Swagger 2.0 and anything but 3.x.
fn openapi_version(root: &Map<String, Value>) -> Result<(String, u32), SpecError> {
    let Some(version) = root.get("openapi").map(scalar_text) else {
        return Err(match root.get("swagger") {
            Some(v) => SpecError::UnsupportedVersion { field: "swagger", version: clip(scalar_text(v), 40) },
            None => SpecError::NotOpenApi("no `openapi` version field".into()),
        });
    };
    let mut parts = version.split('.');
    match (parts.next(), parts.next().and_then(|m| m.parse::<u32>().ok())) {
        (Some("3"), Some(minor)) => Ok((version, minor)),
        _ => Err(SpecError::UnsupportedVersion { field: "openapi", version: clip(version, 40) }),
    }
}

/// Follows `$ref`s (`#/...` only) from `value`, found at `pointer`, to the object they name.
/// Siblings of each `$ref` are ignored: right for 3.0, and for 3.1 Reference Objects, whose
/// `summary` and `description` are all that may stand beside them.
fn resolve<'a>(doc: &'a Value, mut pointer: String, mut value: &'a Value) -> Result<(String, &'a Value), String> {
    for _ in 0..MAX_REF_HOPS {
        let Some(reference) = value.get("$ref").and_then(Value::as_str) else { return Ok((pointer, value)) };
        (pointer, value) = target(doc, reference)?;
    }
    Err(format!("more than {MAX_REF_HOPS} references in a row at {pointer}"))
}

/// What one `$ref` (`#/...` only) names, and its pointer.
fn target<'a>(doc: &'a Value, reference: &str) -> Result<(String, &'a Value), String> {
    let shown = || clip(reference.into(), 200);
    let Some(fragment) = reference.strip_prefix('#') else {
        return Err(format!("reference `{}` is outside the spec", shown()));
    };
    let Some(target) = schema::unfragment(fragment).filter(|t| t.is_empty() || t.starts_with('/')) else {
        return Err(format!("reference `{}` is not a JSON pointer", shown()));
    };
    let value = doc.pointer(&target).ok_or_else(|| format!("reference `{}` does not resolve", shown()))?;
    Ok((target, value))
}

fn scalar_text(value: &Value) -> String {
    plan::primitive(value).unwrap_or_default()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

/// A server's URL with its variables' defaults substituted (at most 2048 bytes).
fn server_url(server: &Value) -> Option<String> {
    let mut rest = server.get("url")?.as_str()?;
    let variables = server.get("variables").and_then(Value::as_object);
    let mut url = String::new();
    while url.len() <= 2048 {
        let Some((before, after)) = rest.split_once('{') else { break };
        let Some((name, after)) = after.split_once('}') else { break };
        let default = variables.and_then(|v| v.get(name)).and_then(|v| v.get("default")).map(scalar_text);
        url.push_str(before);
        url.push_str(&default.unwrap_or_else(|| format!("{{{name}}}")));
        rest = after;
    }
    url.push_str(rest);
    Some(clip(url, 2048))
}

fn sanitize_id(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || "._:-".contains(c) { c } else { '_' }).take(MAX_ID_LEN).collect()
}

/// `get_pets_petId` for GET `/pets/{petId}`; `get_root` for `/`.
fn derived_id(method: &str, path: &str) -> String {
    let words: Vec<&str> = path.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let tail = if words.is_empty() { "root".to_owned() } else { words.join("_") };
    format!("{method}_{tail}").chars().take(MAX_ID_LEN).collect()
}

/// The operation ids given so far, and the next suffix to try for each.
#[derive(Default)]
struct Ids {
    taken: HashSet<String>,
    next: HashMap<String, u64>,
}

impl Ids {
    /// `id`, or `id_2`, `id_3`, ... when taken, within [`MAX_ID_LEN`].
    fn unique(&mut self, id: String) -> String {
        let mut candidate = id.clone();
        while self.taken.contains(&candidate) {
            let n = self.next.entry(id.clone()).or_insert(1);
            *n += 1;
            let suffix = format!("_{n}");
            let stem: String = id.chars().take(MAX_ID_LEN - suffix.len()).collect();
            candidate = stem + &suffix;
        }
        self.taken.insert(candidate.clone());
        candidate
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut with `…`.
fn clip(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max.saturating_sub('…'.len_utf8());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests;

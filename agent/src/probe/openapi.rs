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

        let mut operations = Vec::new();
        let mut ids = Ids::default();
        for (path, item) in paths.iter().filter(|(path, _)| !path.starts_with("x-")) {
            let pointer = format!("/paths/{}", schema::token(path));
            let Ok((pointer, Value::Object(item))) = resolve(&doc, pointer, item) else { continue };
            for method in METHODS {
                let Some(op @ Value::Object(_)) = item.get(method) else { continue };
                let id = op.get("operationId").and_then(Value::as_str).filter(|id| !id.is_empty());
                let id = id.map_or_else(|| derived_id(method, path), sanitize_id);
                let plan = plan::plan(&doc, path, method, item.get("parameters"), op, root.get("security"), options);
                operations.push(Operation {
                    id: ids.unique(id),
                    method: method.to_ascii_uppercase(),
                    path: path.clone(),
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
fn resolve<'a>(doc: &'a Value, mut pointer: String, mut value: &'a Value) -> Result<(String, &'a Value), String> {
    for _ in 0..MAX_REF_HOPS {
        let Some(reference) = value.get("$ref").and_then(Value::as_str) else { return Ok((pointer, value)) };
        let shown = || clip(reference.into(), 200);
        let Some(fragment) = reference.strip_prefix('#') else {
            return Err(format!("reference `{}` is outside the spec", shown()));
        };
        let Some(target) = schema::unfragment(fragment).filter(|t| t.is_empty() || t.starts_with('/')) else {
            return Err(format!("reference `{}` is not a JSON pointer", shown()));
        };
        value = doc.pointer(&target).ok_or_else(|| format!("reference `{}` does not resolve", shown()))?;
        pointer = target;
    }
    Err(format!("more than {MAX_REF_HOPS} references in a row at {pointer}"))
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
mod tests {
    use super::*;

    const PETS_JSON: &str = r##"{
      "openapi": "3.0.3",
      "info": {"title": "Pets", "version": "1.2.0"},
      "servers": [{"url": "https://{region}.pets.example/v1", "variables": {"region": {"default": "eu"}}}],
      "paths": {
        "/pets": {
          "get": {
            "operationId": "listPets",
            "parameters": [{"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "maximum": 100}}],
            "responses": {
              "200": {"description": "A page of pets",
                      "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Pet"}}}}},
              "default": {"$ref": "#/components/responses/Problem"}
            }
          },
          "post": {"operationId": "createPet", "responses": {"201": {"description": "Created"}}}
        },
        "/pets/{petId}": {
          "parameters": [{"name": "petId", "in": "path", "required": true, "example": 42, "schema": {"type": "integer"}}],
          "get": {
            "operationId": "showPetById",
            "responses": {
              "200": {"description": "A pet", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}}},
              "4XX": {"$ref": "#/components/responses/Problem"}
            }
          }
        },
        "/pets/{id}/photos": {
          "get": {
            "parameters": [{"$ref": "#/components/parameters/PhotoOwner"}],
            "responses": {"200": {"description": "Photos", "content": {"image/png": {}}}}
          }
        }
      },
      "components": {
        "parameters": {"PhotoOwner": {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}},
        "schemas": {
          "Pet": {
            "type": "object",
            "required": ["id", "name"],
            "properties": {
              "id": {"type": "integer", "format": "int64"},
              "name": {"type": "string"},
              "tag": {"type": "string", "nullable": true},
              "weight": {"type": "number", "minimum": 0, "exclusiveMinimum": true},
              "owner": {"$ref": "#/components/schemas/Owner", "nullable": true}
            }
          },
          "Owner": {"type": "object", "required": ["email"], "properties": {"email": {"type": "string", "format": "email"}}},
          "Problem": {"type": "object", "required": ["title"], "properties": {"title": {"type": "string"}, "status": {"type": "integer"}}}
        },
        "responses": {
          "Problem": {"description": "Problem",
                      "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        }
      }
    }"##;

    const PETS_YAML: &str = r##"
openapi: 3.0.3
info:
  title: Pets
  version: 1.2.0
servers:
  - url: https://{region}.pets.example/v1
    variables:
      region:
        default: eu
paths:
  /pets:
    get:
      operationId: listPets
      parameters:
        - name: limit
          in: query
          required: false
          schema:
            type: integer
            maximum: 100
      responses:
        200:
          description: A page of pets
          content:
            application/json:
              schema:
                type: array
                items:
                  $ref: '#/components/schemas/Pet'
        default:
          $ref: '#/components/responses/Problem'
    post:
      operationId: createPet
      responses:
        201:
          description: Created
  /pets/{petId}:
    parameters:
      - name: petId
        in: path
        required: true
        example: 42
        schema:
          type: integer
    get:
      operationId: showPetById
      responses:
        200:
          description: A pet
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Pet'
        4XX:
          $ref: '#/components/responses/Problem'
  /pets/{id}/photos:
    get:
      parameters:
        - $ref: '#/components/parameters/PhotoOwner'
      responses:
        200:
          description: Photos
          content:
            image/png: {}
components:
  parameters:
    PhotoOwner:
      name: id
      in: path
      required: true
      schema:
        type: string
  schemas:
    Pet:
      type: object
      required: [id, name]
      properties:
        id: {type: integer, format: int64}
        name: {type: string}
        tag: {type: string, nullable: true}
        weight: {type: number, minimum: 0, exclusiveMinimum: true}
        owner: {$ref: '#/components/schemas/Owner', nullable: true}
    Owner:
      type: object
      required: [email]
      properties:
        email: {type: string, format: email}
    Problem:
      type: object
      required: [title]
      properties:
        title: {type: string}
        status: {type: integer}
  responses:
    Problem:
      description: Problem
      content:
        application/problem+json:
          schema:
            $ref: '#/components/schemas/Problem'
"##;

    const INVENTORY_31: &str = r##"{
      "openapi": "3.1.0",
      "info": {"title": "Inventory", "version": "2"},
      "paths": {
        "/items": {"get": {"operationId": "listItems", "responses": {"200": {"description": "Items",
          "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}}}}}}}},
        "/items/{id}": {"get": {"operationId": "getItem",
          "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "examples": [7]}}],
          "responses": {"2XX": {"description": "Item",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Item"}}}}}}}
      },
      "components": {"schemas": {"Item": {
        "type": "object",
        "required": ["id", "name"],
        "properties": {
          "id": {"type": "integer"},
          "name": {"type": "string"},
          "note": {"type": ["string", "null"]},
          "price": {"type": "number", "exclusiveMinimum": 0},
          "contact": {"type": "string", "format": "email"}
        }
      }}}
    }"##;

    fn validator(spec: &Spec, id: &str) -> ResponseValidator {
        spec.validator(spec.position(id).expect(id)).expect("compiles")
    }

    fn pointers(violations: &[Violation]) -> Vec<&str> {
        violations.iter().map(|v| v.pointer.as_str()).collect()
    }

    #[test]
    fn pets_30_operations_and_plans() {
        let spec = Spec::parse(PETS_JSON.as_bytes()).unwrap();
        assert_eq!((spec.title.as_str(), spec.version.as_str(), spec.openapi.as_str()), ("Pets", "1.2.0", "3.0.3"));
        assert_eq!(spec.servers, ["https://eu.pets.example/v1"]);
        let ops: Vec<_> = spec.operations.iter().map(|o| (o.id.as_str(), o.method.as_str(), o.path.as_str())).collect();
        assert_eq!(
            ops,
            [
                ("listPets", "GET", "/pets"),
                ("createPet", "POST", "/pets"),
                ("get_pets_id_photos", "GET", "/pets/{id}/photos"),
                ("showPetById", "GET", "/pets/{petId}"),
            ]
        );
        let plans: Vec<_> = spec.operations.iter().map(|o| o.plan.clone()).collect();
        assert_eq!(
            plans,
            [
                Ok(Plan { path_and_query: "/pets".into(), headers: vec![] }),
                Err("method POST is not probed".into()),
                Err("required path parameter `id` has no example or default".into()),
                Ok(Plan { path_and_query: "/pets/42".into(), headers: vec![] }),
            ]
        );
    }

    #[test]
    fn pets_yaml_parses_to_the_same_operations() {
        let json = Spec::parse(PETS_JSON.as_bytes()).unwrap();
        let yaml = Spec::parse(PETS_YAML.as_bytes()).unwrap();
        assert_eq!(yaml.operations, json.operations);
        assert_eq!(
            (&yaml.title, &yaml.version, &yaml.openapi, &yaml.servers),
            (&json.title, &json.version, &json.openapi, &json.servers)
        );
        // Unquoted `200:` keys are numbers in YAML; they still name the status.
        let pet = validator(&yaml, "showPetById");
        assert!(pet.validate(200, Some("application/json"), br#"{"id": 1, "name": "Rex"}"#).is_empty());
        assert_eq!(pointers(&pet.validate(200, None, br#"{"id": "1", "name": "Rex"}"#)), ["/id"]);
    }

    #[test]
    fn openapi_31_types_refs_and_pointers() {
        let spec = Spec::parse(INVENTORY_31.as_bytes()).unwrap();
        assert_eq!(spec.operations[1].plan, Ok(Plan { path_and_query: "/items/7".into(), headers: vec![] }));
        let items = validator(&spec, "listItems");
        let good = br#"[{"id": 1, "name": "bolt", "note": null, "contact": "not an email"},
                        {"id": 2, "name": "nut", "note": "M6", "price": 0.1}]"#;
        assert_eq!(items.validate(200, Some("application/json; charset=utf-8"), good), []);

        let bad = br#"[{"id": 1, "name": 5}, {"id": 2}, {"id": 3, "name": "x", "note": 4, "price": 0}]"#;
        let (violations, total) = items.validate_counted(200, Some("application/json"), bad);
        let mut found = pointers(&violations);
        found.sort_unstable();
        assert_eq!(found, ["/0/name", "/1", "/2/note", "/2/price"]);
        assert_eq!(total, 4);
        assert!(violations.iter().all(|v| !v.message.is_empty()));
        let missing = violations.iter().find(|v| v.pointer == "/1").unwrap();
        assert!(missing.message.contains("name"), "{}", missing.message);
    }

    #[test]
    fn openapi_30_nullable_and_boolean_exclusive_minimum() {
        let spec = Spec::parse(PETS_JSON.as_bytes()).unwrap();
        let pet = validator(&spec, "showPetById");
        let ok = |body: &str| pet.validate(200, Some("application/json"), body.as_bytes());
        assert_eq!(ok(r#"{"id": 1, "name": "Rex", "tag": null, "owner": null, "weight": 0.5}"#), []);
        assert_eq!(ok(r#"{"id": 1, "name": "Rex", "owner": {"email": "not checked: formats annotate"}}"#), []);
        assert_eq!(pointers(&ok(r#"{"id": 1, "name": "Rex", "tag": 5}"#)), ["/tag"]);
        assert_eq!(pointers(&ok(r#"{"id": 1, "name": "Rex", "weight": 0}"#)), ["/weight"]);
        assert_eq!(pointers(&ok(r#"{"id": 1, "name": "Rex", "owner": {}}"#)), ["/owner"]);
        assert_eq!(pointers(&ok(r#"{"id": 1, "name": null}"#)), ["/name"]);
    }

    #[test]
    fn response_for_status_exact_range_default_or_undocumented() {
        let spec = Spec::parse(PETS_JSON.as_bytes()).unwrap();
        let list = validator(&spec, "listPets");
        assert_eq!(list.validate(200, Some("application/json"), b"[]"), []);
        assert_eq!(pointers(&list.validate(200, Some("application/json"), br#"[{"id": 1}]"#)), ["/0"]);
        // 500 falls to `default`, a $ref to a problem+json response.
        assert_eq!(list.validate(500, Some("application/problem+json"), br#"{"title": "boom"}"#), []);
        assert_eq!(pointers(&list.validate(500, Some("application/problem+json"), b"{}")), [""]);

        let pet = validator(&spec, "showPetById");
        assert_eq!(pet.validate(404, Some("application/problem+json"), br#"{"title": "no such pet"}"#), []);
        assert_eq!(pointers(&pet.validate(404, None, br#"{"title": 404}"#)), ["/title"]);
        assert_eq!(
            pet.validate(503, Some("text/html"), b"<h1>down</h1>"),
            [Violation { pointer: String::new(), message: "status 503 is not documented for this operation".into() }]
        );

        let range = validator(&Spec::parse(INVENTORY_31.as_bytes()).unwrap(), "getItem");
        assert_eq!(pointers(&range.validate(202, Some("application/json"), br#"{"id": "7", "name": "x"}"#)), ["/id"]);
        assert_eq!(range.validate(404, None, b"").len(), 1);

        let photos = validator(&spec, "get_pets_id_photos");
        assert_eq!(photos.validate(200, Some("image/png"), b"\x89PNG"), [], "no JSON schema, no validation");
        assert_eq!(photos.validate(500, None, b"").len(), 1);

        let html = list.validate(200, Some("text/html"), b"<html>oops</html>");
        eprintln!("{:?}", list.validate(500, Some("application/problem+json"), b"{}"));
        eprintln!("{:?}", pet.validate(200, None, br#"{"id": 1, "name": "Rex", "owner": {}, "tag": 5, "weight": 0}"#));
        eprintln!("{html:?}");
        assert_eq!(pointers(&html), [""]);
        assert!(html[0].message.starts_with("body is not JSON: "), "{}", html[0].message);

        let undocumented = br#"{"openapi": "3.0.0", "info": {"title": "t", "version": "1"},
            "paths": {"/x": {"get": {"responses": {}}}}}"#;
        let spec = Spec::parse(undocumented).unwrap();
        assert_eq!(spec.validator(0).unwrap().validate(500, None, b"not json"), []);
        assert_eq!(spec.validator(1).unwrap_err(), SpecError::NoSuchOperation(1));
    }

    #[test]
    fn violations_are_capped_and_counted() {
        let spec = Spec::parse(INVENTORY_31.as_bytes()).unwrap();
        let items = validator(&spec, "listItems");
        let body = format!("[{}]", vec![r#"{"id": "x"}"#; 40].join(","));
        let (violations, total) = items.validate_counted(200, None, body.as_bytes());
        assert_eq!((violations.len(), total), (MAX_VIOLATIONS, 80));
        assert_eq!(items.validate(200, None, body.as_bytes()).len(), MAX_VIOLATIONS);
    }

    #[test]
    fn secured_operations_are_planned_only_when_authenticated() {
        let spec = br#"{
          "openapi": "3.0.1",
          "info": {"title": "Accounts", "version": "1"},
          "security": [{"apiKey": []}],
          "paths": {
            "/me": {"get": {"responses": {"200": {"description": "me"}}}},
            "/status": {"get": {"security": [], "responses": {"200": {"description": "up"}}}},
            "/health": {"get": {"security": [{}], "responses": {"200": {"description": "up"}}}},
            "/keys": {"get": {"security": [{"oauth": ["read"]}], "responses": {"200": {"description": "keys"}}}}
          },
          "components": {"securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-Key"}}}
        }"#;
        let plans = |authenticated| {
            let spec = Spec::parse_with(spec, PlanOptions { authenticated }).unwrap();
            spec.operations
                .iter()
                .map(|o| (o.path.clone(), o.plan.clone().map(|p| p.path_and_query)))
                .collect::<Vec<_>>()
        };
        let anonymous = plans(false);
        assert_eq!(
            anonymous,
            [
                ("/health".to_owned(), Ok("/health".to_owned())),
                ("/keys".to_owned(), Err("requires authentication".to_owned())),
                ("/me".to_owned(), Err("requires authentication".to_owned())),
                ("/status".to_owned(), Ok("/status".to_owned())),
            ]
        );
        assert!(plans(true).iter().all(|(path, plan)| plan.as_deref() == Ok(path.as_str())));
    }

    #[test]
    fn plans_render_query_header_cookie_and_path_parameters() {
        let spec = br#"{
          "openapi": "3.1.0",
          "info": {"title": "Search", "version": "1"},
          "paths": {
            "/files/{name}/search": {
              "parameters": [
                {"name": "name", "in": "path", "required": true, "schema": {"type": "string", "default": "a b/c"}},
                {"name": "q", "in": "query", "required": true, "example": "old"}
              ],
              "get": {
                "parameters": [
                  {"name": "q", "in": "query", "required": true, "examples": {"fox": {"value": "red fox"}}},
                  {"name": "tags", "in": "query", "required": true, "explode": false, "example": ["a", "b&c"]},
                  {"name": "ids", "in": "query", "required": true, "schema": {"type": "array", "example": [1, 2]}},
                  {"name": "page", "in": "query", "schema": {"default": 1}},
                  {"name": "X-Tenant", "in": "header", "required": true, "example": "acme"},
                  {"name": "Accept", "in": "header", "required": true, "example": "text/plain"},
                  {"name": "session", "in": "cookie", "required": true, "example": "s=1"},
                  {"name": "lang", "in": "cookie", "required": true, "example": "en"}
                ],
                "responses": {"200": {"description": "hits"}}
              }
            },
            "/deep": {"get": {"parameters": [{"name": "f", "in": "query", "required": true, "style": "deepObject",
              "example": {"a": 1}}], "responses": {"200": {"description": "x"}}}},
            "/pipes": {"get": {"parameters": [{"name": "f", "in": "query", "required": true, "style": "pipeDelimited",
              "example": [1, 2]}], "responses": {"200": {"description": "x"}}}},
            "/undeclared/{x}": {"get": {"responses": {"200": {"description": "x"}}}},
            "/header/{v}": {"get": {"parameters": [{"name": "v", "in": "path", "required": true, "style": "matrix",
              "example": 5}, {"name": "X-Bad", "in": "header", "required": true, "example": "a\r\nb"}],
              "responses": {"200": {"description": "x"}}}}
          }
        }"#;
        let spec = Spec::parse(spec).unwrap();
        let plan = |path: &str| spec.operations.iter().find(|o| o.path == path).unwrap().plan.clone();
        assert_eq!(
            plan("/files/{name}/search"),
            Ok(Plan {
                path_and_query: "/files/a%20b%2Fc/search?q=red%20fox&tags=a,b%26c&ids=1&ids=2".into(),
                headers: vec![("X-Tenant".into(), "acme".into()), ("Cookie".into(), "session=s%3D1; lang=en".into())],
            })
        );
        assert_eq!(plan("/deep"), Err("query parameter `f`: an object value is not supported".into()));
        assert_eq!(
            plan("/pipes"),
            Err("query parameter `f`: style pipeDelimited with an array value is not supported".into())
        );
        assert_eq!(plan("/undeclared/{x}"), Err("path parameter `x` is not declared".into()));
        assert_eq!(
            plan("/header/{v}"),
            Err("header parameter `X-Bad`: a header name or value with control or non-ASCII characters is not supported".into())
        );
    }

    #[test]
    fn ids_are_sanitized_unique_and_capped() {
        let long = "x".repeat(150);
        let spec = format!(
            r#"{{"openapi": "3.0.0", "info": {{"title": "t", "version": "1"}}, "paths": {{
              "/a": {{"get": {{"operationId": "list pets/v2!", "responses": {{}}}}, "put": {{"operationId": "dup"}},
                      "post": {{"operationId": "dup"}}, "delete": {{"operationId": "{long}"}}, "patch": {{"operationId": "{long}"}}}},
              "/": {{"get": {{}}}},
              "/v1/users/{{user-id}}/keys.json": {{"head": {{}}}}
            }}}}"#
        );
        let spec = Spec::parse(spec.as_bytes()).unwrap();
        let ids: Vec<_> = spec.operations.iter().map(|o| o.id.as_str()).collect();
        let capped = "x".repeat(100);
        let capped_2 = format!("{}_2", "x".repeat(98));
        assert_eq!(
            ids,
            ["get_root", "list_pets_v2_", "dup", "dup_2", &capped, &capped_2, "head_v1_users_user_id_keys_json"]
        );
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        let err = |bytes: &[u8]| Spec::parse(bytes).unwrap_err();
        assert!(
            matches!(err(br#"{"openapi": "3.0.0", "paths": "#), SpecError::Syntax(m) if m.starts_with("invalid JSON"))
        );
        assert!(matches!(err(b"openapi: [3.0\npaths: {"), SpecError::Syntax(m) if m.starts_with("invalid YAML")));
        assert!(matches!(err(b"\xff\xfe\x00garbage\x00"), SpecError::Syntax(_)));
        let swagger = err(br#"{"swagger": "2.0", "info": {"title": "old", "version": "1"}, "paths": {}}"#);
        assert!(swagger.to_string().contains("2.0"), "{swagger}");
        assert_eq!(err(b"swagger: 2.0\npaths: {}\n"), swagger);
        assert!(matches!(err(br#"{"openapi": "4.0.0", "paths": {}}"#), SpecError::UnsupportedVersion { .. }));
        assert_eq!(err(b""), SpecError::Empty);
        assert_eq!(err(b" \n\t "), SpecError::Empty);
        for b in [
            &br#"{"openapi": "3.0.0", "paths": "#[..],
            b"openapi: [3.0\npaths: {",
            b"\xff\xfe\x00garbage\x00",
            b"swagger: 2.0\npaths: {}\n",
            b"<html><body>Not Found</body></html>",
        ] {
            eprintln!("ERR {}", err(b));
        }
        assert!(
            matches!(err(b"<html><body>Not Found</body></html>"), SpecError::NotOpenApi(m) if m.contains("a string"))
        );
        assert!(matches!(err(b"[1, 2]"), SpecError::NotOpenApi(_)));
        assert!(matches!(err(br#"{"info": {}}"#), SpecError::NotOpenApi(_)));
        assert_eq!(err(br#"{"openapi": "3.1.0", "info": {"title": "t", "version": "1"}}"#), SpecError::MissingPaths);

        let mut huge = br#"{"openapi": "3.0.0", "paths": {}, "x-pad": ""#.to_vec();
        huge.resize(9 << 20, b' ');
        assert_eq!(err(&huge), SpecError::TooLarge { size: 9 << 20, limit: MAX_SPEC_BYTES });

        let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(err(deep_json.as_bytes()), SpecError::Syntax(_)));
        let deep_yaml = format!("a:\n{}", (1..200).map(|i| format!("{}b:\n", " ".repeat(i))).collect::<String>());
        assert!(matches!(err(deep_yaml.as_bytes()), SpecError::Syntax(_)));
        let deep_flow = format!("{}1", "- ".repeat(100_000));
        assert!(matches!(err(deep_flow.as_bytes()), SpecError::Syntax(_)));
    }

    #[test]
    fn yaml_aliases_cannot_blow_up() {
        let mut laughs = String::from("openapi: 3.0.0\nl0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            laughs += &format!("l{i}: &l{i} [{}]\n", vec![format!("*l{}", i - 1); 10].join(", "));
        }
        let err = Spec::parse(laughs.as_bytes()).unwrap_err();
        eprintln!("laughs: {err}");
        assert!(matches!(err, SpecError::TooManyValues { .. } | SpecError::Syntax(_)), "{err}");
    }

    #[test]
    fn hostile_specs_are_errors_not_panics() {
        let spec = format!(
            r##"{{"openapi": "3.0.0", "info": {{"title": "t", "version": "1"}}, "paths": {{
              "/cycle": {{"get": {{"responses": {{"200": {{"content": {{"application/json": {{"schema": {{"$ref": "#/components/schemas/A"}}}}}}}}}}}}}},
              "/self": {{"get": {{"responses": {{"200": {{"content": {{"application/json": {{"schema": {{"$ref": "#/components/schemas/Self"}}}}}}}}}}}}}},
              "/tree": {{"get": {{"responses": {{"200": {{"content": {{"application/json": {{"schema": {{"$ref": "#/components/schemas/Tree"}}}}}}}}}}}}}},
              "/loop": {{"get": {{"responses": {{"200": {{"$ref": "#/components/responses/R1"}}}}}}}},
              "/external": {{"get": {{"responses": {{"200": {{"content": {{"application/json": {{"schema": {{"$ref": "https://example.com/s.json"}}}}}}}}}}}}}},
              "/relative": {{"get": {{"responses": {{"200": {{"content": {{"*/*": {{"schema": {{"$ref": "other.yaml#/X"}}}}}}}}}}}}}},
              "/badtype": {{"get": {{"responses": {{"200": {{"content": {{"application/json": {{"schema": {{"type": 12}}}}}}}}}}}}}},
              "/dangling": {{"get": {{"parameters": [{{"$ref": "#/nope/%ZZ"}}], "responses": {{"200": {{"$ref": "#/x"}}}}}}}},
              "/wrong": {{"get": "nope", "put": {{"parameters": 5, "responses": []}}, "parameters": {{"a": 1}}}},
              "/odd": {{"get": {{"parameters": [5, {{"in": "path"}}, {{"name": "q", "in": "query", "required": true, "example": [[1]]}}]}}}},
              "/{{": {{"get": {{}}}}
            }},
            "components": {{
              "responses": {{"R1": {{"$ref": "#/components/responses/R2"}}, "R2": {{"$ref": "#/components/responses/R1"}}}},
              "schemas": {{
                "A": {{"$ref": "#/components/schemas/B"}}, "B": {{"$ref": "#/components/schemas/A"}},
                "Self": {{"$ref": "#/components/schemas/Self", "nullable": true}},
                "Tree": {{"type": "object", "properties": {{"children": {{"type": "array", "items": {{"$ref": "#/components/schemas/Tree"}}}}}}}},
                "Big": {{"enum": [{}]}}
              }}
            }}}}"##,
            (0..50_000).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
        );
        let spec = Spec::parse(spec.as_bytes()).unwrap();
        let mut compiled = 0;
        for (i, op) in spec.operations.iter().enumerate() {
            if let Ok(validator) = spec.validator(i) {
                compiled += 1;
                for body in [&b"{}"[..], b"[]", b"1", b"null", br#"{"children": [{"children": [{"children": 1}]}]}"#] {
                    validator.validate(200, Some("application/json"), body);
                }
            } else {
                assert!(
                    ["/loop", "/external", "/relative", "/badtype", "/dangling"].contains(&op.path.as_str()),
                    "{}",
                    op.path
                );
            }
        }
        assert!(compiled >= 5, "{compiled}");
        let tree = validator(&spec, "get_tree");
        assert_eq!(
            pointers(&tree.validate(200, None, br#"{"children": [{"children": [{"children": 1}]}]}"#)),
            ["/children/0/children/0/children"]
        );
    }

    /// Validation recurses once per in-place schema at each level of the body: a long chain of
    /// them is refused, a moderate one with a very deep body is not validated; neither overflows.
    #[test]
    fn long_schema_chains_and_deep_bodies_stay_within_the_stack() {
        let spec = |n: usize| {
            let hops: String = (0..n)
                .map(|i| {
                    format!(
                        r##""S{i}": {{"allOf": [{{"$ref": "#/components/schemas/S{}"}}, {{"type": "object"}}]}},"##,
                        i + 1
                    )
                })
                .collect();
            let spec = format!(
                r##"{{"openapi": "3.1.0", "info": {{"title": "t", "version": "1"}}, "paths": {{
                  "/deep": {{"get": {{"responses": {{"200": {{"content": {{"application/json": {{"schema": {{"$ref": "#/components/schemas/S0"}}}}}}}}}}}}}},
                  "/flat": {{"get": {{"responses": {{"204": {{"description": "nothing"}}}}}}}}}},
                  "components": {{"schemas": {{{hops}
                    "S{n}": {{"type": "object", "properties": {{"c": {{"$ref": "#/components/schemas/S0"}}}}}}}}}}}}"##
            );
            Spec::parse(spec.as_bytes()).unwrap()
        };
        let long = spec(20_000);
        let err = long.validator(0).unwrap_err().to_string();
        assert!(err.contains("chains 40002 schemas in place"), "{err}");
        assert!(long.validator(1).is_ok(), "an operation without JSON schemas still gets a validator");

        let moderate = validator(&spec(30), "get_deep");
        let nested = |depth: usize| format!("{}{{}}{}", r#"{"c":"#.repeat(depth), "}".repeat(depth));
        assert_eq!(moderate.validate(200, None, nested(5).as_bytes()), []);
        // 30 hops chain 62 schemas: 3000 / (62 + 2) - 1 = 45 levels are validated, on the 2 MiB
        // stack of a test thread.
        assert_eq!(moderate.validate(200, None, nested(44).as_bytes()), []);
        let deep = moderate.validate(200, None, nested(45).as_bytes());
        assert_eq!(pointers(&deep), [""]);
        assert_eq!(deep[0].message, "not validated: the body nests 46 levels deep, this spec's schemas 45 at most");
    }

    #[test]
    fn hostile_sizes_stay_bounded() {
        let dups: String = (0..20_000).map(|i| format!(r#""/d{i}": {{"get": {{"operationId": "dup"}}}},"#)).collect();
        let params = vec![r#"{"name": "p", "in": "query"}"#; 300].join(",");
        let spec = format!(
            r#"{{"openapi": "3.0.0", "info": {{"title": "t", "version": "1"}},
              "servers": [{{"url": "{}", "variables": {{"v": {{"default": "{}"}}}}}}],
              "paths": {{{dups}
                "/many": {{"get": {{"parameters": [{params}]}}}},
                "/{}": {{"get": {{"parameters": [{{"name": "a", "in": "path", "required": true, "example": "{}"}}]}}}}
              }}}}"#,
            "{v}".repeat(100_000),
            "w".repeat(1000),
            "{a}".repeat(5000),
            "x".repeat(8),
        );
        let spec = Spec::parse(spec.as_bytes()).unwrap();
        assert!(spec.servers[0].len() <= 2048 + '…'.len_utf8(), "{}", spec.servers[0].len());
        assert_eq!(spec.operations.len(), 20_002);
        let ids: HashSet<_> = spec.operations.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids.len(), 20_002);
        assert!(ids.contains("dup_20000"));
        let plan = |path: &str| spec.operations.iter().find(|o| o.path == path).unwrap().plan.clone();
        assert_eq!(plan("/many"), Err("more than 256 parameters".into()));
        assert_eq!(
            plan(&format!("/{}", "{a}".repeat(5000))),
            Err("the request target would be longer than 8192 bytes".into())
        );
    }

    #[test]
    fn truncated_and_mutated_specs_never_panic() {
        for text in [PETS_JSON, PETS_YAML, INVENTORY_31] {
            let bytes = text.as_bytes();
            let exercise = |bytes: &[u8]| {
                if let Ok(spec) = Spec::parse(bytes) {
                    for i in 0..spec.operations.len() {
                        if let Ok(v) = spec.validator(i) {
                            v.validate(200, Some("application/json"), br#"[{"id": 1, "name": "x"}]"#);
                            v.validate(404, None, b"{");
                        }
                    }
                }
            };
            for end in (0..bytes.len()).step_by(7) {
                exercise(&bytes[..end]);
            }
            let mut state = 0x9E37_79B9_7F4A_7C15u64;
            for _ in 0..200 {
                let mut mutated = bytes.to_vec();
                for _ in 0..3 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let at = (state % mutated.len() as u64) as usize;
                    mutated[at] = b"{}[]:,\"'#&*!|>-\n 0aZ$~/%"[(state >> 32) as usize % 24];
                }
                exercise(&mutated);
            }
        }
    }

    #[test]
    fn validators_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ResponseValidator>();
        assert_send_sync::<Spec>();
    }
}

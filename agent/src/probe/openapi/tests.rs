//! Tests of the OpenAPI module: realistic specs inline, hostile ones generated.

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
        spec.operations.iter().map(|o| (o.path.clone(), o.plan.clone().map(|p| p.path_and_query))).collect::<Vec<_>>()
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
        Err("header parameter `X-Bad`: a header name or value with control or non-ASCII characters is not supported"
            .into())
    );
}

/// As FastAPI 0.115 with pydantic 2 writes it for `day: Annotated[Weekday, Path(examples=["wed"])]`
/// and its neighbours: an enum parameter is a `$ref` with sibling keywords.
const FASTAPI_31: &str = r##"{
  "openapi": "3.1.0",
  "info": {"title": "Rota", "version": "0.1.0"},
  "paths": {
    "/schedule/{day}": {"get": {
      "summary": "Schedule", "operationId": "schedule_schedule__day__get",
      "parameters": [{"name": "day", "in": "path", "required": true,
        "schema": {"$ref": "#/components/schemas/Weekday", "examples": ["wed"]}}],
      "responses": {"200": {"description": "Successful Response", "content": {"application/json": {"schema": {}}}},
        "422": {"description": "Validation Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}}}}},
    "/slots": {"get": {
      "summary": "Slots", "operationId": "slots_slots_get",
      "parameters": [
        {"name": "day", "in": "query", "required": true, "schema": {"$ref": "#/components/schemas/Weekday"}},
        {"name": "shift", "in": "query", "required": true, "schema": {"anyOf": [{"$ref": "#/components/schemas/Shift"}, {"type": "null"}], "title": "Shift"}},
        {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "default": 10, "title": "Limit"}}],
      "responses": {"200": {"description": "Successful Response", "content": {"application/json": {"schema": {}}}}}}},
    "/staff/{staff_id}": {"get": {
      "summary": "Read Staff", "operationId": "read_staff_staff__staff_id__get",
      "parameters": [{"name": "staff_id", "in": "path", "required": true, "schema": {"type": "integer", "title": "Staff Id"}}],
      "responses": {"200": {"description": "Successful Response", "content": {"application/json": {"schema": {}}}}}}}
  },
  "components": {"schemas": {
    "Weekday": {"type": "string", "enum": ["mon", "tue", "wed", "thu", "fri"], "title": "Weekday"},
    "Shift": {"type": "string", "enum": ["early", "late"], "title": "Shift", "default": "late"},
    "HTTPValidationError": {"properties": {"detail": {"items": {"$ref": "#/components/schemas/ValidationError"}, "type": "array", "title": "Detail"}}, "type": "object", "title": "HTTPValidationError"},
    "ValidationError": {"properties": {"loc": {"items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}, "type": "array", "title": "Location"},
      "msg": {"type": "string", "title": "Message"}, "type": {"type": "string", "title": "Error Type"}},
      "type": "object", "required": ["loc", "msg", "type"], "title": "ValidationError"}
  }}
}"##;

#[test]
fn openapi_31_ref_siblings_and_enums_give_examples() {
    let spec = Spec::parse(FASTAPI_31.as_bytes()).unwrap();
    let plan = |id: &str| spec.operations[spec.position(id).unwrap()].plan.clone().map(|p| p.path_and_query);
    // The sibling `examples` wins over the referenced enum's first value.
    assert_eq!(plan("schedule_schedule__day__get"), Ok("/schedule/wed".into()));
    // Without a sibling, the referenced schema's enum; through `anyOf`, the member's default.
    assert_eq!(plan("slots_slots_get"), Ok("/slots?day=mon&shift=late".into()));
    assert_eq!(
        plan("read_staff_staff__staff_id__get"),
        Err("required path parameter `staff_id` has no example or default".into())
    );
}

#[test]
fn openapi_30_ignores_ref_siblings() {
    let spec = FASTAPI_31.replace("\"openapi\": \"3.1.0\"", "\"openapi\": \"3.0.3\"");
    let spec = Spec::parse(spec.as_bytes()).unwrap();
    let plan = |id: &str| spec.operations[spec.position(id).unwrap()].plan.clone().map(|p| p.path_and_query);
    // 3.0: a `$ref` replaces its object, so `examples` beside it is not read.
    assert_eq!(plan("schedule_schedule__day__get"), Ok("/schedule/mon".into()));
}

#[test]
fn branching_schemas_without_an_example_end_quickly() {
    // Each level branches eight ways into itself: unbounded, the search would never end.
    let members: Vec<String> = (0..8).map(|_| r##"{"$ref": "#/components/schemas/T"}"##.to_owned()).collect();
    let spec = format!(
        r##"{{"openapi": "3.1.0", "info": {{"title": "t", "version": "1"}},
          "paths": {{"/t": {{"get": {{"parameters": [{{"name": "t", "in": "query", "required": true,
            "schema": {{"$ref": "#/components/schemas/T"}}}}], "responses": {{}}}}}}}},
          "components": {{"schemas": {{"T": {{"anyOf": [{}], "allOf": [{}]}}}}}}}}"##,
        members.join(","),
        members.join(",")
    );
    let started = std::time::Instant::now();
    let spec = Spec::parse(spec.as_bytes()).unwrap();
    assert_eq!(spec.operations[0].plan, Err("required query parameter `t` has no example or default".into()));
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
}

#[test]
fn callable_gets_are_the_gets_the_credentials_allow() {
    let spec = br#"{
          "openapi": "3.1.0",
          "info": {"title": "Accounts", "version": "1"},
          "paths": {
            "/me": {"get": {"security": [{"key": []}], "responses": {"200": {"description": "me"}}},
                    "put": {"responses": {"200": {"description": "saved"}}}},
            "/status": {"get": {"responses": {"200": {"description": "up"}}}}
          }
        }"#;
    let callable = |authenticated| {
        let spec = Spec::parse_with(spec, PlanOptions { authenticated }).unwrap();
        spec.operations.iter().map(|o| (o.method.clone(), o.path.clone(), o.callable)).collect::<Vec<_>>()
    };
    let row = |m: &str, p: &str, c| (m.to_owned(), p.to_owned(), c);
    assert_eq!(callable(false), [row("GET", "/me", false), row("PUT", "/me", false), row("GET", "/status", true)]);
    assert_eq!(callable(true), [row("GET", "/me", true), row("PUT", "/me", false), row("GET", "/status", true)]);
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
    assert!(matches!(err(br#"{"openapi": "3.0.0", "paths": "#), SpecError::Syntax(m) if m.starts_with("invalid JSON")));
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
    assert!(matches!(err(b"<html><body>Not Found</body></html>"), SpecError::NotOpenApi(m) if m.contains("a string")));
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

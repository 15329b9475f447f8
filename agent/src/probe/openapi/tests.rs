//! Tests of the OpenAPI module: realistic specs inline, parsed and validated against; planning in
//! `plans.rs`, hostile specs (generated) in `hostile.rs`.

mod hostile;
mod plans;

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

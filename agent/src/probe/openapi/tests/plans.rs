//! Operations to probe plans: credentials, parameters, examples, ids.

use super::*;

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

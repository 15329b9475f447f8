//! Bad, hostile and mutated specs: clear errors, bounded sizes and stack, never a panic.

use super::*;

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

use super::*;

fn learned(schema: &str) -> Learned {
    schema_markings(Some(schema))
}

fn marked(schema: &str) -> Vec<Marking> {
    match learned(schema) {
        Learned::Marked(m) => m,
        other => panic!("{schema}: {other:?}"),
    }
}

fn invalid(schema: &str) -> &'static str {
    match learned(schema) {
        Learned::Invalid(why) => why,
        other => panic!("{schema}: {other:?}"),
    }
}

const SQL: &str = r#"{"type":"object","properties":{
    "region":{"type":"string","description":"The region","x-mcp-header":"Region"},
    "query":{"type":"string"}},"required":["region","query"]}"#;

#[test]
fn the_spec_example_marks_region() {
    assert_eq!(
        marked(SQL),
        vec![Marking {
            token: "Region".into(),
            path: vec!["region".into()],
            kind: ParamType::String,
        }]
    );
    assert_eq!(marked(SQL)[0].header(), "mcp-param-region");
    assert_eq!(marked(SQL)[0].display_header(), "Mcp-Param-Region");
}

#[test]
fn nested_properties_chains_are_valid_and_no_annotation_is_nothing() {
    let m = marked(
        r#"{"type":"object","properties":{"opts":{"type":"object","properties":{
            "tenant":{"type":"integer","x-mcp-header":"Tenant"},
            "dry":{"type":"boolean","x-mcp-header":"Dry-Run"}}}}}"#,
    );
    let mut got: Vec<(String, Vec<String>, ParamType)> =
        m.into_iter().map(|m| (m.token, m.path, m.kind)).collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "Dry-Run".into(),
                vec!["opts".into(), "dry".into()],
                ParamType::Boolean
            ),
            (
                "Tenant".into(),
                vec!["opts".into(), "tenant".into()],
                ParamType::Integer
            ),
        ]
    );
    assert_eq!(
        marked(r#"{"type":"object","properties":{"a":{"type":"string"}}}"#),
        vec![]
    );
    assert_eq!(schema_markings(None), Learned::Marked(vec![]));
    // The keyword spelled with escapes is the keyword.
    assert_eq!(
        marked(r#"{"properties":{"r":{"type":"string","x\u002dmcp-header":"R"}}}"#).len(),
        1
    );
    // Every character of it may be the escaped one, the first too (the one-pass prefilter
    // must not skip these).
    for spelled in [
        r"\u0078-mcp-header",
        r"x-mcp-heade\u0072",
        r"\u0078\u002d\u006dcp-header",
    ] {
        let schema = format!(r#"{{"properties":{{"r":{{"type":"string","{spelled}":"R"}}}}}}"#);
        assert_eq!(marked(&schema).len(), 1, "{spelled}");
    }
    // Instance data is never a schema position: an annotation-like default is data.
    assert_eq!(
        marked(
            r#"{"properties":{"r":{"type":"object","default":{"x-mcp-header":"R"},
            "enum":[{"x-mcp-header":"S"}],"const":{"x-mcp-header":"T"}}}}"#
        ),
        vec![]
    );
}

#[test]
fn annotations_off_a_pure_properties_chain_make_the_tool_invalid() {
    for schema in [
        // At the root.
        r#"{"type":"string","x-mcp-header":"R"}"#,
        // Through items, composition, conditionals, maps of schemas.
        r#"{"properties":{"a":{"type":"array","items":{"type":"string","x-mcp-header":"R"}}}}"#,
        r#"{"properties":{"a":{"type":"array","items":{"type":"object","properties":{"b":{"type":"string","x-mcp-header":"R"}}}}}}"#,
        r#"{"oneOf":[{"properties":{"a":{"type":"string","x-mcp-header":"R"}}}]}"#,
        r#"{"allOf":[{"type":"string","x-mcp-header":"R"}]}"#,
        r#"{"not":{"type":"string","x-mcp-header":"R"}}"#,
        r#"{"if":{"properties":{"a":{"type":"string","x-mcp-header":"R"}}}}"#,
        r#"{"$defs":{"r":{"type":"string","x-mcp-header":"R"}}}"#,
        r#"{"additionalProperties":{"type":"string","x-mcp-header":"R"}}"#,
        r#"{"patternProperties":{"^a":{"type":"string","x-mcp-header":"R"}}}"#,
        r#"{"properties":{"a":{"type":"object","prefixItems":[{"type":"string","x-mcp-header":"R"}]}}}"#,
    ] {
        assert!(invalid(schema).contains("chain of properties"), "{schema}");
    }
}

#[test]
fn wrong_types_names_and_duplicates_make_the_tool_invalid() {
    for (schema, why) in [
        (
            r#"{"properties":{"a":{"type":"number","x-mcp-header":"A"}}}"#,
            "type",
        ),
        (
            r#"{"properties":{"a":{"type":"object","x-mcp-header":"A"}}}"#,
            "type",
        ),
        (r#"{"properties":{"a":{"x-mcp-header":"A"}}}"#, "type"),
        (
            r#"{"properties":{"a":{"type":["string","null"],"x-mcp-header":"A"}}}"#,
            "type",
        ),
        (
            r#"{"properties":{"a":{"type":"string","x-mcp-header":""}}}"#,
            "token",
        ),
        (
            r#"{"properties":{"a":{"type":"string","x-mcp-header":"A B"}}}"#,
            "token",
        ),
        (
            r#"{"properties":{"a":{"type":"string","x-mcp-header":"A\r\nX: y"}}}"#,
            "token",
        ),
        (
            r#"{"properties":{"a":{"type":"string","x-mcp-header":"Région"}}}"#,
            "token",
        ),
        (
            r#"{"properties":{"a":{"type":"string","x-mcp-header":7}}}"#,
            "not a string",
        ),
        (
            r#"{"properties":{"a":{"type":"string","x-mcp-header":null}}}"#,
            "not a string",
        ),
        (
            r#"{"properties":{"a":{"type":"string","x-mcp-header":"Region"},
                             "b":{"type":"string","x-mcp-header":"REGION"}}}"#,
            "twice",
        ),
    ] {
        assert!(
            invalid(schema).contains(why),
            "{schema}: {}",
            invalid(schema)
        );
    }
}

#[test]
fn markings_over_the_bounds_are_not_kept() {
    let many: Vec<String> = (0..=MAX_MARKINGS)
        .map(|i| format!(r#""p{i}":{{"type":"string","x-mcp-header":"P{i}"}}"#))
        .collect();
    let schema = format!(r#"{{"properties":{{{}}}}}"#, many.join(","));
    assert_eq!(learned(&schema), Learned::Unkept);
    let long = format!(
        r#"{{"properties":{{"{}":{{"type":"string","x-mcp-header":"L"}}}}}}"#,
        "p".repeat(MAX_MARKING_BYTES)
    );
    assert_eq!(learned(&long), Learned::Unkept);
    // Not JSON (it came from a list response mcp-guard could frame but not parse): unkept.
    assert_eq!(learned(r#"{"x-mcp-header": }"#), Learned::Unkept);
}

#[test]
fn header_values_decode_only_from_safe_characters_and_canonical_base64() {
    assert_eq!(decode_value("us-west1").as_deref(), Some("us-west1"));
    assert_eq!(decode_value("a b\tc").as_deref(), Some("a b\tc"));
    // The specification's examples.
    assert_eq!(
        decode_value("=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(),
        Some("Hello, 世界")
    );
    assert_eq!(
        decode_value("=?base64?IHBhZGRlZCA=?=").as_deref(),
        Some(" padded ")
    );
    assert_eq!(
        decode_value("=?base64?bGluZTEKbGluZTI=?=").as_deref(),
        Some("line1\nline2")
    );
    assert_eq!(
        decode_value("=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=").as_deref(),
        Some("=?base64?literal?=")
    );
    // Not canonical, not base64, not UTF-8: no value.
    assert_eq!(decode_value("=?base64?SGk=?="), Some("Hi".into()));
    assert_eq!(decode_value("=?base64?SGl=?="), None);
    assert_eq!(decode_value("=?base64?SGk?="), None);
    assert_eq!(decode_value("=?base64?/w==?="), None);
    // Characters a field value may not carry (what a host reads from obs-text is U+FFFD).
    assert_eq!(decode_value("caf\u{e9}"), None);
    assert_eq!(decode_value("a\u{fffd}"), None);
    assert_eq!(decode_value("a\u{7f}"), None);
    assert_eq!(decode_value("a\nb"), None);
}

#[test]
fn numbers_render_as_decimal_integers_when_integral() {
    for (raw, int) in [
        ("42", Some("42")),
        ("-7", Some("-7")),
        ("42.0", Some("42")),
        ("4.2e1", Some("42")),
        ("420E-1", Some("42")),
        ("-0", Some("0")),
        ("-0.0e5", Some("0")),
        ("9007199254740993", Some("9007199254740993")),
        ("1e3", Some("1000")),
        ("4.25", None),
        ("1e-3", None),
        ("1e400", None),
        ("1e9999999", None),
    ] {
        assert_eq!(integral(raw).as_deref(), int, "{raw}");
    }
    assert_eq!(header_integer("42"), Some("42".into()));
    assert_eq!(header_integer("0042.000"), Some("42".into()));
    assert_eq!(header_integer("-0"), Some("0".into()));
    assert_eq!(header_integer("42.5"), None);
    assert_eq!(header_integer("4.2e1"), None);
    assert_eq!(header_integer("42."), None);
    assert_eq!(header_integer("+42"), None);
    assert_eq!(header_integer(" 42"), None);
}

fn hdr(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

fn m(token: &str, path: &[&str], kind: ParamType) -> Marking {
    Marking {
        token: token.into(),
        path: path.iter().map(|s| (*s).to_owned()).collect(),
        kind,
    }
}

#[test]
fn a_matching_header_verifies_and_the_body_value_is_what_is_tagged() {
    let region = [m("Region", &["region"], ParamType::String)];
    let args = r#"{"region":"us-west1","query":"SELECT 1"}"#;
    let ok = verify(
        &region,
        Some(args),
        &hdr(&[("mcp-param-region", "us-west1")]),
        true,
    );
    assert_eq!(ok, Ok(vec![("Region".into(), "us-west1".into())]));
    // Base64 form of a non-ASCII value; escapes in the body decoded.
    let ok = verify(
        &region,
        Some(r#"{"region":"Hello, \u4e16\u754c"}"#),
        &hdr(&[("mcp-param-region", "=?base64?SGVsbG8sIOS4lueVjA==?=")]),
        true,
    );
    assert_eq!(ok, Ok(vec![("Region".into(), "Hello, 世界".into())]));
    // Integers compare numerically; the tag is the canonical integer.
    let tenant = [m("Tenant", &["t"], ParamType::Integer)];
    for (body, header) in [
        ("42", "42"),
        ("42.0", "42"),
        ("42", "42.0"),
        ("4.2e1", "042"),
    ] {
        let args = format!(r#"{{"t":{body}}}"#);
        assert_eq!(
            verify(
                &tenant,
                Some(&args),
                &hdr(&[("mcp-param-tenant", header)]),
                true
            ),
            Ok(vec![("Tenant".into(), "42".into())]),
            "{body} {header}"
        );
    }
    // Booleans are true/false; nested paths are followed.
    let dry = [m("Dry", &["o", "dry"], ParamType::Boolean)];
    assert_eq!(
        verify(
            &dry,
            Some(r#"{"o":{"dry":false}}"#),
            &hdr(&[("mcp-param-dry", "false")]),
            true
        ),
        Ok(vec![("Dry".into(), "false".into())])
    );
    // Absent and null values need no header, and give no tag.
    assert_eq!(
        verify(&region, Some(r#"{"region":null}"#), &[], true),
        Ok(vec![])
    );
    assert_eq!(verify(&region, Some("{}"), &[], true), Ok(vec![]));
    assert_eq!(verify(&region, None, &[], true), Ok(vec![]));
    assert_eq!(verify(&dry, Some(r#"{"o":"x"}"#), &[], true), Ok(vec![]));
    // An object or array value has no header form: no header, no tag.
    assert_eq!(
        verify(&region, Some(r#"{"region":["a"]}"#), &[], true),
        Ok(vec![])
    );
    // Headers no marking names are not judged.
    assert_eq!(
        verify(&region, Some("{}"), &hdr(&[("mcp-param-other", "x")]), true),
        Ok(vec![])
    );
    // An older client sends no header: the body value is still what is tagged.
    assert_eq!(
        verify(&region, Some(args), &[], false),
        Ok(vec![("Region".into(), "us-west1".into())])
    );
}

#[test]
fn disagreeing_missing_extra_and_repeated_headers_are_mismatches() {
    let region = [m("Region", &["region"], ParamType::String)];
    let args = Some(r#"{"region":"us-west1"}"#);
    let why = |r: Result<Vec<Verified>, Mismatch>| r.map_err(|e| (e.header, e.why));
    let differs = why(verify(
        &region,
        args,
        &hdr(&[("mcp-param-region", "eu-west1")]),
        true,
    ));
    assert_eq!(
        differs.unwrap_err().0,
        "Mcp-Param-Region",
        "the header is named as the spec spells it"
    );
    for (args, headers, required, fragment) in [
        (args, vec![], true, "missing"),
        (
            args,
            hdr(&[("mcp-param-region", "US-WEST1")]),
            false,
            "does not match",
        ),
        (
            args,
            hdr(&[("mcp-param-region", " us-west1")]),
            true,
            "does not match",
        ),
        (
            Some("{}"),
            hdr(&[("mcp-param-region", "us-west1")]),
            true,
            "no value",
        ),
        (
            Some(r#"{"region":null}"#),
            hdr(&[("mcp-param-region", "null")]),
            false,
            "no value",
        ),
        (
            Some(r#"{"region":{"a":1}}"#),
            hdr(&[("mcp-param-region", "{\"a\":1}")]),
            true,
            "no value",
        ),
        (
            args,
            hdr(&[
                ("mcp-param-region", "us-west1"),
                ("mcp-param-region", "us-west1"),
            ]),
            true,
            "more than once",
        ),
        (
            args,
            hdr(&[("mcp-param-region", "=?base64?dXMtd2VzdDE?=")]),
            true,
            "malformed",
        ),
        (
            args,
            hdr(&[("mcp-param-region", "us-west1\u{fffd}")]),
            true,
            "malformed",
        ),
    ] {
        let err = verify(&region, args, &headers, required).unwrap_err();
        assert!(err.why.contains(fragment), "{headers:?}: {}", err.why);
        assert!(!err.why.contains("us-west1"), "never echoes a value");
    }
    // Integers: a non-integral header, or another number, differs; a string-typed property
    // compares as text (42.0 is not 42 there).
    let tenant = [m("Tenant", &["t"], ParamType::Integer)];
    for header in ["42.5", "43", "4.2e1", "forty-two"] {
        assert!(
            verify(
                &tenant,
                Some(r#"{"t":42}"#),
                &hdr(&[("mcp-param-tenant", header)]),
                true
            )
            .is_err(),
            "{header}"
        );
    }
    let text = [m("Code", &["c"], ParamType::String)];
    assert!(verify(
        &text,
        Some(r#"{"c":42.0}"#),
        &hdr(&[("mcp-param-code", "42")]),
        true
    )
    .is_err());
    assert!(verify(
        &text,
        Some(r#"{"c":42.0}"#),
        &hdr(&[("mcp-param-code", "42.0")]),
        true
    )
    .is_ok());
    // A boolean is not 1/0 or True.
    let dry = [m("Dry", &["d"], ParamType::Boolean)];
    for header in ["1", "True", "TRUE"] {
        assert!(verify(
            &dry,
            Some(r#"{"d":true}"#),
            &hdr(&[("mcp-param-dry", header)]),
            true
        )
        .is_err());
    }
}

#[test]
fn a_duplicated_argument_counts_by_its_last_value_as_servers_read_it() {
    let region = [m("Region", &["region"], ParamType::String)];
    let args = Some(r#"{"region":"us-west1","region":"eu-west1"}"#);
    assert!(verify(
        &region,
        args,
        &hdr(&[("mcp-param-region", "us-west1")]),
        true
    )
    .is_err());
    assert_eq!(
        verify(
            &region,
            args,
            &hdr(&[("mcp-param-region", "eu-west1")]),
            true
        ),
        Ok(vec![("Region".into(), "eu-west1".into())])
    );
}

#[test]
fn mutated_schemas_and_headers_never_panic_and_a_verified_header_always_agrees() {
    use crate::host::fake::Rng;
    let schemas = [
        SQL,
        r#"{"properties":{"o":{"type":"object","properties":{"t":{"type":"integer","x-mcp-header":"T"}}}}}"#,
        r#"{"properties":{"b":{"type":"boolean","x-mcp-header":"B"}},"oneOf":[{}]}"#,
    ];
    let arguments = [
        r#"{"region":"us-west1","o":{"t":42},"b":true}"#,
        r#"{"region":"=?base64?x?=","o":{"t":4.2e1},"b":false}"#,
        r#"{"region":" a\u00e9","o":{"t":-0},"b":null}"#,
    ];
    let values = [
        "us-west1",
        "42",
        "42.0",
        "042",
        "true",
        "false",
        "=?base64?dXMtd2VzdDE=?=",
        "",
        "=?base64??=",
        "=?base64?IGHDqQ==?=",
        " a\u{e9}",
        "-0",
        "1e3",
    ];
    let alphabet = br#"{}[]":,.-0123456789eEtrufalsnx-mcp-headerpropertiestypeinteger\ "#;
    let mut rng = Rng::new(68);
    let mut checked = 0;
    for round in 0..10_000 {
        // A schema with up to 3 bytes replaced: any outcome but a panic.
        let mut schema = schemas[round % schemas.len()].as_bytes().to_vec();
        for _ in 0..rng.below(4) {
            let at = rng.below(schema.len());
            schema[at] = alphabet[rng.below(alphabet.len())];
        }
        let Ok(schema) = String::from_utf8(schema) else {
            continue;
        };
        let Learned::Marked(markings) = schema_markings(Some(&schema)) else {
            continue;
        };
        let args = arguments[rng.below(arguments.len())];
        let mut headers: Vec<(String, String)> = Vec::new();
        for m in &markings {
            if rng.below(4) > 0 {
                headers.push((m.header(), values[rng.below(values.len())].to_owned()));
            }
        }
        let Ok(verified) = verify(&markings, Some(args), &headers, rng.below(2) == 0) else {
            continue;
        };
        // Whatever passed: each header sent for a marking decodes to the tagged value (or the
        // same integer).
        for (name, raw) in &headers {
            let Some(m) = markings.iter().find(|m| m.header() == *name) else {
                continue;
            };
            let (_, tagged) = verified
                .iter()
                .find(|(t, _)| *t == m.token)
                .expect("a verified header has a value");
            let decoded = decode_value(raw).expect("a verified header decodes");
            let same = decoded == *tagged
                || (m.kind == ParamType::Integer
                    && header_integer(&decoded).as_deref() == Some(tagged.as_str()));
            assert!(same, "{schema} {args} {name}: {raw:?} vs {tagged:?}");
            checked += 1;
        }
    }
    assert!(checked > 100, "{checked}");
}

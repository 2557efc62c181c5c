use super::*;
use serde_json::value::RawValue;

fn keep_echo(name: &str) -> bool {
    name == "echo" || name.starts_with("demo://")
}

const TOOLS: &str = r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"echo","inputSchema":{"type":"object"}},{"name":"delete_repo","annotations":{"destructiveHint":true}},{"title":"no name"},7],"nextCursor":"c2"}}"#;

#[test]
fn json_list_keeps_allowed_entries_verbatim_and_other_members() {
    let mut stats = Rewrite::default();
    let ids = [Id::Number("3".into())];
    let out = rewrite_document(TOOLS, ListKind::Tools, &ids, &keep_echo, &mut stats).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["result"]["tools"].as_array().unwrap().len(), 1);
    assert_eq!(v["result"]["tools"][0]["inputSchema"]["type"], "object");
    assert_eq!(v["result"]["nextCursor"], "c2");
    assert_eq!(
        (v["id"].clone(), v["jsonrpc"].clone()),
        (3.into(), "2.0".into())
    );
    assert_eq!((stats.kept, stats.removed), (1, 3));
    let destructive = ToolHints {
        read_only: None,
        destructive: Some(true),
    };
    assert_eq!(
        stats.tools_seen,
        vec![
            ("echo".into(), ToolHints::default()),
            ("delete_repo".into(), destructive)
        ]
    );
    // Another id, or "3" as a string, is not this request's response.
    let other = [Id::Str("3".into())];
    assert_eq!(
        rewrite_document(TOOLS, ListKind::Tools, &other, &keep_echo, &mut stats),
        None
    );
}

#[test]
fn batches_resources_and_prompts() {
    let mut stats = Rewrite::default();
    let ids = [Id::Number("1".into())];
    let batch = r#"[{"jsonrpc":"2.0","id":1,"result":{"resources":[{"uri":"demo://a","name":"a"},{"uri":"file:///etc/passwd","name":"p"}]}},{"jsonrpc":"2.0","method":"notifications/resources/list_changed"}]"#;
    let out = rewrite_document(batch, ListKind::Resources, &ids, &keep_echo, &mut stats).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["result"]["resources"].as_array().unwrap().len(), 1);
    assert_eq!(v[1]["method"], "notifications/resources/list_changed");
    let prompts =
        r#"{"jsonrpc":"2.0","id":1,"result":{"prompts":[{"name":"greet"},{"name":"echo"}]}}"#;
    let out = rewrite_document(prompts, ListKind::Prompts, &ids, &keep_echo, &mut stats).unwrap();
    assert!(out.contains("\"echo\"") && !out.contains("greet"));
}

#[test]
fn sse_events_are_rewritten_in_place_with_their_line_endings() {
    let body = format!(
        ": ping\r\n\r\nevent: message\r\nid: e1\r\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}}\r\n\r\nevent: message\r\nid: e2\r\ndata: {TOOLS}\r\n\r\n"
    );
    let mut stats = Rewrite::default();
    let ids = [Id::Number("3".into())];
    let out = rewrite_sse(
        body.as_bytes(),
        ListKind::Tools,
        &ids,
        &keep_echo,
        &mut stats,
    )
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with(": ping\r\n\r\nevent: message\r\nid: e1\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\r\n\r\nevent: message\r\nid: e2\r\ndata: {"));
    assert!(out.ends_with("}\r\n\r\n"), "{out:?}");
    assert!(!out.contains("delete_repo"));
    // A data value split over two lines (LF), and CR-only endings.
    let split = TOOLS.replacen(",\"nextCursor\"", "\ndata: ,\"nextCursor\"", 1);
    let body = format!("data: {split}\n\n");
    let out = rewrite_sse(
        body.as_bytes(),
        ListKind::Tools,
        &ids,
        &keep_echo,
        &mut stats,
    )
    .unwrap();
    assert!(!String::from_utf8_lossy(&out).contains("delete_repo"));
    let body = format!("id: 1\rdata: {TOOLS}\r\r");
    let out = rewrite_sse(
        body.as_bytes(),
        ListKind::Tools,
        &ids,
        &keep_echo,
        &mut stats,
    )
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.starts_with("id: 1\rdata: {") && out.ends_with("}\r\r") && !out.contains("delete_repo")
    );
    // Complete events end at the last blank line; a trailing CR waits for its LF.
    assert_eq!(complete_events(b"data: a\n\ndata: b"), 9);
    assert_eq!(complete_events(b"data: a\r\n\r\ndata: b\r\n\r"), 11);
    assert_eq!(complete_events(b"data: a\r\r"), 0);
    assert_eq!(complete_events(b"data: a\r\rid: 2"), 9);
    assert_eq!(complete_events(b"data: a\r\n"), 0);
    // Nothing to rewrite.
    assert_eq!(
        rewrite_sse(
            b": only a comment\n\n",
            ListKind::Tools,
            &ids,
            &keep_echo,
            &mut stats
        ),
        None
    );
}

/// The oracle: an independent rewrite written from the documented behaviour, sharing no code
/// with the curation under test. Each message and its `result` are read as serde_json maps
/// (last duplicate wins, members written in key order, raw values copied byte for byte); each
/// entry is decided from a `serde_json::Value` with the rules of a `{name, uri, annotations}`
/// reader that refuses a duplicated or mistyped member (an array entry is read positionally, as
/// serde reads a struct from a sequence).
fn reference<'a>(
    text: &'a str,
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Fn(&str) -> bool,
    stats: &mut Rewrite<'a>,
) -> Option<String> {
    if text.trim_start().starts_with('[') {
        let elements: Vec<&RawValue> = serde_json::from_str(text).ok()?;
        let mut changed = false;
        let mut out: Vec<String> = Vec::with_capacity(elements.len());
        for element in elements {
            match oracle_message(element.get(), kind, ids, keep, stats) {
                Some(new) => {
                    changed = true;
                    out.push(new);
                }
                None => out.push(element.get().to_owned()),
            }
        }
        changed.then(|| format!("[{}]", out.join(",")))
    } else {
        oracle_message(text, kind, ids, keep, stats)
    }
}

fn oracle_message(
    text: &str,
    kind: ListKind,
    ids: &[Id],
    keep: &dyn Fn(&str) -> bool,
    stats: &mut Rewrite<'_>,
) -> Option<String> {
    use std::collections::BTreeMap;
    let mut message: BTreeMap<String, Box<RawValue>> = serde_json::from_str(text).ok()?;
    let id = Id::from_raw(message.get("id")?.get())?;
    if !ids.contains(&id) {
        return None;
    }
    let mut result: BTreeMap<String, Box<RawValue>> =
        serde_json::from_str(message.get("result")?.get()).ok()?;
    let entries: Vec<&RawValue> = serde_json::from_str(result.get(kind.array())?.get()).ok()?;
    let mut kept: Vec<&str> = Vec::new();
    for entry in entries {
        let read = oracle_entry(entry.get());
        if let (ListKind::Tools, Some((Some(name), _, hints))) = (kind, &read) {
            stats.tools_seen.push((name.clone().into(), *hints));
        }
        let name = read.and_then(|(name, uri, _)| match kind {
            ListKind::Resources => uri,
            _ => name,
        });
        if name.as_deref().is_some_and(keep) {
            stats.kept += 1;
            kept.push(entry.get());
        } else {
            stats.removed += 1;
        }
    }
    let array = RawValue::from_string(format!("[{}]", kept.join(","))).ok()?;
    result.insert(kind.array().to_owned(), array);
    let private = |raw: &RawValue| {
        serde_json::from_str::<String>(raw.get()).ok().as_deref() == Some("private")
    };
    if result.get("cacheScope").is_some_and(|raw| !private(raw)) {
        result.insert(
            "cacheScope".to_owned(),
            RawValue::from_string("\"private\"".into()).ok()?,
        );
    }
    message.insert(
        "result".to_owned(),
        serde_json::value::to_raw_value(&result).ok()?,
    );
    serde_json::to_string(&message).ok()
}

/// The members of a JSON object in order, duplicates kept; `None` for anything else.
fn oracle_members(raw: &str) -> Option<Vec<(String, serde_json::Value)>> {
    use serde::de::{Deserializer, MapAccess, Visitor};
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<(String, serde_json::Value)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(member) = map.next_entry()? {
                out.push(member);
            }
            Ok(out)
        }
    }
    serde_json::Deserializer::from_str(raw)
        .deserialize_map(V)
        .ok()
}

/// The members `names` of an object's `members` (absent: `null`); `None` when one is there
/// twice (a reader of a struct with those fields refuses the duplicate).
fn oracle_pick(
    members: &[(String, serde_json::Value)],
    names: &[&str],
) -> Option<Vec<serde_json::Value>> {
    names
        .iter()
        .map(|name| {
            let mut found = members.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
            match (found.next(), found.next()) {
                (None, _) => Some(serde_json::Value::Null),
                (Some(one), None) => Some(one.clone()),
                (Some(_), Some(_)) => None,
            }
        })
        .collect()
}

/// The fields `names` of an entry whose text is `raw`: from an object by name
/// ([`oracle_pick`]), from an array by position (at most `names.len()` elements, as serde
/// reads a struct from a sequence); `None` for any other value.
fn oracle_fields(raw: &str, names: &[&str]) -> Option<Vec<serde_json::Value>> {
    use serde_json::Value;
    match serde_json::from_str::<Value>(raw).ok()? {
        Value::Object(_) => oracle_pick(&oracle_members(raw)?, names),
        Value::Array(a) if a.len() <= names.len() => Some(
            (0..names.len())
                .map(|i| a.get(i).cloned().unwrap_or(Value::Null))
                .collect(),
        ),
        _ => None,
    }
}

/// What the oracle reads of one list entry: its name, its URI and its tool hints; `None` when
/// the entry cannot be read (not an object or array, a duplicated or mistyped member).
#[allow(clippy::type_complexity)]
fn oracle_entry(raw: &str) -> Option<(Option<String>, Option<String>, ToolHints)> {
    use serde_json::Value;
    let fields = oracle_fields(raw, &["name", "uri", "annotations"])?;
    let string = |v: &Value| match v {
        Value::Null => Some(None),
        Value::String(s) => Some(Some(s.clone())),
        _ => None,
    };
    let boolean = |v: &Value| match v {
        Value::Null => Some(None),
        Value::Bool(b) => Some(Some(*b)),
        _ => None,
    };
    let name = string(fields.first()?)?;
    let uri = string(fields.get(1)?)?;
    let hints = match fields.get(2)? {
        Value::Null => ToolHints::default(),
        Value::Object(_) => {
            // The member's raw text, where its own duplicates can be seen.
            let text = oracle_raw_member(raw, "annotations")?;
            let h = oracle_fields(&text, &["readOnlyHint", "destructiveHint"])?;
            ToolHints {
                read_only: boolean(h.first()?)?,
                destructive: boolean(h.get(1)?)?,
            }
        }
        other => {
            let h = oracle_fields(&other.to_string(), &["readOnlyHint", "destructiveHint"])?;
            ToolHints {
                read_only: boolean(h.first()?)?,
                destructive: boolean(h.get(1)?)?,
            }
        }
    };
    Some((name, uri, hints))
}

/// The raw text of the (only) member `name` of the object `raw`.
fn oracle_raw_member(raw: &str, name: &str) -> Option<String> {
    let members: Vec<(String, Box<RawValue>)> = {
        use serde::de::{Deserializer, MapAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<(String, Box<RawValue>)>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(member) = map.next_entry()? {
                    out.push(member);
                }
                Ok(out)
            }
        }
        serde_json::Deserializer::from_str(raw)
            .deserialize_map(V)
            .ok()?
    };
    members
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.get().to_owned())
}

fn inputs() -> Vec<(String, ListKind)> {
    let bench = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/data/list_response.json"),
    )
    .unwrap();
    let mut v: Vec<(String, ListKind)> = vec![
        (TOOLS.to_owned(), ListKind::Tools),
        (bench, ListKind::Tools),
        (
            r#" { "result" : { "tools" : [ { "name" : "echo" } , { "name" : "x" } , ["echo"], ["echo", null, null, 1], "echo", null, {"name":null}, {"name":"ec\u0068o","annotations":null}, {"n\u0061me":"echo"}, {"name":"echo","name":"echo"}, {"name":"echo","annotations":{"readOnlyHint":true,"x":[1,{"a":"]"}]}}, {"name":"echo","annotations":{"readOnlyHint":"yes"}}, {"name":"echo","annotations":[true]}, {"name":"echo","uri":7}, {"name":"echo\"}]"} ] , "nextCursor" : "n" } , "id" : 3 , "jsonrpc" : "2.0" } "#.to_owned(),
            ListKind::Tools,
        ),
        (r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"echo"}],"tools":[{"name":"echo"},{"name":"y"}]}}"#.to_owned(), ListKind::Tools),
        (r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"y"}]},"result":{"tools":[{"name":"echo"},{"name":"y"}]}}"#.to_owned(), ListKind::Tools),
        (r#"{"jsonrpc":"2.0","id":3,"id":4,"result":{"tools":[{"name":"echo"},{"name":"y"}]}}"#.to_owned(), ListKind::Tools),
        (r#"{"jsonrpc":"2.0","i\u0064":3,"r\u0065sult":{"t\u006fols":[{"name":"echo"},{"name":"y"}],"\n":1}}"#.to_owned(), ListKind::Tools),
        (r#"{"jsonrpc":"2.0","id":"3","result":{"tools":[{"name":"echo"}]}}"#.to_owned(), ListKind::Tools),
        (r#"{"jsonrpc":"2.0","id":3,"result":{"tools":{"name":"echo"}}}"#.to_owned(), ListKind::Tools),
        (r#"{"jsonrpc":"2.0","id":3,"result":[{"tools":[]}]}"#.to_owned(), ListKind::Tools),
        (r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[]}}"#.to_owned(), ListKind::Tools),
        (r#"{"jsonrpc":"2.0","id":3,"result":{"prompts":[{"name":"greet"},{"name":"echo","arguments":[]}]}}"#.to_owned(), ListKind::Prompts),
        (r#"[{"jsonrpc":"2.0","id":3,"result":{"resources":[{"uri":"demo://a","name":"a"},{"uri":"file:///etc/passwd"},{"uri":"demo://b","name":5}]}} , {"jsonrpc":"2.0","method":"notifications/resources/list_changed"}, 7 ]"#.to_owned(), ListKind::Resources),
        (r#"[{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"echo"}]}},{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"echo"},{"name":"z"}]}}]"#.to_owned(), ListKind::Tools),
        (r#"{"id":3,"result":{"tools":[{"name":"echo","annotations":{"readOnlyHint":null,"destructiveHint":true}},{"name":"add","annotations":{"readOnlyHint":true,"readOnlyHint":false}},{"name":"a2","annotations":{"destructiveHint":1}},{"name":"a3","annotations":{"r\u0065adOnlyHint":true,"title":"x"}},{"name":"a4","annotations":[true,false]},{"name":"a5","annotations":{"title":{"readOnlyHint":false}}},{"name":"a6","annotations":"x"}]}}"#.to_owned(), ListKind::Tools),
        ("\u{a0}{\"id\":3,\"result\":{\"tools\":[]}}".to_owned(), ListKind::Tools),
        ("\u{a0}[{\"id\":3,\"result\":{\"tools\":[]}}]".to_owned(), ListKind::Tools),
    ];
    // Each with other whitespace between the tokens.
    let spaced: Vec<(String, ListKind)> = v
        .iter()
        .filter(|(t, _)| t.len() < 4000)
        .map(|(t, k)| (t.replace(',', "\r\n,\t").replace(':', " :\n"), *k))
        .collect();
    v.extend(spaced);
    v
}

fn keep_some(name: &str) -> bool {
    keep_echo(name) || name.starts_with('a') || name.contains("repo")
}

#[test]
fn framing_gives_the_reference_output_on_valid_json() {
    let ids = [Id::Number("3".into()), Id::Number("1".into())];
    let valid = |t: &str| serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok();
    let inputs = inputs();
    assert!(inputs.iter().filter(|(t, _)| valid(t)).count() >= 25);
    for (text, kind) in inputs.into_iter().filter(|(t, _)| valid(t)) {
        let (mut a, mut b) = (Rewrite::default(), Rewrite::default());
        let new = rewrite_document(&text, kind, &ids, &keep_some, &mut a);
        let old = reference(&text, kind, &ids, &keep_some, &mut b);
        assert_eq!(new, old, "{text}");
        assert_eq!(a, b, "{text}");
    }
}

/// On damaged JSON the output (if any) is valid JSON showing only allowed entries, and
/// equals the reference wherever the reference rewrote.
#[test]
fn framing_on_damaged_json_never_shows_more() {
    let ids = [Id::Number("3".into())];
    for (text, kind) in inputs().into_iter().filter(|(t, _)| t.len() < 4000) {
        let bytes = text.as_bytes();
        for pos in 0..bytes.len() {
            for edit in [
                None,
                Some(b'"'),
                Some(b'\\'),
                Some(b'}'),
                Some(b']'),
                Some(b','),
                Some(b'{'),
            ] {
                let mut damaged = bytes.to_vec();
                match edit {
                    None => {
                        damaged.remove(pos);
                    }
                    Some(c) => damaged.insert(pos, c),
                }
                let Ok(damaged) = String::from_utf8(damaged) else {
                    continue;
                };
                let (mut a, mut b) = (Rewrite::default(), Rewrite::default());
                let new = rewrite_document(&damaged, kind, &ids, &keep_echo, &mut a);
                let old = reference(&damaged, kind, &ids, &keep_echo, &mut b);
                if old.is_some() {
                    assert_eq!(new, old, "{damaged}");
                    assert_eq!(a, b, "{damaged}");
                }
                if let Some(out) = new {
                    let v: serde_json::Value = serde_json::from_str(&out)
                        .unwrap_or_else(|e| panic!("{damaged} -> {out}: {e}"));
                    let messages = match v {
                        serde_json::Value::Array(v) => v,
                        one => vec![one],
                    };
                    for m in messages.iter().filter(|m| m["id"] == 3) {
                        let Some(list) = m["result"][kind.array()].as_array() else {
                            continue;
                        };
                        for entry in list {
                            let name = match kind {
                                ListKind::Resources => &entry["uri"],
                                _ => &entry["name"],
                            };
                            assert!(
                                name.as_str().is_some_and(keep_echo) || entry.is_array(),
                                "{damaged} -> {out}"
                            );
                        }
                    }
                }
            }
        }
    }
}
/// Every name in any `tools` array of any message a reader could take from `out` (a
/// lenient UTF-8 decoder, a first-document reader, serde's last-duplicate-wins maps).
fn names_any_reader_sees(out: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(out);
    let mut names = Vec::new();
    let mut collect = |v: &serde_json::Value| {
        let messages = match v {
            serde_json::Value::Array(v) => v.clone(),
            one => vec![one.clone()],
        };
        for m in messages {
            for t in m["result"]["tools"].as_array().into_iter().flatten() {
                names.extend(t["name"].as_str().map(str::to_owned));
            }
        }
    };
    for doc in text.split("data: ").chain([text.as_ref()]) {
        let doc = doc.trim_start_matches('\u{feff}');
        let mut docs = serde_json::Deserializer::from_str(doc).into_iter::<serde_json::Value>();
        if let Some(Ok(v)) = docs.next() {
            collect(&v);
        }
    }
    names.sort();
    names.dedup();
    names
}

fn curate(body: &[u8], sse: bool, ids: &[Id]) -> Curation {
    let mut stats = Rewrite::default();
    let f = if sse { curate_sse } else { curate_json };
    f(body, ListKind::Tools, ids, &keep_echo, &mut stats)
}

const LIST: &str =
    r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"echo"},{"name":"delete_repo"}]}}"#;

#[test]
fn a_readable_list_is_rewritten_and_nothing_else_changes() {
    let seven = [Id::Number("7".into())];
    for sse in [false, true] {
        let body = if sse {
            format!(": c\n\nevent: message\ndata: {LIST}\n\n")
        } else {
            LIST.to_owned()
        };
        let Curation::Rewritten(out) = curate(body.as_bytes(), sse, &seven) else {
            panic!("{body}");
        };
        assert_eq!(names_any_reader_sees(&out), ["echo"]);
    }
    // A JSON-RPC error, notifications and priming events only: unchanged.
    let error = r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32601,"message":"no"}}"#;
    assert_eq!(curate(error.as_bytes(), false, &seven), Curation::Unchanged);
    let sse = format!("id: p\ndata: \n\nevent: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}}\n\ndata: {error}\n\n");
    assert_eq!(curate(sse.as_bytes(), true, &seven), Curation::Unchanged);
    // A server request reusing the id passes; the response after it is curated.
    let sse =
        format!("data: {{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"}}\n\ndata: {LIST}\n\n");
    let Curation::Rewritten(out) = curate(sse.as_bytes(), true, &seven) else {
        panic!()
    };
    assert!(!String::from_utf8_lossy(&out).contains("delete_repo"));
}

#[test]
fn each_unreadable_class_is_refused() {
    let seven = [Id::Number("7".into())];
    let s7 = [Id::Str("7".into())];
    let cases: Vec<(Vec<u8>, bool, &[Id], Unreadable)> = vec![
        // Not UTF-8 (JSON and SSE), or a byte order mark.
        (LIST.replace("echo", "ech\u{fffd}").replace('\u{fffd}', "\u{1}").into_bytes().into_iter().map(|b| if b == 1 { 0xff } else { b }).collect(), false, &seven, Unreadable::Utf8),
        ([b"data: ", LIST.as_bytes(), b"\n\ndata: \xc3\x28\n\n"].concat(), true, &seven, Unreadable::Utf8),
        ([BOM, LIST.as_bytes()].concat(), false, &seven, Unreadable::Utf8),
        ([BOM, b"data: ", LIST.as_bytes(), b"\n\n"].concat(), true, &seven, Unreadable::Utf8),
        // Bytes after the document: a second document, garbage, an SSE event with two.
        (format!("{LIST}{LIST}").into_bytes(), false, &seven, Unreadable::Trailing),
        (format!("{LIST}\n x").into_bytes(), false, &seven, Unreadable::Trailing),
        (format!("data: {LIST} {LIST}\n\n").into_bytes(), true, &seven, Unreadable::Trailing),
        // Unexpected shapes.
        (br#"{"jsonrpc":"2.0","id":7,"result":{"tools":{"name":"delete_repo"}}}"#.to_vec(), false, &seven, Unreadable::Shape),
        (br#"{"jsonrpc":"2.0","id":7,"result":{"other":[]}}"#.to_vec(), false, &seven, Unreadable::Shape),
        (br#"{"jsonrpc":"2.0","id":7,"result":[{"name":"delete_repo"}]}"#.to_vec(), false, &seven, Unreadable::Shape),
        (br#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"echo"}],"t\u006fols":[{"name":"delete_repo"}]}}"#.to_vec(), false, &seven, Unreadable::Shape),
        (br#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"delete_repo"}]},"result":{"tools":[]}}"#.to_vec(), false, &seven, Unreadable::Shape),
        (br#"["x"]"#.to_vec(), false, &seven, Unreadable::Shape),
        (b"[]".to_vec(), false, &seven, Unreadable::Shape),
        (b"".to_vec(), false, &seven, Unreadable::Shape),
        (("\u{a0}".to_owned() + LIST).into_bytes(), false, &seven, Unreadable::Shape),
        (b"data: {\"tools\": [\n\n".to_vec(), true, &seven, Unreadable::Shape),
        // Ids not spelled as the request spelled them, or matching nothing.
        (LIST.replace("\"id\":7", "\"id\":\"7\"").into_bytes(), false, &seven, Unreadable::Id),
        (LIST.replace("\"id\":7", "\"id\":7.0").into_bytes(), false, &seven, Unreadable::Id),
        (LIST.replace("\"id\":7", "\"id\":7e0").into_bytes(), false, &seven, Unreadable::Id),
        (LIST.replace("\"id\":7", "\"id\":8").into_bytes(), false, &seven, Unreadable::Id),
        (LIST.replace("\"id\":7,", "").into_bytes(), false, &seven, Unreadable::Id),
        (LIST.as_bytes().to_vec(), false, &s7, Unreadable::Id),
        (format!("data: {}\n\n", LIST.replace("\"id\":7", "\"id\":99")).into_bytes(), true, &seven, Unreadable::Id),
        (format!("[{LIST},{}]", LIST.replace("\"id\":7", "\"id\":null")).into_bytes(), false, &seven, Unreadable::Id),
        (br#"{"jsonrpc":"2.0","id":7,"method":"x","result":{"tools":[{"name":"delete_repo"}]},"id":8}"#.to_vec(), false, &seven, Unreadable::Shape),
        (br#"{"jsonrpc":"2.0","id":8,"method":"x","result":{"tools":[{"name":"delete_repo"}]}}"#.to_vec(), false, &seven, Unreadable::Id),
    ];
    for (body, sse, ids, why) in cases {
        let shown = String::from_utf8_lossy(&body).into_owned();
        assert!(
            !names_any_reader_sees(&body).is_empty() || why != Unreadable::Id,
            "{shown}"
        );
        assert_eq!(
            curate(&body, sse, ids),
            Curation::Unreadable(why),
            "{shown}"
        );
    }
    // A JSON-RPC error with any id carries no list: it passes with its diagnostics.
    let error =
        r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Session not found"}}"#;
    assert_eq!(curate(error.as_bytes(), false, &seven), Curation::Unchanged);
    // A string id's escapes decode as every reader decodes them.
    let escaped = LIST.replace("\"id\":7", r#""id":"\u0037""#);
    assert!(matches!(
        curate(escaped.as_bytes(), false, &s7),
        Curation::Rewritten(_)
    ));
}

#[test]
fn duplicate_names_in_an_entry_are_dropped_for_every_reader() {
    let seven = [Id::Number("7".into())];
    for entry in [
        r#"{"name":"echo","name":"delete_repo"}"#,
        r#"{"name":"delete_repo","name":"echo"}"#,
        r#"{"name":"echo","n\u0061me":"delete_repo"}"#,
    ] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":7,"result":{{"tools":[{entry},{{"name":"echo"}}]}}}}"#
        );
        let Curation::Rewritten(out) = curate(body.as_bytes(), false, &seven) else {
            panic!()
        };
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains("delete_repo"), "{out}");
    }
}

#[test]
fn a_list_an_sse_reader_would_not_see_is_refused() {
    let seven = [Id::Number("7".into())];
    // A JSON body labelled text/event-stream: no SSE event, but a JSON reader sees the list.
    assert_eq!(
        curate(LIST.as_bytes(), true, &seven),
        Curation::Unreadable(Unreadable::Shape)
    );
    // An unknown field among the events (SSE readers ignore the line).
    let odd = format!(": ping\nretry: 10\nid: 1\nevent: message\ndata: {LIST}\n\n{LIST}\n\n");
    assert_eq!(
        curate(odd.as_bytes(), true, &seven),
        Curation::Unreadable(Unreadable::Shape)
    );
    // Comments and the four fields are fine.
    let fine = format!(": ping\nretry: 10\nid: 1\nevent: message\ndata: {LIST}\n\n");
    assert!(matches!(
        curate(fine.as_bytes(), true, &seven),
        Curation::Rewritten(_)
    ));
}

#[test]
fn a_curated_list_is_never_shareable() {
    let seven = [Id::Number("7".into())];
    for (scope, expect) in [
        (r#""public""#, Some("private")),
        (r#""p\u0075blic""#, Some("private")),
        ("1", Some("private")),
        (r#""private""#, Some("private")),
    ] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":7,"result":{{"tools":[{{"name":"echo"}}],"ttlMs":5,"cacheScope":{scope}}}}}"#
        );
        for sse in [false, true] {
            let body = if sse {
                format!("data: {body}\n\n")
            } else {
                body.clone()
            };
            let Curation::Rewritten(out) = curate(body.as_bytes(), sse, &seven) else {
                panic!()
            };
            let text = String::from_utf8(out).unwrap();
            let doc = text.trim_start_matches("data: ").trim_end();
            let v: serde_json::Value = serde_json::from_str(doc).unwrap();
            assert_eq!(v["result"]["cacheScope"].as_str(), expect, "{text}");
            assert_eq!(v["result"]["ttlMs"], 5);
        }
    }
    // Absent (before 2026-07-28): not added.
    let Curation::Rewritten(out) = curate(LIST.as_bytes(), false, &seven) else {
        panic!()
    };
    assert!(!String::from_utf8(out).unwrap().contains("cacheScope"));
}

#[test]
fn content_types_a_list_response_may_have() {
    let v = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    for ok in [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        "application/json;charset=\"UTF-8\"",
        "text/event-stream",
        "text/event-stream; charset=utf-8; x=1",
    ] {
        assert!(curatable_kind(&v(&[ok]), false).is_ok(), "{ok}");
    }
    assert_eq!(
        curatable_kind(&v(&["text/event-stream"]), false),
        Ok(BodyKind::EventStream)
    );
    for (bad, why) in [
        ("application/jsonx", Unreadable::ContentType),
        ("application/json-seq", Unreadable::ContentType),
        ("text/plain", Unreadable::ContentType),
        (
            "application/json, text/event-stream",
            Unreadable::ContentType,
        ),
        ("application/json; charset=utf-16", Unreadable::Charset),
        ("text/event-stream; charset=latin1", Unreadable::Charset),
        (
            "application/json; charset=utf-8; charset=utf-16",
            Unreadable::Charset,
        ),
    ] {
        assert_eq!(curatable_kind(&v(&[bad]), false), Err(why), "{bad}");
    }
    assert_eq!(curatable_kind(&v(&[]), false), Err(Unreadable::ContentType));
    assert_eq!(
        curatable_kind(&v(&["application/json", "application/json"]), false),
        Err(Unreadable::ContentType)
    );
    assert_eq!(
        curatable_kind(&v(&["application/json"]), true),
        Err(Unreadable::Encoding)
    );
    let reasons: Vec<&str> = Unreadable::ALL.iter().map(|u| u.reason()).collect();
    assert_eq!(reasons.len(), 8);
    assert!(reasons.iter().all(|r| r.starts_with("response_")));
}

/// The resources demo-agent may read in the listen tests.
fn read_demo(uri: &str) -> bool {
    uri.starts_with("demo://")
}

fn updated(uri_json: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{{"_meta":{{"io.modelcontextprotocol/subscriptionId":1}},"uri":{uri_json}}}}}"#
    )
}

#[test]
fn a_listen_stream_loses_only_updates_the_agent_may_not_read() {
    let ack = r#"{"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":1},"notifications":{"toolsListChanged":true,"resourceSubscriptions":["demo://docs/a","secret://keys"]}}}"#;
    let changed = r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":1}}}"#;
    let end = r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete","_meta":{"io.modelcontextprotocol/subscriptionId":1}}}"#;
    let allowed = updated(r#""demo://docs/a""#);
    let denied = updated(r#""secret://keys""#);
    for nl in ["\n", "\r\n", "\r"] {
        let event = |data: &str| format!("event: message{nl}data: {data}{nl}{nl}");
        let stream = [
            format!(": ping{nl}{nl}"),
            event(ack),
            event(&denied),
            event(changed),
            event(&allowed),
            event(&denied),
            event(end),
        ]
        .concat();
        let got = curate_listen_events(stream.as_bytes(), &read_demo);
        assert_eq!(got.dropped, 2);
        assert!(got.acknowledged);
        let ack_curated = r#"{"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":1},"notifications":{"resourceSubscriptions":["demo://docs/a"],"toolsListChanged":true}}}"#;
        let want = [
            format!(": ping{nl}{nl}"),
            event(ack_curated),
            event(changed),
            event(&allowed),
            event(end),
        ]
        .concat();
        assert_eq!(String::from_utf8(got.body.unwrap()).unwrap(), want);
    }
    // The acknowledgement keeps only the URIs the agent may read (a URI that is not a string
    // cannot be checked); spread over two data lines, it becomes one.
    let ack = r#"{"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{"notifications":{"resourceSubscriptions":["secret://keys",7,"demo://x"]}}}"#;
    let (head, tail) = ack.split_at(ack.find("\"method\"").unwrap());
    let event = format!("id: 3\ndata: {head}\ndata: {tail}\n\n");
    let got = curate_listen_events(event.as_bytes(), &read_demo);
    assert_eq!((got.dropped, got.acknowledged), (0, true));
    assert_eq!(
        String::from_utf8(got.body.unwrap()).unwrap(),
        "id: 3\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/subscriptions/acknowledged\",\"params\":{\"notifications\":{\"resourceSubscriptions\":[\"demo://x\"]}}}\n\n"
    );
    // Nothing to drop: the bytes go on as they are.
    let fine = format!("data: {allowed}\n\n");
    let got = curate_listen_events(fine.as_bytes(), &read_demo);
    assert_eq!((got.body, got.dropped, got.acknowledged), (None, 0, false));
}

#[test]
fn an_update_any_reader_could_take_for_a_denied_resource_is_dropped() {
    let dropped = [
        // Escapes decoded before the method and URI are compared.
        updated(r#""secret:\/\/keys""#),
        updated(r#""\u0073ecret://keys""#).replace(
            "notifications/resources/updated",
            r"notifications\/resources\/updat\u0065d",
        ),
        // A duplicated uri: one reader reads the allowed one, another the denied one.
        updated(r#""demo://docs/a","uri":"secret://keys""#),
        updated(r#""secret://keys","uri":"demo://docs/a""#),
        updated(r#""demo://docs/a","u\u0072i":"secret://keys""#),
        // A duplicated method, or one that is not a string.
        r#"{"jsonrpc":"2.0","method":"notifications/progress","method":"notifications/resources/updated","params":{"uri":"secret://keys"}}"#.to_owned(),
        r#"{"jsonrpc":"2.0","method":["notifications/resources/updated"],"params":{"uri":"secret://keys"}}"#.to_owned(),
        // No uri, a uri that is not a string, params that are not an object.
        updated("null"),
        updated("7"),
        r#"{"jsonrpc":"2.0","method":"notifications/resources/updated"}"#.to_owned(),
        r#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":["demo://docs/a"]}"#.to_owned(),
        // A batch with one denied update is dropped whole.
        format!("[{},{}]", updated(r#""demo://docs/a""#), updated(r#""secret://keys""#)),
        // Not one JSON document: unreadable, so unchecked, so not shown.
        format!("{} {}", updated(r#""demo://docs/a""#), updated(r#""secret://keys""#)),
        updated(r#""secret://keys""#).replace("}}}", "}}"),
        "[]".to_owned(),
        format!("\u{feff}{}", updated(r#""demo://docs/a""#)),
    ];
    for data in &dropped {
        let event = format!("data: {data}\n\n");
        let got = curate_listen_events(event.as_bytes(), &read_demo);
        assert_eq!(got.dropped, 1, "{data}");
        assert_eq!(got.body.as_deref(), Some(&b""[..]), "{data}");
    }
    // Split over several data lines (joined with LF): still one message, still dropped.
    let denied = updated(r#""secret://keys""#);
    let (head, tail) = denied.split_at(40);
    let event = format!("data: {head}\ndata: {tail}\n\n");
    assert_eq!(
        curate_listen_events(event.as_bytes(), &read_demo).dropped,
        1
    );
    // What no reader takes for a message passes: text that is not JSON, an empty priming
    // event, a comment naming the URI, a server request, another notification naming it.
    let kept = [
        "data: secret://keys\n\n".to_owned(),
        "id: 7\ndata:\nretry: 100\n\n".to_owned(),
        ": notifications/resources/updated secret://keys\n\n".to_owned(),
        format!(
            "data: {}\n\n",
            r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"secret://keys"}}"#
        ),
        format!("data: {}\n\n", updated(r#""demo://docs/a""#)),
        format!("data: [{}]\n\n", updated(r#""demo://docs/b""#)),
    ];
    for event in &kept {
        let got = curate_listen_events(event.as_bytes(), &read_demo);
        assert_eq!((got.dropped, got.body), (0, None), "{event}");
    }
}

#[test]
fn the_end_of_a_skipped_event_is_found_across_chunks() {
    // The bytes of an event too large to hold end with (a part of) a line end; the next chunk
    // completes the blank line. Every split of "...<end of line><blank line>next" finds the
    // same end.
    for whole in [
        &b"data: aaaa\n\ndata: next\n\n"[..],
        b"data: aaaa\r\n\r\ndata: next\r\n\r\n",
        b"data: aaaa\r\rdata: next\r\r",
    ] {
        let want = first_event_end(whole).unwrap();
        assert_eq!(&whole[want..want + 4], b"data");
        for split in 1..want {
            let (skipped, next) = whole.split_at(split);
            if first_event_end(skipped).is_some() {
                continue; // the blank line is complete in the first part
            }
            let mut joined = skipped_tail(skipped);
            joined.extend_from_slice(next);
            let at = first_event_end(&joined).unwrap_or_else(|| panic!("{split}"));
            assert_eq!(&joined[at..], &whole[want..], "split at {split}");
        }
    }
    assert_eq!(first_event_end(b"data: a\n\r"), None);
    assert_eq!(first_event_end(b"data: a\n"), None);
}

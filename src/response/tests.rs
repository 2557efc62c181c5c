use super::scanner::MAX_SCALAR_LEN;
use super::*;

fn summaries(doc: &[u8]) -> Vec<Summary> {
    let mut out = Vec::new();
    let mut s = JsonScanner::new();
    s.feed(doc, &mut |m: &Summary| out.push(m.clone()));
    s.end_document();
    out
}

fn num(n: &str) -> Id {
    Id::Number(n.into())
}

fn correlate(kind: BodyKind, ids: Vec<Id>, chunks: &[&[u8]]) -> Correlator {
    let mut c = Correlator::new(ids);
    let mut r = ResponseScanner::new(kind);
    for chunk in chunks {
        r.feed(chunk, &mut c);
    }
    r.finish(&mut c);
    c
}

#[test]
fn finds_result_error_and_tool_error() {
    let s = summaries(br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"}{\"id\":9"}],"isError":true}}"#);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].id.as_deref(), Some(&b"1"[..]));
    assert_eq!(s[0].outcome(), Some(Outcome::ToolError));
    let s = summaries(br#"{"result":{"isError":false},"id":"a\"b","jsonrpc":"2.0"}"#);
    assert_eq!(
        (s[0].id.as_deref(), s[0].outcome()),
        (Some(&br#""a\"b""#[..]), Some(Outcome::Success))
    );
    let s = summaries(
        br#"{"jsonrpc":"2.0","id":null,"error":{"message":"x","code":-32600,"data":{"code":5}}}"#,
    );
    assert_eq!(s[0].outcome(), Some(Outcome::Error(Some(-32600))));
}

#[test]
fn nested_members_do_not_confuse_the_scanner() {
    // `id`, `isError` and `code` deeper than their own level are ignored.
    let s = summaries(br#"{"jsonrpc":"2.0","result":{"content":[{"id":5,"isError":true}],"structured":{"error":{"code":1}}},"id":2}"#);
    assert_eq!(
        (s[0].id.as_deref(), s[0].outcome()),
        (Some(&b"2"[..]), Some(Outcome::Success))
    );
}

#[test]
fn requests_and_notifications_on_the_stream_are_not_responses() {
    let s = summaries(br#"{"jsonrpc":"2.0","id":1,"method":"sampling/createMessage","params":{}}"#);
    assert_eq!(s[0].outcome(), None);
    let c = correlate(
        BodyKind::Json,
        vec![num("1")],
        &[br#"{"jsonrpc":"2.0","id":1,"method":"roots/list"}"#],
    );
    assert_eq!(c.outcome(&num("1")), None);
}

#[test]
fn batch_responses() {
    let c = correlate(
        BodyKind::Json,
        vec![num("1"), Id::Str("2".into())],
        &[br#"[{"jsonrpc":"2.0","id":"2","error":{"code":-32601,"message":"no"}},{"jsonrpc":"2.0","id":1,"result":{}}]"#],
    );
    assert_eq!(c.outcome(&num("1")), Some(Outcome::Success));
    assert_eq!(
        c.outcome(&Id::Str("2".into())),
        Some(Outcome::Error(Some(-32601)))
    );
    assert!(c.complete());
}

#[test]
fn number_and_string_ids_are_not_confused() {
    let c = correlate(
        BodyKind::Json,
        vec![num("1")],
        &[br#"{"jsonrpc":"2.0","id":"1","result":{}}"#],
    );
    assert_eq!(c.outcome(&num("1")), None);
    assert!(!c.complete());
    let big = "123456789012345678901234567890";
    let body = format!(r#"{{"jsonrpc":"2.0","id":{big},"result":{{}}}}"#);
    let c = correlate(
        BodyKind::Json,
        vec![num("123456789012345678901234567891")],
        &[body.as_bytes()],
    );
    assert_eq!(c.outcome(&num("123456789012345678901234567891")), None);
}

#[test]
fn sse_stream_split_at_every_byte_with_crlf_and_notifications() {
    let stream = b": ping\r\n\r\nid: 0\r\ndata: \r\n\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"id\":7}}\r\n\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\r\ndata: \"result\":{\"isError\":true}}\r\n\r\n";
    let chunks: Vec<&[u8]> = stream.chunks(1).collect();
    let c = correlate(BodyKind::EventStream, vec![num("7")], &chunks);
    assert_eq!(c.outcome(&num("7")), Some(Outcome::ToolError));
    assert_eq!(c.messages(), 2);
}

/// SSE data into a JsonScanner through `EventSink::data` only: the line ends are found by
/// the SSE scanner's own search (the trait's default `data_to_line_end`).
struct TwoPass<'a>(&'a mut JsonScanner, &'a mut Vec<Summary>);

impl EventSink for TwoPass<'_> {
    fn data(&mut self, bytes: &[u8]) {
        let out = &mut *self.1;
        self.0.feed(bytes, &mut |m: &Summary| out.push(m.clone()));
    }
    fn data_line_end(&mut self) {
        let out = &mut *self.1;
        self.0.feed(b"\n", &mut |m: &Summary| out.push(m.clone()));
    }
    fn dispatch(&mut self) {
        self.0.end_document();
    }
}

#[test]
fn one_pass_over_sse_data_sees_what_two_passes_see() {
    let long = "x".repeat(150);
    let streams = [
        format!("data: {{\"id\":1,\"result\":{{\"text\":\"{long}\",\"isError\":true}}}}\n\n"),
        // Line ends inside a string (invalid JSON) end the line for an SSE client too.
        format!("data: {{\"id\":2,\"result\":{{\"a\":\"{long}\r\ndata: \",\"isError\":true}}}}\r\n\r\n"),
        format!("data: {{\"id\":3,\"result\":{{\"a\":\"{long}\rdata: x\\\n\ndata: {{\"jsonrpc\":\"2.0\",\"id\":4,\"error\":{{\"code\":-1}}}}\n\n"),
        format!("data: {{\"id\":\"a\\\"\\\\{long}\",\n\ndata:\"result\":{{}}}}\n\n"),
        format!("data: {{\"id\":5,\"result\":{{\"t\":\"{long}\t\u{1}é\",\"isError\":false}}}}\n\n"),
        "data: {\"id\":6,\"result\"\r:{}}\n\ndata: {oops \"x\nevent: m\ndata: {\"id\":7,\"result\":{}}\n\n".to_owned(),
    ];
    for stream in &streams {
        for size in [1, 2, 7, 64, 100, stream.len()] {
            let mut fused = Vec::new();
            let mut r = ResponseScanner::new(BodyKind::EventStream);
            for chunk in stream.as_bytes().chunks(size) {
                r.feed_each(chunk, &mut |m: &Summary| fused.push(m.clone()));
            }
            let (mut json, mut sse, mut two) = (JsonScanner::new(), SseScanner::new(), Vec::new());
            for chunk in stream.as_bytes().chunks(size) {
                sse.feed(chunk, &mut TwoPass(&mut json, &mut two));
            }
            assert_eq!(fused, two, "{stream:?} in {size}-byte chunks");
        }
    }
    // The streams above do exercise both outcomes and the split strings.
    let mut all = Vec::new();
    let mut r = ResponseScanner::new(BodyKind::EventStream);
    r.feed_each(streams[2].as_bytes(), &mut |m: &Summary| {
        all.push(m.clone())
    });
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].outcome(), Some(Outcome::Error(Some(-1))));
}

#[test]
fn unmatched_error_is_kept() {
    let c = correlate(
        BodyKind::Json,
        vec![num("3")],
        &[br#"{"jsonrpc":"2.0","id":"server-error","error":{"code":-32600,"message":"Bad Request: No valid session ID provided"}}"#],
    );
    assert_eq!(c.outcome(&num("3")), None);
    assert_eq!(c.unmatched_error(), Some(Some(-32600)));
}

#[test]
fn huge_result_is_scanned_in_constant_memory() {
    let mut c = Correlator::new(vec![num("5")]);
    let mut r = ResponseScanner::new(BodyKind::EventStream);
    r.feed(b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{\"content\":[{\"type\":\"image\",\"data\":\"", &mut c);
    let block = vec![b'A'; 1 << 20];
    for _ in 0..30 {
        r.feed(&block, &mut c);
    }
    r.feed(b"\"}],\"isError\":false}}\n\n", &mut c);
    assert_eq!(c.outcome(&num("5")), Some(Outcome::Success));
    assert!(
        r.json.capture.capacity() <= MAX_ID_LEN * 2,
        "{}",
        r.json.capture.capacity()
    );
}

#[test]
fn broken_documents_yield_nothing() {
    assert!(summaries(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{} x").is_empty());
    assert!(summaries(b"Not Found").is_empty());
    // A member name that does not decode (bad escape, lone surrogate) abandons the document.
    assert!(summaries(br#"{"jsonrpc":"2.0","id":1,"result":{},"\x":1}"#).is_empty());
    assert!(summaries(br#"{"jsonrpc":"2.0","id":1,"result":{"\ud800":1}}"#).is_empty());
    // A broken event does not poison the next one.
    let c = correlate(
        BodyKind::EventStream,
        vec![num("1")],
        &[b"data: {oops\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"],
    );
    assert_eq!(c.outcome(&num("1")), Some(Outcome::Success));
}

/// Summaries of `doc` fed in pieces of `size` bytes, as a JSON body and as one SSE event
/// whose data is split into one `data:` line per line of `doc`.
fn summaries_in_pieces(doc: &[u8], size: usize) -> (Vec<Summary>, Vec<Summary>) {
    let mut json = Vec::new();
    let mut r = ResponseScanner::new(BodyKind::Json);
    for piece in doc.chunks(size) {
        r.feed_each(piece, &mut |m: &Summary| json.push(m.clone()));
    }
    let mut event = Vec::new();
    for line in doc.split(|&b| b == b'\n') {
        event.extend_from_slice(b"data: ");
        event.extend_from_slice(line);
        event.extend_from_slice(b"\r\n");
    }
    event.extend_from_slice(b"\r\n");
    let mut sse = Vec::new();
    let mut r = ResponseScanner::new(BodyKind::EventStream);
    for piece in event.chunks(size) {
        r.feed_each(piece, &mut |m: &Summary| sse.push(m.clone()));
    }
    (json, sse)
}

/// The outcome of the single message in `doc`, the same for every piece size and for the
/// same document as an SSE event.
fn outcome_of(doc: &[u8]) -> Option<Outcome> {
    let whole = summaries(doc);
    assert_eq!(whole.len(), 1, "{}", String::from_utf8_lossy(doc));
    for size in 1..=doc.len().min(80) {
        let (json, sse) = summaries_in_pieces(doc, size);
        assert_eq!(json, whole, "JSON in {size}-byte pieces");
        assert_eq!(sse, whole, "SSE in {size}-byte pieces");
    }
    whole.first().and_then(Summary::outcome)
}

#[test]
fn escaped_member_names_are_read_as_the_sdks_read_them() {
    let tool_error =
        br#"{"jsonrpc":"2.0","id":1,"r\u0065sult":{"content":[],"is\u0045rror":true}}"#;
    assert_eq!(outcome_of(tool_error), Some(Outcome::ToolError));
    let error = br#"{"jsonrpc":"2.0","id":1,"\u0065rror":{"\u0063ode":-32000,"message":"x"}}"#;
    assert_eq!(outcome_of(error), Some(Outcome::Error(Some(-32000))));
    // Every character escaped, a `\/`-free name in upper-case hex, and the version.
    let all = br#"{"\u006A\u0073\u006F\u006E\u0072\u0070\u0063":"\u0032.0","\u0069\u0064":1,"\u0072\u0065\u0073\u0075\u006c\u0074":{"\u0069\u0073\u0045\u0072\u0072\u006f\u0072":true}}"#;
    assert_eq!(outcome_of(all), Some(Outcome::ToolError));
    let s = summaries(all);
    assert_eq!(s[0].id.as_deref(), Some(&b"1"[..]));
    // An escaped `method` still marks a server request, not a response.
    let request = br#"{"jsonrpc":"2.0","id":1,"m\u0065thod":"roots/list","result":{}}"#;
    assert_eq!(summaries(request)[0].outcome(), None);
    // Names that only look alike are other members.
    let other = br#"{"jsonrpc":"2.0","id":1,"result":{"iserror":true,"isError\u0000":true,"is\\u0045rror":true}}"#;
    assert_eq!(outcome_of(other), Some(Outcome::Success));
    // The same documents split across SSE data lines (a line end between members).
    let lines = b"{\"jsonrpc\":\"2.0\",\n\"id\":1,\n\"r\\u0065sult\"\n:{\"is\\u0045rror\"\n:true}}";
    assert_eq!(outcome_of(lines), Some(Outcome::ToolError));
}

#[test]
fn duplicated_members_are_never_success() {
    let malformed = [
        // The SDKs keep the last `isError` (false); serde_json refuses the message.
        br#"{"jsonrpc":"2.0","id":1,"result":{"isError":true,"isError":false}}"#.as_slice(),
        br#"{"jsonrpc":"2.0","id":1,"result":{"is\u0045rror":true,"isError":false}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"isError":true},"result":{}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{},"r\u0065sult":{}}"#,
        br#"{"jsonrpc":"2.0","id":1,"error":{"code":1},"error":{"code":2}}"#,
        br#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"code":2}}"#,
        br#"{"jsonrpc":"2.0","jsonrpc":"2.0","id":1,"result":{}}"#,
        br#"{"jsonrpc":"2.0","id":2,"id":1,"result":{}}"#,
        // Not a valid response to any SDK reader.
        br#"{"id":1,"result":{}}"#,
        br#"{"jsonrpc":"1.0","id":1,"result":{}}"#,
        br#"{"jsonrpc":["2.0"],"id":1,"result":{}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":[]}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":null}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"isError":"true"}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"isError":0}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"isError":null}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"isError":[true]}}"#,
    ];
    for doc in malformed {
        assert_eq!(
            outcome_of(doc),
            Some(Outcome::Malformed),
            "{}",
            String::from_utf8_lossy(doc)
        );
    }
    // The last `id` is the one the SDKs answer; it settles that request (not `success`).
    let c = correlate(
        BodyKind::Json,
        vec![num("1"), num("2")],
        &[br#"{"jsonrpc":"2.0","id":2,"id":1,"result":{}}"#],
    );
    assert_eq!(c.outcome(&num("1")), Some(Outcome::Malformed));
    assert_eq!(c.outcome(&num("2")), None);
    // Both `result` and `error`: the Python SDK reads the error (kept as before).
    let both = br#"{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":-32603}}"#;
    assert_eq!(outcome_of(both), Some(Outcome::Error(Some(-32603))));
    // Duplicates where the outcome does not look are fine.
    let fine = br#"{"jsonrpc":"2.0","id":1,"x":1,"x":2,"result":{"content":[],"content":[]}}"#;
    assert_eq!(outcome_of(fine), Some(Outcome::Success));
}

#[test]
fn escaped_ids_match_their_decoded_request_id() {
    // `"\u0037"` is the string "7", as the SDKs decode it (and as `Id::from_raw` does for
    // the request); numbers compare as spelled: `7.0` and `7e0` are not `7`.
    let c = correlate(
        BodyKind::Json,
        vec![Id::Str("7".into()), num("7")],
        &[br#"[{"jsonrpc":"2.0","id":"\u0037","result":{}},{"jsonrpc":"2.0","id":7.0,"result":{}},{"jsonrpc":"2.0","id":7e0,"result":{}}]"#],
    );
    assert_eq!(c.outcome(&Id::Str("7".into())), Some(Outcome::Success));
    assert_eq!(c.outcome(&num("7")), None);
    // A request id of the longest length, every character re-escaped by the server.
    let long = "a".repeat(crate::jsonrpc::MAX_REQUEST_ID_LEN - 2);
    let escaped: String = long
        .chars()
        .map(|ch| format!("\\u{:04x}", ch as u32))
        .collect();
    let body = format!(r#"{{"jsonrpc":"2.0","id":"{escaped}","result":{{"isError":true}}}}"#);
    let c = correlate(
        BodyKind::Json,
        vec![Id::Str(long.clone())],
        &[body.as_bytes()],
    );
    assert_eq!(c.outcome(&Id::Str(long)), Some(Outcome::ToolError));
}

/// A JSON Schema nested `depth` levels deep (objects of `properties`), as text.
fn deep_schema(depth: usize) -> String {
    let mut s = String::with_capacity(depth * 40);
    for _ in 0..depth / 2 {
        s.push_str(r#"{"type":"object","properties":{"p":"#);
    }
    s.push_str(r#"{"type":"string"}"#);
    for _ in 0..depth / 2 {
        s.push_str("}}");
    }
    s
}

#[test]
fn deep_values_do_not_change_the_outcome() {
    for depth in [255, 256, 257, 400, 10_000] {
        let schema = deep_schema(depth);
        let list = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{{"name":"t","inputSchema":{schema}}}]}}}}"#
        );
        let call = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"content":[],"structuredContent":{schema},"isError":true}}}}"#
        );
        let err = format!(
            r#"{{"jsonrpc":"2.0","id":1,"error":{{"data":{schema},"code":-32001,"message":"x"}}}}"#
        );
        for (doc, want) in [
            (list, Outcome::Success),
            (call, Outcome::ToolError),
            (err, Outcome::Error(Some(-32001))),
        ] {
            assert_eq!(
                summaries(doc.as_bytes())[0].outcome(),
                Some(want),
                "{depth}"
            );
            for size in [1, 7, 4096] {
                let (json, sse) = summaries_in_pieces(doc.as_bytes(), size);
                assert_eq!(json.first().and_then(Summary::outcome), Some(want));
                assert_eq!(sse.first().and_then(Summary::outcome), Some(want));
            }
        }
    }
    // Arbitrarily deep, in constant memory: a million levels of arrays.
    let mut c = Correlator::new(vec![num("5")]);
    let mut r = ResponseScanner::new(BodyKind::Json);
    r.feed(br#"{"jsonrpc":"2.0","id":5,"result":{"x":"#, &mut c);
    for bracket in [b"[", b"]"] {
        let block = bracket.repeat(1 << 16);
        for _ in 0..16 {
            r.feed(&block, &mut c);
        }
    }
    r.feed(br#","isError":true}}"#, &mut c);
    assert_eq!(c.outcome(&num("5")), Some(Outcome::ToolError));
    assert!(r.json.capture.capacity() <= MAX_SCALAR_LEN);
}

use crate::host::fake::Rng;

/// A random element of `from` (the differential test's vocabulary).
fn pick<'a>(rng: &mut Rng, from: &[&'a str]) -> &'a str {
    from.get(rng.below(from.len())).copied().unwrap_or_default()
}

/// Members of a JSON object with their names decoded and raw values, in order; `None`
/// when `raw` is not an object serde_json reads.
fn oracle_members(raw: &str) -> Option<Vec<(String, String)>> {
    use serde::de::{Deserializer, MapAccess, Visitor};
    use serde_json::value::RawValue;
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                out.push((k, v.get().to_owned()));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(raw);
    let members = (&mut de).deserialize_map(V).ok()?;
    de.end().ok()?;
    Some(members)
}

/// What the scanner must report for one valid JSON document, from serde_json.
fn oracle(doc: &str) -> Option<Vec<Summary>> {
    use serde_json::value::RawValue;
    let root: &RawValue = serde_json::from_str(doc).ok()?;
    let text = root.get();
    let objects: Vec<String> = if text.starts_with('[') {
        serde_json::from_str::<Vec<&RawValue>>(text)
            .ok()?
            .into_iter()
            .map(|r| r.get().to_owned())
            .filter(|t| t.starts_with('{'))
            .collect()
    } else if text.starts_with('{') {
        vec![text.to_owned()]
    } else {
        Vec::new()
    };
    let mut out = Vec::new();
    for object in objects {
        let mut s = Summary::default();
        let mut counts = std::collections::HashMap::<&str, usize>::new();
        let mut version_ok = false;
        for (key, raw) in oracle_members(&object)? {
            let scalar = !raw.starts_with(['{', '[']);
            match key.as_str() {
                "jsonrpc" => {
                    version_ok = serde_json::from_str::<String>(&raw).is_ok_and(|v| v == "2.0");
                    *counts.entry("jsonrpc").or_default() += 1;
                }
                "id" => {
                    s.id = (scalar && raw.len() <= MAX_ID_LEN).then(|| raw.clone().into_bytes());
                    *counts.entry("id").or_default() += 1;
                }
                "method" => s.has_method = true,
                "result" => {
                    s.has_result = true;
                    *counts.entry("result").or_default() += 1;
                    if !raw.starts_with('{') {
                        s.malformed = true;
                    }
                    for (k, v) in oracle_members(&raw).unwrap_or_default() {
                        match k.as_str() {
                            "isError" => {
                                *counts.entry("isError").or_default() += 1;
                                s.is_error = v == "true";
                                s.malformed |= v != "true" && v != "false";
                            }
                            "resultType" => {
                                *counts.entry("resultType").or_default() += 1;
                                let value = serde_json::from_str::<Option<String>>(&v);
                                s.malformed |= value.is_err();
                                s.input_required =
                                    value.ok().flatten().as_deref() == Some(INPUT_REQUIRED);
                            }
                            "requestState" => {
                                *counts.entry("requestState").or_default() += 1;
                                s.request_state = match serde_json::from_str::<Option<String>>(&v) {
                                    Ok(None) => RequestState::Absent,
                                    Ok(Some(state)) => RequestState::Kept(state),
                                    Err(_) => RequestState::NotString,
                                };
                            }
                            _ => {}
                        }
                    }
                }
                "error" => {
                    s.has_error = true;
                    *counts.entry("error").or_default() += 1;
                    for (k, v) in oracle_members(&raw).unwrap_or_default() {
                        if k == "code" {
                            *counts.entry("code").or_default() += 1;
                            s.error_code = (v.len() <= MAX_SCALAR_LEN)
                                .then(|| v.parse::<i64>().ok())
                                .flatten();
                        }
                    }
                }
                _ => {}
            }
        }
        s.malformed |= !version_ok || counts.values().any(|&n| n > 1);
        out.push(s);
    }
    Some(out)
}

fn random_value(rng: &mut Rng, depth: usize) -> String {
    match rng.below(if depth > 3 { 6 } else { 9 }) {
        0 => pick(rng, &["true", "false", "null", "0", "-32000", "1.5", "7e0"]).to_owned(),
        1 => pick(
            rng,
            &[
                r#""2.0""#,
                r#""\u0032.0""#,
                r#""1.0""#,
                r#""true""#,
                r#""7""#,
                r#""\u0037""#,
                r#""a\"}{""#,
                r#""input_required""#,
                r#""input\u005frequired""#,
                r#""complete""#,
            ],
        )
        .to_owned(),
        2 => "1".to_owned(),
        3 => "[[[[[[[[]]]]]]]]".to_owned(),
        4 => r#""x\\""#.to_owned(),
        5 => "7".to_owned(),
        6 => format!("[{}]", random_value(rng, depth + 1)),
        _ => random_object(rng, depth + 1),
    }
}

fn random_object(rng: &mut Rng, depth: usize) -> String {
    let names = [
        "jsonrpc",
        r#"json\u0072pc"#,
        "id",
        r#"\u0069d"#,
        "method",
        "result",
        r#"r\u0065sult"#,
        "error",
        r#"\u0065rror"#,
        "isError",
        r#"is\u0045rror"#,
        "code",
        r#"\u0063ode"#,
        "content",
        "Result",
        r#"is\\u0045rror"#,
        "resultType",
        r#"r\u0065sultType"#,
        "requestState",
        r#"requestStat\u0065"#,
    ];
    let n = rng.below(5);
    let members: Vec<String> = (0..n)
        .map(|_| format!("\"{}\":{}", pick(rng, &names), random_value(rng, depth)))
        .collect();
    format!("{{{}}}", members.join(","))
}

fn random_message(rng: &mut Rng) -> String {
    let mut members = vec![r#""jsonrpc":"2.0""#.to_owned(), r#""id":1"#.to_owned()];
    match rng.below(3) {
        0 => members.push(format!(r#""result":{}"#, random_object(rng, 1))),
        1 => members.push(format!(r#""\u0065rror":{}"#, random_object(rng, 1))),
        _ => {}
    }
    let extra = random_object(rng, 0);
    let extra = extra
        .strip_prefix('{')
        .and_then(|e| e.strip_suffix('}'))
        .unwrap_or_default();
    if !extra.is_empty() {
        members.insert(rng.below(members.len() + 1), extra.to_owned());
    }
    if rng.below(4) == 0 {
        members.remove(rng.below(members.len()));
    }
    format!("{{{}}}", members.join(","))
}

#[test]
fn same_summaries_as_serde_json_for_random_documents() {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let mut outcomes = Vec::new();
    for _ in 0..3000 {
        let doc = if rng.below(4) == 0 {
            format!(
                "[{},{}]",
                random_message(&mut rng),
                random_message(&mut rng)
            )
        } else {
            random_message(&mut rng)
        };
        let want = oracle(&doc).unwrap_or_else(|| panic!("not valid JSON: {doc}"));
        assert_eq!(summaries(doc.as_bytes()), want, "{doc}");
        for size in [1, 3, 16] {
            let (json, _) = summaries_in_pieces(doc.as_bytes(), size);
            assert_eq!(json, want, "{doc} in {size}-byte pieces");
        }
        outcomes.extend(want.iter().map(Summary::outcome));
    }
    // The documents reach every outcome.
    for o in [
        Some(Outcome::Success),
        Some(Outcome::ToolError),
        Some(Outcome::Error(None)),
        Some(Outcome::Malformed),
        Some(Outcome::InputRequired),
        None,
    ] {
        assert!(outcomes.contains(&o), "{o:?} never generated");
    }
}

#[test]
fn content_types() {
    assert_eq!(
        BodyKind::from_content_type(Some("Application/JSON; charset=utf-8")),
        BodyKind::Json
    );
    assert_eq!(
        BodyKind::from_content_type(Some("text/event-stream")),
        BodyKind::EventStream
    );
    assert_eq!(
        BodyKind::from_content_type(Some("text/plain")),
        BodyKind::Other
    );
    assert_eq!(BodyKind::from_content_type(None), BodyKind::Other);
}

#[test]
fn input_required_results_are_not_success() {
    // The spec's example (schema `InputRequiredResult`), and the same with escaped names and
    // value, as the SDK readers decode them.
    let docs: [&[u8]; 3] = [
        br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","inputRequests":{"github_login":{"method":"elicitation/create","params":{"mode":"form","message":"?","requestedSchema":{"type":"object"}}}},"requestState":"AEAD-protected blob"}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"requestState":"AEAD-protected blob","r\u0065sultType":"input\u005frequired"}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"requestStat\u0065":"AEAD-\u0070rotected blob","resultType":"\u0069\u006e\u0070\u0075\u0074\u005f\u0072\u0065\u0071\u0075\u0069\u0072\u0065\u0064"}}"#,
    ];
    for doc in docs {
        assert_eq!(outcome_of(doc), Some(Outcome::InputRequired));
        let s = summaries(doc);
        assert_eq!(
            s[0].request_state,
            RequestState::Kept("AEAD-protected blob".into()),
            "{}",
            String::from_utf8_lossy(doc)
        );
    }
    // Only input requests (no state), or a `null` state: a round without a state.
    let only_inputs = br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","inputRequests":{"r":{"method":"roots/list"}},"requestState":null}}"#;
    assert_eq!(outcome_of(only_inputs), Some(Outcome::InputRequired));
    assert_eq!(
        summaries(only_inputs)[0].request_state,
        RequestState::Absent
    );
    // A final result, whatever its type says, and a type nested deeper than `result`.
    for doc in [
        br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete","content":[]}}"#.as_slice(),
        br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"task","task":{}}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":null}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{"resultType":"input_required"}}}"#,
        br#"{"jsonrpc":"2.0","id":1,"resultType":"input_required","result":{}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"Input_Required"}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required ","requestState":"s"}}"#,
    ] {
        assert_eq!(
            outcome_of(doc),
            Some(Outcome::Success),
            "{}",
            String::from_utf8_lossy(doc)
        );
    }
    // An error wins (as for isError), and the type decides before `isError`.
    let both = br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required"},"error":{"code":-32603}}"#;
    assert_eq!(outcome_of(both), Some(Outcome::Error(Some(-32603))));
    let typed = br#"{"jsonrpc":"2.0","id":1,"result":{"isError":true,"resultType":"input_required","requestState":"s"}}"#;
    assert_eq!(outcome_of(typed), Some(Outcome::InputRequired));
    // What no SDK reads as one valid result: never input_required nor success.
    for doc in [
        br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","resultType":"complete"}}"#.as_slice(),
        br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete","r\u0065sultType":"input_required"}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","requestState":"a","requestState":"b"}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":1}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":["input_required"]}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","requestState":{"s":1}}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","requestState":7}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"\ud800"}}"#,
    ] {
        assert_eq!(
            outcome_of(doc),
            Some(Outcome::Malformed),
            "{}",
            String::from_utf8_lossy(doc)
        );
    }
}

#[test]
fn request_states_are_kept_up_to_their_bound() {
    let state_of = |state: &str| {
        let doc = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"resultType":"input_required","requestState":{state}}}}}"#
        );
        let s = summaries(doc.as_bytes());
        assert_eq!(s[0].outcome(), Some(Outcome::InputRequired), "{doc}");
        s[0].request_state.clone()
    };
    let longest = "s".repeat(MAX_REQUEST_STATE_LEN);
    assert_eq!(
        state_of(&format!("\"{longest}\"")),
        RequestState::Kept(longest.clone())
    );
    // Every character escaped: decoded, it still fits.
    let escaped: String = longest.chars().map(|_| "\\u0073").collect();
    assert_eq!(
        state_of(&format!("\"{escaped}\"")),
        RequestState::Kept(longest.clone())
    );
    // One byte more, raw or escaped, or a multi-byte character past the bound: unlinkable.
    let over = format!("\"{longest}s\"");
    assert_eq!(state_of(&over), RequestState::Unlinkable);
    assert_eq!(
        state_of(&format!("\"{escaped}\\u0073\"")),
        RequestState::Unlinkable
    );
    let wide = format!("\"{}\"", "é".repeat(MAX_REQUEST_STATE_LEN / 2 + 1));
    assert_eq!(state_of(&wide), RequestState::Unlinkable);
    // A huge one costs a bounded capture, and the outcome is still read.
    let huge = format!("\"{}\"", "s".repeat(1 << 20));
    let doc = format!(
        r#"{{"jsonrpc":"2.0","id":1,"result":{{"requestState":{huge},"resultType":"input_required"}}}}"#
    );
    let mut c = Correlator::new(vec![num("1")]);
    let mut r = ResponseScanner::new(BodyKind::Json);
    for chunk in doc.as_bytes().chunks(4096) {
        r.feed(chunk, &mut c);
    }
    assert_eq!(c.outcome(&num("1")), Some(Outcome::InputRequired));
    assert_eq!(c.request_state(&num("1")), Some(&RequestState::Unlinkable));
    assert!(r.json.capture.capacity() <= 2 * (2 + 6 * MAX_REQUEST_STATE_LEN));
    // A lone surrogate decodes for no reader: unlinkable, not malformed.
    assert_eq!(state_of(r#""\ud800""#), RequestState::Unlinkable);
}

#[test]
fn the_correlator_keeps_the_state_of_each_input_required_answer() {
    let c = correlate(
        BodyKind::EventStream,
        vec![num("1"), num("2"), num("3")],
        &[
            b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"resultType\":\"input_required\",\"requestState\":\"two\"}}\n\n",
            b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"resultType\":\"complete\",\"requestState\":\"one\"}}\n\n",
            b"data: [{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"resultType\":\"input_required\",\"inputRequests\":{}}}]\n\n",
        ],
    );
    assert_eq!(c.outcome(&num("1")), Some(Outcome::Success));
    assert_eq!(c.request_state(&num("1")), None);
    assert_eq!(c.outcome(&num("2")), Some(Outcome::InputRequired));
    assert_eq!(
        c.request_state(&num("2")),
        Some(&RequestState::Kept("two".into()))
    );
    assert_eq!(c.request_state(&num("3")), Some(&RequestState::Absent));
}

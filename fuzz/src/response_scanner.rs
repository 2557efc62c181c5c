//! The `response_scanner` target: `response::ResponseScanner` + `Correlator` and the raw
//! `JsonScanner` under every chunking, against serde_json oracles, and their heap.

use super::*;
use mcp_guard::response::{RequestState, INPUT_REQUIRED, MAX_REQUEST_STATE_LEN};

/// Ids the correlator waits for in [`response_scanner`]: what SDKs send, and look-alikes.
fn expected_ids() -> Vec<Id> {
    ["0", "1", "2", "3", "7", "-1", "10000000000000000000000"]
        .into_iter()
        .map(|n| Id::Number(n.to_owned()))
        .chain(
            ["1", "abc", "", "a\"b"]
                .into_iter()
                .map(|s| Id::Str(s.to_owned())),
        )
        .collect()
}

fn summary_fingerprint(f: &mut Fingerprint, s: &Summary) {
    f.mark(3);
    if let Some(id) = &s.id {
        f.mark(4);
        f.data(id);
    }
    let flags = [
        s.has_method,
        s.has_result,
        s.has_error,
        s.is_error,
        s.malformed,
    ];
    for (i, flag) in flags.into_iter().enumerate() {
        if flag {
            f.mark(10 + i as u8);
        }
    }
    if let Some(code) = s.error_code {
        f.number(20, code);
    }
    if s.input_required {
        f.mark(15);
    }
    match &s.request_state {
        RequestState::Absent => {}
        RequestState::Kept(state) => {
            f.mark(16);
            f.data(state.as_bytes());
        }
        RequestState::Unlinkable => f.mark(17),
        RequestState::NotString => f.mark(18),
    }
}

/// SSE data into a JsonScanner, one document per event (as `ResponseScanner` does inside).
struct SseToJson<'a> {
    json: &'a mut JsonScanner,
    out: &'a mut Fingerprint,
}

impl EventSink for SseToJson<'_> {
    fn data(&mut self, bytes: &[u8]) {
        let out = &mut *self.out;
        self.json
            .feed(bytes, &mut |s: &Summary| summary_fingerprint(out, s));
    }
    fn data_line_end(&mut self) {
        let out = &mut *self.out;
        self.json
            .feed(b"\n", &mut |s: &Summary| summary_fingerprint(out, s));
    }
    fn dispatch(&mut self) {
        self.json.end_document();
        self.out.mark(5);
    }
}

/// The members of one JSON object, in order, with their names decoded (as the scanner and the
/// SDK readers compare them) and their raw values; `None` when the text is not an object
/// serde_json reads.
fn members(raw: &str) -> Option<Vec<(String, &str)>> {
    struct Members<'a>(Vec<(String, &'a RawValue)>);
    struct Visit;
    impl<'de> serde::de::Visitor<'de> for Visit {
        type Value = Members<'de>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Members<'de>, A::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
                out.push((k, v));
            }
            Ok(Members(out))
        }
    }
    impl<'de> serde::Deserialize<'de> for Members<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(Visit)
        }
    }
    let Members(list) = serde_json::from_str::<Members<'_>>(raw).ok()?;
    Some(list.into_iter().map(|(k, v)| (k, v.get())).collect())
}

/// What the response scanner must report for one JSON document, from serde_json; `None` when
/// the document is outside what the oracle covers (not valid JSON, which includes member names
/// with lone surrogates).
///
/// The rules are `response::Summary`'s: names decoded; the last `id`, `isError` and `code`
/// count; a duplicated `jsonrpc`, `id`, `result`, `error`, `result.isError` or `error.code`, a
/// `jsonrpc` other than "2.0", a `result` that is not an object or an `isError` that is not a
/// boolean marks the message malformed; so do a duplicated `result.resultType` or
/// `result.requestState`, and a `resultType` that is neither a string nor null. A
/// `requestState` string is kept up to `MAX_REQUEST_STATE_LEN` bytes.
fn oracle_summaries(doc: &str) -> Option<Vec<Summary>> {
    if !doc
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with(['{', '['])
    {
        // Empty (SSE priming), a scalar, or not JSON (the legacy `endpoint` URI): no message.
        return Some(Vec::new());
    }
    let root: &RawValue = serde_json::from_str(doc).ok()?;
    let text = root.get();
    let objects: Vec<&str> = match text.as_bytes().first() {
        Some(b'{') => vec![text],
        Some(b'[') => serde_json::from_str::<Vec<&RawValue>>(text)
            .ok()?
            .into_iter()
            .map(RawValue::get)
            .filter(|t| t.starts_with('{'))
            .collect(),
        _ => Vec::new(),
    };
    let scalar = |raw: &str| !raw.starts_with(['{', '[']);
    let mut out = Vec::new();
    for object in objects {
        let mut s = Summary::default();
        // jsonrpc, id, result, error, isError, code, resultType, requestState
        let mut counts = [0usize; 8];
        let mut version_ok = false;
        for (key, raw) in members(object)? {
            match key.as_str() {
                "jsonrpc" => {
                    counts[0] += 1;
                    version_ok = serde_json::from_str::<String>(raw).is_ok_and(|v| v == "2.0");
                }
                "id" => {
                    counts[1] += 1;
                    s.id = (scalar(raw) && raw.len() <= mcp_guard::response::MAX_ID_LEN)
                        .then(|| raw.as_bytes().to_vec());
                }
                "method" => s.has_method = true,
                "result" => {
                    counts[2] += 1;
                    s.has_result = true;
                    s.malformed |= !raw.starts_with('{');
                    if raw.starts_with('{') {
                        for (k, v) in members(raw)? {
                            match k.as_str() {
                                "isError" => {
                                    counts[4] += 1;
                                    s.is_error = v == "true";
                                    s.malformed |= v != "true" && v != "false";
                                }
                                "resultType" => {
                                    counts[6] += 1;
                                    let value = serde_json::from_str::<Option<String>>(v);
                                    s.malformed |= value.is_err();
                                    s.input_required =
                                        value.ok().flatten().as_deref() == Some(INPUT_REQUIRED);
                                }
                                "requestState" => {
                                    counts[7] += 1;
                                    s.request_state =
                                        match serde_json::from_str::<Option<String>>(v) {
                                            Ok(None) => RequestState::Absent,
                                            Ok(Some(state))
                                                if state.len() <= MAX_REQUEST_STATE_LEN =>
                                            {
                                                RequestState::Kept(state)
                                            }
                                            Ok(Some(_)) => RequestState::Unlinkable,
                                            Err(_) if v.starts_with('"') => {
                                                RequestState::Unlinkable
                                            }
                                            Err(_) => RequestState::NotString,
                                        };
                                }
                                _ => {}
                            }
                        }
                    }
                }
                "error" => {
                    counts[3] += 1;
                    s.has_error = true;
                    if raw.starts_with('{') {
                        for (k, v) in members(raw)? {
                            if k == "code" {
                                counts[5] += 1;
                                s.error_code = (scalar(v) && v.len() <= 32)
                                    .then(|| v.parse::<i64>().ok())
                                    .flatten();
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        s.malformed |= !version_ok || counts.iter().any(|&n| n > 1);
        out.push(s);
    }
    Some(out)
}

/// Collects whole SSE events (data lines joined by `\n`, with the final `\n` the scanner also
/// feeds), for the oracle.
#[derive(Default)]
struct Events {
    current: Vec<u8>,
    all: Vec<Vec<u8>>,
}

impl EventSink for Events {
    fn data(&mut self, bytes: &[u8]) {
        self.current.extend_from_slice(bytes);
    }
    fn data_line_end(&mut self) {
        self.current.push(b'\n');
    }
    fn dispatch(&mut self) {
        self.all.push(std::mem::take(&mut self.current));
    }
}

/// The summaries fingerprint serde_json predicts for a whole body, if it covers all of it.
pub fn oracle_fingerprint(kind: BodyKind, body: &[u8]) -> Option<Fingerprint> {
    let mut f = Fingerprint::default();
    match kind {
        BodyKind::Json => {
            for s in oracle_summaries(std::str::from_utf8(body).ok()?)? {
                summary_fingerprint(&mut f, &s);
            }
        }
        _ => {
            let mut events = Events::default();
            reference_sse(body, &mut events);
            for event in events.all {
                for s in oracle_summaries(std::str::from_utf8(&event).ok()?)? {
                    summary_fingerprint(&mut f, &s);
                }
                f.mark(5);
            }
        }
    }
    Some(f)
}

/// What a correlator learned, comparable across runs.
fn correlator_view(c: &Correlator, ids: &[Id]) -> String {
    let outcomes: Vec<_> = ids.iter().map(|id| c.outcome(id)).collect();
    format!(
        "messages={} complete={} unmatched={:?} outcomes={outcomes:?}",
        c.messages(),
        c.complete(),
        c.unmatched_error()
    )
}

/// Target `response_scanner`: the first byte picks the body kind (`J`: `application/json`,
/// `S`: `text/event-stream`, `T`: `text/event-stream` keeping non-JSON events as a server
/// stream does; any other byte by its value mod 3), the rest is the body.
pub fn response_scanner(data: &[u8]) {
    require_counting();
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let (kind, text_events) = match selector {
        b'J' => (BodyKind::Json, false),
        b'S' => (BodyKind::EventStream, false),
        b'T' => (BodyKind::EventStream, true),
        x => match x % 3 {
            0 => (BodyKind::Json, false),
            1 => (BodyKind::EventStream, false),
            _ => (BodyKind::EventStream, true),
        },
    };
    let ids = expected_ids();
    let mut views: Vec<(String, String, Fingerprint)> = Vec::new();
    for how in chunkings(body) {
        let label = format!("{how:?}");
        // 1. The production path: ResponseScanner into a Correlator.
        let mut correlator = Correlator::new(ids.clone());
        let mut scanner = if text_events {
            ResponseScanner::with_text_events(kind)
        } else {
            ResponseScanner::new(kind)
        };
        let mut worst = 0usize;
        let meter = Meter::start();
        for chunk in Chunks::new(body, how.clone()) {
            let m = Meter::start();
            scanner.feed(chunk, &mut correlator);
            worst = worst.max(m.peak());
        }
        scanner.finish(&mut correlator);
        worst = worst.max(meter.peak());
        assert!(
            worst <= RESPONSE_SCANNER_HEAP_BOUND,
            "response scanner peaked at {worst} heap bytes on a {} byte body ({label})",
            body.len()
        );
        note_max(&MAX_SCANNER_HEAP, worst, "response scanner peak heap bytes");
        // The latest non-JSON event (the legacy `endpoint` URI) does not depend on chunking.
        let text = scanner.take_text_event();
        drop(scanner);

        // 2. The raw JSON scanner: every message summary, in order.
        let mut summaries = Fingerprint::default();
        let mut json = JsonScanner::new();
        match kind {
            BodyKind::EventStream => {
                let mut sse = SseScanner::new();
                for chunk in Chunks::new(body, how) {
                    sse.feed(
                        chunk,
                        &mut SseToJson {
                            json: &mut json,
                            out: &mut summaries,
                        },
                    );
                }
                sse.finish(&mut SseToJson {
                    json: &mut json,
                    out: &mut summaries,
                });
            }
            _ => {
                for chunk in Chunks::new(body, how) {
                    json.feed(chunk, &mut |s: &Summary| {
                        summary_fingerprint(&mut summaries, s)
                    });
                }
                json.end_document();
            }
        }
        let view = format!("{} text={text:?}", correlator_view(&correlator, &ids));
        views.push((label, view, summaries));
    }
    // serde_json's reading of the same body, where it covers it (valid JSON documents, member
    // names decoded, duplicates included): the same messages, ids, outcomes and codes.
    if let (Some(want), Some((_, _, got))) = (oracle_fingerprint(kind, body), views.first()) {
        assert_eq!(got, &want, "the scanner disagrees with serde_json");
    }
    if let Some((first_label, first_view, first_summaries)) = views.first() {
        for (label, view, summaries) in &views {
            assert_eq!(
                view, first_view,
                "correlator differs: {label} vs {first_label}"
            );
            assert_eq!(
                summaries, first_summaries,
                "summaries differ: {label} vs {first_label}"
            );
        }
    }
}

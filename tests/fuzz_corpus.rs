//! Replays the fuzz seed corpora through the fuzz targets' checks, on stable and without
//! libFuzzer, so `cargo test` exercises every target on real SDK traffic.
//!
//! The checks live in `fuzz/src/lib.rs` (the cargo-fuzz crate's library), compiled here as a
//! module: one definition for `make fuzz` and for this test. Inputs replayed:
//! - `fuzz/corpus/<target>/*`: the committed seeds (`scripts/capture_corpus.py` writes them);
//! - `fuzz/regressions/<target>/*`: inputs that once failed (minimized crashes), if any;
//! - `tests/e2e/data/sse/*`: raw SSE captures of other SDK servers, if present, as
//!   `sse_scanner` and `response_scanner` inputs.
//!
//! The authorization oracles (`fuzz/src/oracle.rs`) are tested here too (`oracle_tests`).

#![allow(clippy::unwrap_used)] // test code: a missing corpus file should fail loudly

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod fuzz_targets;

use std::path::{Path, PathBuf};

#[global_allocator]
static ALLOC: fuzz_targets::CountingAlloc = fuzz_targets::CountingAlloc;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

fn replay(target: &str, run: fuzz_targets::Target) -> usize {
    let mut n = 0;
    for sub in ["fuzz/corpus", "fuzz/regressions"] {
        for path in files(&Path::new(REPO).join(sub).join(target)) {
            let data = std::fs::read(&path).unwrap();
            eprintln!("replaying {}", path.display());
            run(&data);
            n += 1;
        }
    }
    n
}

fn target(name: &str) -> fuzz_targets::Target {
    fuzz_targets::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap()
}

#[test]
fn counting_allocator_is_installed() {
    assert!(fuzz_targets::counting_installed());
}

#[test]
fn request_parser_corpus() {
    let n = replay("request_parser", target("request_parser"));
    assert!(n >= 5, "only {n} request_parser seeds");
}

#[test]
fn sse_scanner_corpus() {
    let n = replay("sse_scanner", target("sse_scanner"));
    assert!(n >= 3, "only {n} sse_scanner seeds");
}

#[test]
fn response_scanner_corpus() {
    let n = replay("response_scanner", target("response_scanner"));
    assert!(n >= 3, "only {n} response_scanner seeds");
}

/// The serde_json oracle of `response_scanner` must cover real SDK responses (else its check
/// would pass vacuously).
#[test]
fn response_oracle_covers_sdk_responses() {
    use mcp_guard::response::BodyKind;
    let dir = Path::new(REPO).join("fuzz/corpus/response_scanner");
    let (mut seeds, mut covered) = (0, 0);
    for path in files(&dir) {
        let data = std::fs::read(&path).unwrap();
        let Some((&kind, body)) = data.split_first() else {
            continue;
        };
        let kind = if kind == b'J' {
            BodyKind::Json
        } else {
            BodyKind::EventStream
        };
        seeds += 1;
        covered += usize::from(fuzz_targets::oracle_fingerprint(kind, body).is_some());
    }
    assert!(
        covered * 10 >= seeds * 9,
        "oracle covers {covered} of {seeds} seeds"
    );
}

#[test]
fn stream_corpus() {
    let n = replay("stream", target("stream"));
    assert!(n >= 3, "only {n} stream seeds");
}

#[test]
fn other_sdk_sse_captures() {
    for path in files(&Path::new(REPO).join("tests/e2e/data/sse")) {
        let data = std::fs::read(&path).unwrap();
        eprintln!("replaying {}", path.display());
        fuzz_targets::sse_scanner(&data);
        let mut tagged = b"S".to_vec();
        tagged.extend_from_slice(&data);
        fuzz_targets::response_scanner(&tagged);
    }
}

/// Large bodies: the scanners' heap bound must hold far beyond what a short fuzzing run
/// reaches (libFuzzer grows inputs slowly).
#[test]
fn large_responses_stay_within_the_heap_bound() {
    let big = "x".repeat(256 * 1024);
    let sse = format!(
        "event: message\r\ndata: {{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{{\"content\":[{{\"text\":\"{big}\"}}],\"isError\":true}}}}\r\n\r\n"
    );
    let deep = format!("{}{}", "[{\"a\":".repeat(2000), "1}]".repeat(2000));
    let long_id = format!("{{\"jsonrpc\":\"2.0\",\"id\":\"{big}\",\"result\":{{}}}}");
    for (prefix, body) in [
        ("S", sse.as_str()),
        ("T", sse.as_str()),
        ("J", deep.as_str()),
        ("J", long_id.as_str()),
    ] {
        fuzz_targets::response_scanner(format!("{prefix}{body}").as_bytes());
    }
    fuzz_targets::sse_scanner(sse.as_bytes());
    fuzz_targets::sse_scanner(&b"\r\n\rdata:\r".repeat(30_000));
}

/// Hand-made inputs for paths SDK traffic never takes (rate limit rewrite, early replies,
/// trailers, odd statuses), so the replay covers them even before any fuzzing.
#[test]
fn synthetic_stream_inputs() {
    let call = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
    let sse = b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"isError\":false}}\r\n\r\n";
    for c0 in [0u8, 0x40, 0x80, 0x20, 0x02, 0x03, 0x0c] {
        for status in 0u8..16 {
            for c5 in 0u8..16 {
                for ct in [0u8, 1, 4] {
                    let control = [c0, 0, 3, status, ct, c5, 4, status ^ c5];
                    fuzz_targets::stream(&fuzz_targets::stream_input(control, call, sse));
                    fuzz_targets::stream(&fuzz_targets::stream_input(control, b"", b""));
                }
            }
        }
    }
    // Every policy, with and without the 2026-07-28 routing headers and the GET server stream
    // that follows (correlation through shared data).
    for policy in 0u8..4 {
        for extra in [0u8, 0x04, 0x24, 0x40, 0x80, 0xc0] {
            let control = [0, policy | extra, 1, 0, 0, 0, 2, 9];
            fuzz_targets::stream(&fuzz_targets::stream_input(control, call, sse));
        }
    }
}

/// The authorization oracles run on the SDK traffic of the corpus: forwarded requests and the
/// list responses the clients got (else the `stream` target's checks would pass vacuously).
#[test]
fn authorization_oracles_cover_the_stream_corpus() {
    let (requests, lists) = fuzz_targets::oracle_checks();
    for path in files(&Path::new(REPO).join("fuzz/corpus/stream")) {
        fuzz_targets::stream(&std::fs::read(&path).unwrap());
    }
    let (requests_after, lists_after) = fuzz_targets::oracle_checks();
    eprintln!(
        "oracle checks: {} requests, {} lists",
        requests_after - requests,
        lists_after - lists
    );
    // The counts are this thread's (this test's) own.
    assert!(
        requests_after - requests >= 20,
        "{} forwarded requests checked",
        requests_after - requests
    );
    assert!(
        lists_after - lists >= 3,
        "{} list responses checked",
        lists_after - lists
    );
}

/// The list oracle follows a list request whose answer the client awaits on the session's
/// server stream: a POSTed tools/list answered `202` without a body, then the GET stream
/// carries the answer, which mcp-guard curates there (checked: it passes), and which an
/// uncuratable variant (a byte-order mark, which mcp-guard cannot read today) makes fail.
#[test]
fn list_oracle_follows_the_answer_to_the_server_stream() {
    let list = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let answer =
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo"},{"name":"secret"}]}}"#;
    // POST, demo-agent; session, then a GET stream; 202; SSE; the POST's response has no body.
    let control = [0, 0x24, 0, 2, 0, 0x01, 0, 0];
    let lists = fuzz_targets::oracle_checks().1;
    let sse = format!("data: {answer}\n\n");
    fuzz_targets::stream(&fuzz_targets::stream_input(control, list, sse.as_bytes()));
    assert!(
        fuzz_targets::oracle_checks().1 > lists,
        "the GET stream was not checked"
    );
    // A stream starting with a byte order mark (which SSE readers drop) is curated as well.
    let lists = fuzz_targets::oracle_checks().1;
    let bom = format!("\u{feff}{sse}");
    fuzz_targets::stream(&fuzz_targets::stream_input(control, list, bom.as_bytes()));
    assert!(
        fuzz_targets::oracle_checks().1 > lists,
        "the GET stream was not checked"
    );
}

mod oracle_tests {
    use super::fuzz_targets::oracle::{self, Forwarded, IdValue, ListAsk, Named, TagNames};

    const TAGS: TagNames<'static> = TagNames {
        agent: "x-agent-id",
        method: "x-mcp-method",
        tool: "x-mcp-tool-name",
        prompt: "x-mcp-prompt-name",
        resource: "x-mcp-resource-uri",
    };

    /// demo-agent may call echo and the default methods, nothing else.
    fn permits(named: Named<'_>) -> Result<(), String> {
        match named {
            Named::Tool("echo") | Named::Method("tools/call" | "tools/list" | "ping") => Ok(()),
            other => Err(format!("{other:?} is not allowed")),
        }
    }

    fn check(method: &str, headers: &[(&str, &str)], body: &str) -> Result<Vec<ListAsk>, String> {
        let mut all: Vec<(String, String)> = vec![("x-agent-id".into(), "demo-agent".into())];
        all.extend(
            headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
        );
        let req = Forwarded {
            http_method: method,
            headers: &all,
            body: body.as_bytes(),
        };
        oracle::check_request(&req, "demo-agent", &TAGS, &permits)
    }

    const ECHO_TAGS: &[(&str, &str)] =
        &[("x-mcp-method", "tools/call"), ("x-mcp-tool-name", "echo")];

    #[test]
    fn a_forwarded_request_must_name_only_allowed_things_under_every_reader() {
        let echo = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#;
        assert_eq!(check("POST", ECHO_TAGS, echo), Ok(vec![]));
        let denied = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"rm"}}"#;
        let tags = &[("x-mcp-method", "tools/call"), ("x-mcp-tool-name", "rm")];
        assert!(check("POST", tags, denied)
            .unwrap_err()
            .contains("Tool(\"rm\")"));
        // A duplicated name: one reader or the other sees the denied tool.
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"rm"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"rm","name":"echo"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"rm"},"params":{"name":"echo"}}"#,
        ] {
            let e = check("POST", ECHO_TAGS, body).unwrap_err();
            assert!(e.contains("Tool(\"rm\")"), "{body}: {e}");
        }
        let e = check("POST", ECHO_TAGS, &format!("[{echo},{denied}]")).unwrap_err();
        assert!(e.contains("Tool(\"rm\")"), "{e}");
        // A tools/call that names no tool, or a method that is not a string, is a finding.
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":["ping"]}"#,
            r#"[1]"#,
            r#""ping""#,
        ] {
            assert!(check("POST", ECHO_TAGS, body).is_err(), "{body}");
        }
        // mcp-guard forwards only what it parsed: a body a strict reader refuses is a finding.
        for body in [
            format!("\u{feff}{echo}"),
            format!("{echo} {echo}"),
            echo[1..].to_owned(),
        ] {
            let e = check("POST", ECHO_TAGS, &body).unwrap_err();
            assert!(e.contains("not JSON"), "{body}: {e}");
        }
    }

    #[test]
    fn the_tags_must_say_what_every_reader_reads() {
        let echo = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#;
        for tags in [
            &[("x-mcp-method", "tools/call")][..],
            &[("x-mcp-method", "tools/call"), ("x-mcp-tool-name", "ech")],
            &[
                ("x-mcp-method", "tools/call"),
                ("x-mcp-tool-name", "echo"),
                ("x-mcp-prompt-name", "echo"),
            ],
            &[
                ("x-mcp-method", "tools/call"),
                ("x-mcp-tool-name", "echo"),
                ("x-mcp-tool-name", "echo"),
            ],
        ] {
            assert!(check("POST", tags, echo).is_err(), "{tags:?}");
        }
        // Batches: distinct values, first-seen order; bytes outside visible ASCII encoded.
        let ping = r#"{"jsonrpc":"2.0","method":"ping"}"#;
        let tags = &[
            ("x-mcp-method", "tools/call,ping"),
            ("x-mcp-tool-name", "echo"),
        ];
        assert_eq!(
            check("POST", tags, &format!("[{echo},{echo},{ping}]")),
            Ok(vec![])
        );
        let odd = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},"x":"\u00e9"}"#;
        assert_eq!(check("POST", ECHO_TAGS, odd), Ok(vec![]));
        // The agent tag must be the stream's agent, once.
        let req = Forwarded {
            http_method: "POST",
            headers: &[("x-agent-id".into(), "admin-agent".into())],
            body: echo.as_bytes(),
        };
        assert!(oracle::check_request(&req, "demo-agent", &TAGS, &permits).is_err());
        // Anything but a POST goes without body and tags.
        assert_eq!(check("GET", &[], ""), Ok(vec![]));
        assert!(check("GET", &[], echo).is_err());
        assert!(check("DELETE", ECHO_TAGS, "").is_err());
    }

    fn tools_ask(id: IdValue) -> Vec<ListAsk> {
        vec![ListAsk { array: "tools", id }]
    }

    #[test]
    fn list_requests_are_reported_for_the_response_oracle() {
        let list = r#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#;
        let asks = check("POST", &[("x-mcp-method", "tools/list")], list).unwrap();
        assert_eq!(asks, tools_ask(IdValue::Str(Some("a".into()))));
    }

    #[test]
    fn a_list_response_may_show_only_allowed_entries_however_a_client_reads_it() {
        let asks = tools_ask(IdValue::Number("1".into()));
        let list = |id: &str, names: &str| {
            format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"tools":[{names}]}}}}"#)
        };
        let check = |body: &str| oracle::check_list_response(body.as_bytes(), &asks, &permits);
        let curated = list("1", r#"{"name":"echo"}"#);
        let leaked = list("1", r#"{"name":"echo"},{"name":"rm"}"#);
        assert_eq!(check(&curated), Ok(()));
        assert_eq!(check(&format!("data: {curated}\n\n")), Ok(()));
        assert!(check(&leaked).is_err());
        for body in [
            format!("event: message\r\ndata: {leaked}\r\n\r\n"),
            format!("data: {leaked}"), // unterminated last event
            format!("\u{feff}{leaked}"),
            format!("{leaked}\n{curated}"), // the first document
            format!("[{curated},{leaked}]"),
            list("\"1\"", r#"{"name":"rm"}"#), // Number("1") == 1 (TypeScript SDK)
            list("1.0", r#"{"name":"rm"}"#),   // same number
            list("\" 1\"", r#"{"name":"rm"}"#), // int(" 1") (Python SDK)
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"rm","name":"echo"}]}}"#.into(),
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"tools":[{"name":"rm"}]}}"#.into(),
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"rm"}]},"result":{}}"#.into(),
        ] {
            let e = check(&body).unwrap_err();
            assert!(e.contains("Tool(\"rm\")"), "{body}: {e}");
        }
        let mut lossy = leaked.clone().into_bytes();
        lossy.insert(3, 0xff); // inside a member name: U+FFFD for the lenient readers
        assert!(oracle::check_list_response(&lossy, &asks, &permits).is_err());
        // Not an answer to the list request, or nothing a client can read: nothing listed.
        for body in [
            list("2", r#"{"name":"rm"}"#),
            list("\"x\"", r#"{"name":"rm"}"#),
            list("1", r#"{"title":"rm"},"rm",{"name":["rm"]}"#),
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"refused"}}"#.into(),
            leaked[1..].to_owned(), // no reader reads it
        ] {
            assert_eq!(check(&body), Ok(()), "{body}");
        }
    }

    #[test]
    fn ids_match_as_the_sdks_match_them() {
        let n = |s: &str| IdValue::Number(s.into());
        let s = |s: &str| IdValue::Str(Some(s.into()));
        for (response, request) in [
            (n("1"), n("1")),
            (n("1.0"), n("1")),
            (n("1e0"), n("1")),
            (s("1"), n("1")),
            (s(" 1 "), n("1")),
            (s("0x1"), n("1")),
            (s("1_0"), n("10")), // Python int()
            (IdValue::Bool(true), n("1")),
            (IdValue::Null, n("0")),
            (s(""), n("0")),
            (IdValue::Other("[]".into()), n("0")),
            (IdValue::Other("[\"1\"]".into()), n("1")),
            (s("a"), s("a")),
        ] {
            assert!(response.may_answer(&request), "{response:?} {request:?}");
        }
        for (response, request) in [
            (n("2"), n("1")),
            (s("a"), n("1")),
            (s("1a"), n("1")),
            (s("_1"), n("1")),
            (IdValue::Other("{}".into()), n("0")),
            (IdValue::Str(None), n("0")),
            (s("a"), s("b")),
        ] {
            assert!(!response.may_answer(&request), "{response:?} {request:?}");
        }
    }
}

/// The request parser gives the same result as the parser it replaced
/// (`fuzz/src/reference.rs`) on the seed corpus and every one-byte damage of hand-made bodies
/// (duplicates, escapes, batches, task ids).
#[test]
fn request_parser_matches_the_reference_parser() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/request_parser");
    let mut bodies: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    let base: Vec<&[u8]> = vec![
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi \"x\" \\ [{"},"_meta":{}}}"#,
        br#" { "jsonrpc" : "2.0" , "id" : "a" , "method" : "prompts/get" , "params" : { "name" : "gr\u0065et" , "arguments" : [ ] } } "#,
        br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a","uri":"x"}}"#,
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"n\u0061me":"a","name":"b"}}"#,
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{},"arguments":{}}}"#,
        br#"{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"t1"}}"#,
        br#"{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"t1","taskId":"t2"}}"#,
        br#"{"jsonrpc":"2.\u0030","id":1,"method":"ping","params":[1]}"#,
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":null,"arguments":1}}"#,
        br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}},{"jsonrpc":"2.0","method":"x"}]"#,
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"a\\u00\"}}",
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#,
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","requestState":"s\u0031","inputResponses":{},"_meta":{"io.modelcontextprotocol\/protocolVersion":7,"io.modelcontextprotocol/protocolVersion":"x"}}}"#,
        br#"{"jsonrpc":"2.0","method":"notifications/x","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"\ud800"},"_meta":[]}}"#,
    ];
    bodies.extend(base.iter().map(|b| b.to_vec()));
    // Every one-byte damage of the hand-made bodies.
    for b in &base {
        for pos in 0..b.len() {
            let mut d = b.to_vec();
            d.remove(pos);
            bodies.push(d);
            for c in [b'"', b'\\', b'{', b'}', b',', b' '] {
                let mut d = b.to_vec();
                d.insert(pos, c);
                bodies.push(d);
            }
        }
    }
    assert!(bodies.len() > 1000);
    for body in &bodies {
        for depth in [2, 3, mcp_guard::config::DEFAULT_MAX_JSON_DEPTH] {
            let new = format!("{:?}", mcp_guard::jsonrpc::parse_body(body, depth));
            let old = format!("{:?}", fuzz_targets::reference::parse_body(body, depth));
            assert_eq!(new, old, "{}", String::from_utf8_lossy(body));
        }
    }
}

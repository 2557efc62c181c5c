//! A minimal MCP client over Streamable HTTP (MCP 2025-11-25, "Transports" §Streamable HTTP),
//! enough for `mcp-guard pin --url`: `initialize`, `notifications/initialized`, `tools/list`
//! with `nextCursor` pagination, and the session's `DELETE`.
//!
//! HTTP is `ureq` 3 (blocking, rustls for `https://`). Each POST accepts
//! `application/json` and `text/event-stream`: a JSON answer is read whole (at most
//! [`MAX_RESPONSE`] bytes), an SSE answer is scanned with the filter's own SSE scanner
//! ([`mcp_guard::sse::SseScanner`]) until the event holding the response to the request's id
//! (server requests and notifications on the stream are skipped). The `Mcp-Session-Id` the
//! server assigns on `initialize` is sent on every later request, with `MCP-Protocol-Version`
//! set to the negotiated revision.

use mcp_guard::sse::{EventSink, SseScanner};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::io::Read as _;
use std::time::Duration;

/// The revision the client asks for in `initialize`.
pub const PROTOCOL_VERSION: &str = "2025-11-25";
/// Largest response read, in bytes (a JSON body, or the SSE stream up to the response).
pub const MAX_RESPONSE: u64 = 16 << 20;
/// Most `tools/list` pages fetched before giving up (a server whose cursors never end).
pub const MAX_PAGES: usize = 100;

/// What went wrong talking to the server; the message names the step.
#[derive(Debug)]
pub struct ClientError(pub String);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(step: &str, what: impl std::fmt::Display) -> ClientError {
    ClientError(format!("{step}: {what}"))
}

/// A JSON-RPC message from the server, as far as the client reads it. A member given twice is
/// refused by the parser.
#[derive(Debug, Deserialize)]
struct Message {
    #[serde(default)]
    id: Option<Box<RawValue>>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<Box<RawValue>>,
}

/// A connection to one MCP endpoint.
pub struct Client {
    agent: ureq::Agent,
    url: String,
    headers: Vec<(String, String)>,
    session: Option<String>,
    protocol_version: String,
    next_id: u64,
}

/// Collects the data of SSE events, at most [`MAX_RESPONSE`] bytes held.
#[derive(Default)]
struct Events {
    current: Vec<u8>,
    done: Vec<Vec<u8>>,
    held: u64,
    overflow: bool,
}

impl EventSink for Events {
    fn data(&mut self, bytes: &[u8]) {
        self.held += bytes.len() as u64;
        if self.held > MAX_RESPONSE {
            self.overflow = true;
        } else {
            self.current.extend_from_slice(bytes);
        }
    }
    fn data_line_end(&mut self) {
        self.current.push(b'\n');
    }
    fn dispatch(&mut self) {
        // Data lines are joined with LF; the last one's LF is not part of the data.
        if self.current.last() == Some(&b'\n') {
            self.current.pop();
        }
        self.done.push(std::mem::take(&mut self.current));
    }
}

impl Client {
    /// A client for `url` sending `headers` (name, value) on every request; every request
    /// must finish within `timeout`.
    pub fn new(url: &str, headers: Vec<(String, String)>, timeout: Duration) -> Client {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build();
        Client {
            agent: ureq::Agent::new_with_config(config),
            url: url.to_owned(),
            headers,
            session: None,
            protocol_version: PROTOCOL_VERSION.to_owned(),
            next_id: 1,
        }
    }

    fn with_headers<B>(
        &self,
        mut req: ureq::RequestBuilder<B>,
        initialized: bool,
    ) -> ureq::RequestBuilder<B> {
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(s) = &self.session {
            req = req.header("Mcp-Session-Id", s.as_str());
        }
        if initialized {
            req = req.header("MCP-Protocol-Version", self.protocol_version.as_str());
        }
        req
    }

    /// POSTs one JSON-RPC message; for a request (`id` set), the response's `result` text.
    fn post(
        &mut self,
        step: &str,
        body: &serde_json::Value,
        id: Option<u64>,
        initialized: bool,
    ) -> Result<(Option<String>, Option<Box<RawValue>>), ClientError> {
        let req = self
            .with_headers(self.agent.post(&self.url), initialized)
            .header("Accept", "application/json, text/event-stream")
            .header("Content-Type", "application/json");
        let mut resp = req
            .send(body.to_string().as_bytes())
            .map_err(|e| err(step, e))?;
        let status = resp.status().as_u16();
        let session = resp
            .headers()
            .get("mcp-session-id")
            .map(|v| {
                v.to_str()
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b)))
                    .map(str::to_owned)
                    .ok_or_else(|| err(step, "Mcp-Session-Id is not visible ASCII"))
            })
            .transpose()?;
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if !(200..300).contains(&status) {
            let text = resp
                .body_mut()
                .with_config()
                .limit(512)
                .lossy_utf8(true)
                .read_to_string()
                .unwrap_or_default();
            return Err(err(
                step,
                format!("HTTP {status}: {}", text.escape_default()),
            ));
        }
        let Some(id) = id else {
            return Ok((session, None));
        };
        let media = content_type.split(';').next().unwrap_or("").trim();
        let reader = resp.body_mut().with_config().limit(MAX_RESPONSE).reader();
        let message = match media {
            "application/json" => {
                let mut text = Vec::new();
                reader
                    .take(MAX_RESPONSE + 1)
                    .read_to_end(&mut text)
                    .map_err(|e| err(step, e))?;
                let m: Message = serde_json::from_slice(&text)
                    .map_err(|e| err(step, format!("response: {e}")))?;
                if !is_id(m.id.as_deref(), id) {
                    return Err(err(step, "the response's id is not the request's"));
                }
                m
            }
            "text/event-stream" => read_sse(step, reader, id)?,
            other => return Err(err(step, format!("unexpected Content-Type {other:?}"))),
        };
        if let Some(e) = message.error {
            return Err(err(step, format!("JSON-RPC error {}", e.get())));
        }
        match message.result {
            Some(r) => Ok((session, Some(r))),
            None => Err(err(step, "the response has neither result nor error")),
        }
    }

    fn request(
        &mut self,
        step: &str,
        method: &str,
        params: serde_json::Value,
    ) -> Result<Box<RawValue>, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let initialized = method != "initialize";
        let (session, result) = self.post(step, &body, Some(id), initialized)?;
        if method == "initialize" {
            self.session = session;
        }
        result.ok_or_else(|| err(step, "no result"))
    }

    /// `initialize` then `notifications/initialized`; the negotiated revision is kept.
    pub fn initialize(&mut self) -> Result<(), ClientError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Init {
            protocol_version: String,
        }
        let result = self.request(
            "initialize",
            "initialize",
            serde_json::json!({
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "mcp-guard", "version": env!("CARGO_PKG_VERSION")},
            }),
        )?;
        let init: Init = serde_json::from_str(result.get())
            .map_err(|e| err("initialize", format!("result: {e}")))?;
        if init.protocol_version.is_empty()
            || init.protocol_version.len() > 64
            || !init
                .protocol_version
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b))
        {
            return Err(err(
                "initialize",
                "the server's protocolVersion is not a revision",
            ));
        }
        self.protocol_version = init.protocol_version;
        let note = serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        self.post("notifications/initialized", &note, None, true)?;
        Ok(())
    }

    /// Every `tools/list` page (at most [`MAX_PAGES`]): the text of each tool entry as the
    /// server sent it.
    pub fn list_tools(&mut self) -> Result<Vec<String>, ClientError> {
        let mut entries = Vec::new();
        let mut cursor: Option<String> = None;
        for page in 1..=MAX_PAGES {
            let step = format!("tools/list page {page}");
            let params = match &cursor {
                Some(c) => serde_json::json!({"cursor": c}),
                None => serde_json::json!({}),
            };
            let result = self.request(&step, "tools/list", params)?;
            let page: crate::pin::Page<'_> = serde_json::from_str(result.get())
                .map_err(|e| err(&step, format!("result: {e}")))?;
            entries.extend(page.tools.iter().map(|t| t.get().to_owned()));
            match page.next_cursor {
                Some(c) => cursor = Some(c.into_owned()),
                None => return Ok(entries),
            }
        }
        Err(err(
            "tools/list",
            format!("more than {MAX_PAGES} pages (nextCursor never ended)"),
        ))
    }

    /// Ends the session with `DELETE` (a server may answer 405: it does not let clients end
    /// sessions). Without a session, nothing.
    pub fn close(&mut self) -> Result<(), ClientError> {
        if self.session.is_none() {
            return Ok(());
        }
        let resp = self
            .with_headers(self.agent.delete(&self.url), true)
            .call()
            .map_err(|e| err("DELETE", e))?;
        let status = resp.status().as_u16();
        self.session = None;
        if (200..300).contains(&status) || status == 405 {
            Ok(())
        } else {
            Err(err("DELETE", format!("HTTP {status}")))
        }
    }
}

/// Whether a JSON-RPC id is the number `id`.
fn is_id(raw: Option<&RawValue>, id: u64) -> bool {
    raw.is_some_and(|r| r.get().trim() == id.to_string())
}

/// Scans an SSE response until the event holding the response to `id`.
fn read_sse(step: &str, mut reader: impl std::io::Read, id: u64) -> Result<Message, ClientError> {
    let mut scanner = SseScanner::new();
    let mut events = Events::default();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = reader.read(&mut buf).map_err(|e| err(step, e))?;
        if n == 0 {
            scanner.finish(&mut events);
        } else {
            scanner.feed(buf.get(..n).unwrap_or_default(), &mut events);
        }
        if events.overflow {
            return Err(err(step, format!("an SSE event over {MAX_RESPONSE} bytes")));
        }
        for data in events.done.drain(..) {
            if data.is_empty() {
                continue; // a priming event
            }
            let m: Message =
                serde_json::from_slice(&data).map_err(|e| err(step, format!("SSE event: {e}")))?;
            if m.method.is_none() && is_id(m.id.as_deref(), id) {
                return Ok(m);
            }
        }
        events.held = events.current.len() as u64;
        if n == 0 {
            return Err(err(step, "the SSE stream ended without the response"));
        }
    }
}

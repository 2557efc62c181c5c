//! The response path of a [`Stream`]: response headers choose the [`ResponseMode`]; the body
//! callbacks scan, hold and curate, correlate a server stream, or replace the body, as the
//! mode says.

use super::{settle, RequestPhase, ResponseMode, ServerStream, Stream, SCAN_PIECE};
use crate::annotations;
use crate::audit::{Call, OutputStatus};
use crate::correlation;
use crate::curation::{self, Claimed, Curation, ListKind, Rewrite, Unreadable};
use crate::host::{Action, Host, ReadError};
use crate::jsonrpc::{self, Id};
use crate::metrics::Metric;
use crate::params;
use crate::pins::ListCheck;
use crate::policy::{Decision, Policy, Subject};
use crate::response::{BodyKind, Outcome, ResponseScanner, Summary};
use crate::verdict::{Refusal, BAD_GATEWAY, INTERNAL_ERROR};
use std::borrow::Cow;
use std::rc::Rc;

impl Stream {
    /// Response headers callback.
    pub fn on_response_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Action {
        if let RequestPhase::Replied = self.request {
            return Action::Continue;
        }
        let Ok(headers) = host.response_headers() else {
            return self.response_headers_unread(host, end_of_stream);
        };
        let status = headers
            .first(":status")
            .and_then(|s| s.trim().parse::<u32>().ok());
        self.facts.http_status = status;
        if let RequestPhase::AwaitingBody { .. } | RequestPhase::Streaming { .. } = self.request {
            // Envoy answered before the body was complete (for example its own 413 at the
            // buffer limit): mcp-guard never examined the request and it was not forwarded.
            // Record that, settled from the status.
            self.request = RequestPhase::Abandoned;
            let mut call = Call::bare(Decision::Deny);
            call.output_status = match status {
                Some(429) => None, // settled as rate_limited below
                Some(400..=499) => Some(OutputStatus::InvalidRequest),
                _ => Some(OutputStatus::UpstreamError),
            };
            self.calls = vec![call];
        }
        if self.facts.session_id.is_none() {
            self.facts.session_id = headers.first("mcp-session-id").map(str::to_owned);
        }
        if status == Some(429) {
            // A rate limiter refused the request (Envoy's or the upstream's 429).
            self.response = ResponseMode::RateLimited;
            self.settle_response(
                host,
                &Refusal::RateLimited {
                    retry_after_s: None,
                },
            );
            if !end_of_stream {
                host.set_response_header("content-type", Some("application/json"));
                host.set_response_header("content-length", None);
            }
            self.write_audit(host);
            return Action::Continue;
        }
        self.response_kind = BodyKind::from_content_type(headers.first("content-type"));
        let is_post = self.is_post();
        let curate = match &mut self.request {
            RequestPhase::Forwarded { curate } => curate.take(),
            _ => None,
        };
        // A listen stream (MCP 2026-07-28) is curated event by event as it arrives.
        if self.config.curate_lists
            && is_post
            && curate.is_none()
            && !end_of_stream
            && self.listens()
        {
            return self.listen_headers(host, &headers, status);
        }
        // A list response to be curated (held whole for a POST, event by event on a server
        // stream) must be read; one that cannot be must not reach the client unread.
        let must_read = self.must_read(curate.as_ref().map(|(kind, _)| *kind));
        if must_read && is_post && curate.is_some() && !end_of_stream {
            if status == Some(202) {
                // Accepted: the answer comes on another stream (legacy HTTP+SSE); this body is
                // none, and no SDK reads it. Dropped, so that no reader finds a list in it.
                self.response = ResponseMode::Discard;
                host.set_response_header("content-length", None);
                return Action::Continue;
            }
            match curation::curatable_kind(&headers.values("content-type"), headers.encoded()) {
                Ok(kind) => self.response_kind = kind,
                Err(why) => return self.refuse_response(host, why, status, end_of_stream),
            }
        } else if self.must_read(None)
            && !is_post
            && self.response_kind == BodyKind::EventStream
            && headers.encoded()
        {
            return self.refuse_response(host, Unreadable::Encoding, status, end_of_stream);
        }
        if is_post && !self.correlator.complete() && self.response_kind != BodyKind::Other {
            let scanner = ResponseScanner::new(self.response_kind);
            self.response = match curate {
                Some((kind, ids)) if !end_of_stream => {
                    // The list is rewritten whole at the end of the body: its length changes.
                    host.set_response_header("content-length", None);
                    ResponseMode::Hold { kind, ids, scanner }
                }
                _ => ResponseMode::Scan(scanner),
            };
        } else if !is_post && self.response_kind == BodyKind::EventStream {
            // A server stream (Streamable HTTP GET, legacy GET /sse): responses to requests
            // POSTed on other streams can arrive here. The legacy `endpoint` event (not JSON)
            // names the session.
            self.response = ResponseMode::ServerStream(ServerStream {
                scanner: ResponseScanner::with_text_events(self.response_kind),
                held: Vec::new(),
                started: false,
            });
        }
        // No record yet when the body follows: it is written once the outcome is known, or
        // by on_stream_end (the log callback) for a stream that ends without one.
        if end_of_stream {
            self.finish(host);
        }
        Action::Continue
    }

    /// Response body callback; `body_size` is the size of this chunk (or of the buffered body
    /// after a pause).
    pub fn on_response_body(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        if let RequestPhase::Replied = self.request {
            return Action::Continue;
        }
        match &mut self.response {
            ResponseMode::Done => Action::Continue,
            ResponseMode::Discard => {
                host.set_response_body(body_size, b"");
                if end_of_stream {
                    self.finish(host);
                }
                Action::Continue
            }
            ResponseMode::Refused(why) => {
                // Swallowed chunk by chunk, so memory stays constant however long the stream;
                // the error takes the place of the last chunk.
                let body = if end_of_stream {
                    let refusal = Refusal::Response(*why);
                    refusal.body(&self.calls, &self.facts.agent_id, &self.config)
                } else {
                    String::new()
                };
                host.set_response_body(body_size, body.as_bytes());
                if end_of_stream {
                    self.finish(host);
                }
                Action::Continue
            }
            ResponseMode::RateLimited => {
                if !end_of_stream {
                    return Action::Pause; // buffer the (small) 429 body, then replace it whole
                }
                let refusal = Refusal::RateLimited {
                    retry_after_s: None,
                };
                let body = refusal.body(&self.calls, &self.facts.agent_id, &self.config);
                host.set_response_body(body_size, body.as_bytes());
                self.response = ResponseMode::Done;
                Action::Continue
            }
            ResponseMode::ServerStream(stream) => {
                let held = !stream.held.is_empty();
                if body_size > 0 || (end_of_stream && held) {
                    self.correlate(host, body_size, end_of_stream);
                }
                if end_of_stream {
                    // Ends without a last scan of its trailing bytes.
                    self.response = ResponseMode::Pass;
                    self.finish(host);
                }
                Action::Continue
            }
            ResponseMode::Listen(_) => {
                if body_size > 0 || end_of_stream {
                    self.listen_chunk(host, body_size, end_of_stream);
                }
                if end_of_stream {
                    self.finish(host);
                }
                Action::Continue
            }
            ResponseMode::Hold { .. } => {
                if !end_of_stream {
                    return Action::Pause; // Envoy buffers the list response until its end
                }
                self.curate_held(host, body_size);
                self.finish(host);
                Action::Continue
            }
            ResponseMode::Scan(scanner) => {
                if body_size > 0 {
                    // In pieces: a large chunk (Envoy hands on up to ~1 MiB at once) is scanned
                    // while each piece is still in cache, the VM never holds more than one
                    // piece, and reading stops once every response has been seen.
                    let mut start = 0;
                    let mut unread = false;
                    while start < body_size && !self.correlator.complete() {
                        let len = (body_size - start).min(SCAN_PIECE);
                        let piece = match host.response_body(start, len) {
                            Ok(Some(piece)) => piece,
                            Ok(None) => break,
                            Err(ReadError) => {
                                unread = true;
                                break;
                            }
                        };
                        scanner.feed(&piece, &mut self.correlator);
                        start += len;
                    }
                    if unread {
                        self.settle_unread();
                        self.finish(host);
                        return Action::Continue;
                    }
                }
                if self.correlator.complete() || end_of_stream {
                    self.finish(host);
                }
                Action::Continue
            }
            ResponseMode::Pass => {
                if end_of_stream {
                    self.finish(host);
                }
                Action::Continue
            }
        }
    }

    /// A response that curation must read cannot be, from its headers alone ([`Unreadable`]:
    /// a `content-encoding` other than `identity` despite the `accept-encoding: identity`
    /// mcp-guard sends upstream, a content type other than exactly JSON or SSE, a charset
    /// other than UTF-8): it is refused, never forwarded unread. The client gets, in place of
    /// the body, `application/json` with a JSON-RPC internal error ([`INTERNAL_ERROR`]) per
    /// request, under HTTP 502 ([`BAD_GATEWAY`]) in place of a 2xx status (another status,
    /// such as a 404 that ends a session, is kept); every call not yet settled is
    /// `upstream_error`. Counted as `mcp_guard.refusals.reason.<why>`. (To accept encoded
    /// responses, put Envoy's decompressor filter after mcp-guard: on the response path it
    /// then runs first.)
    pub(super) fn refuse_response(
        &mut self,
        host: &mut dyn Host,
        why: Unreadable,
        status: Option<u32>,
        end_of_stream: bool,
    ) -> Action {
        // Chosen before the response scanner or the hold is set up: neither ever starts.
        self.response = ResponseMode::Refused(why);
        self.settle_response(host, &Refusal::Response(why));
        if status.is_none_or(|s| (200..300).contains(&s)) {
            self.facts.http_status = Some(BAD_GATEWAY);
            host.set_response_header(":status", Some("502"));
        }
        host.set_response_header("content-type", Some("application/json"));
        host.set_response_header("content-encoding", None);
        host.set_response_header("content-length", None);
        if end_of_stream {
            self.finish(host);
        }
        Action::Continue
    }

    /// A held list response (`body_size` bytes) that must be curated and cannot be (`why`):
    /// its status and headers have already gone on (a 200 stays a 200), and the body becomes a
    /// JSON-RPC internal error ([`INTERNAL_ERROR`]) per request, as JSON or as one SSE
    /// `message` event, counted and audited as [`Stream::refuse_response`] does.
    fn refuse_held(&mut self, host: &mut dyn Host, why: Unreadable, body_size: usize) {
        let refusal = Refusal::Response(why);
        self.settle_response(host, &refusal);
        let error = refusal.body(&self.calls, &self.facts.agent_id, &self.config);
        let body = match self.response_kind {
            BodyKind::EventStream => format!("event: message\ndata: {error}\n\n"),
            _ => error,
        };
        host.set_response_body(body_size, body.as_bytes());
    }

    /// The response headers could not be read: nothing about the response is known. One that
    /// must be curated (a list response, or a server stream, under `curate_lists`) is refused
    /// ([`Unreadable::HostRead`], as [`Stream::refuse_response`]); any other is passed on
    /// unexamined and its calls are settled now as `upstream_error` (no outcome was seen).
    fn response_headers_unread(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Action {
        log::warn!("mcp-guard: could not read the response headers");
        if let RequestPhase::AwaitingBody { .. } | RequestPhase::Streaming { .. } = self.request {
            // Envoy answered before the body was complete; never forwarded (see above).
            self.request = RequestPhase::Abandoned;
            let mut call = Call::bare(Decision::Deny);
            call.output_status = Some(OutputStatus::UpstreamError);
            self.calls = vec![call];
        }
        let curated = match &self.request {
            RequestPhase::Forwarded { curate } => curate.is_some(),
            _ => false,
        } || !self.is_post();
        let kind = match &self.request {
            RequestPhase::Forwarded {
                curate: Some((kind, _)),
            } => Some(*kind),
            _ => None,
        };
        if self.must_read(kind) && curated && !end_of_stream {
            return self.refuse_response(host, Unreadable::HostRead, None, end_of_stream);
        }
        self.finish(host);
        Action::Continue
    }

    /// A response body that is only scanned for outcomes could not be read: the scan stops,
    /// and every call it had not answered yet is settled as `upstream_error` (an outcome
    /// already seen is kept), never read as an empty body.
    fn settle_unread(&mut self) {
        log::warn!("mcp-guard: could not read a response body; its calls are upstream_error");
        if !matches!(self.response, ResponseMode::Done) {
            self.response = ResponseMode::Pass; // the scanner is dropped unfinished
        }
        for call in self.calls.iter_mut().filter(|c| c.output_status.is_none()) {
            let outcome = match (&call.method, &call.request_id) {
                (Some(_), Some(id)) => self.correlator.outcome(id),
                _ => None,
            };
            let (status, code) = outcome.map_or((OutputStatus::UpstreamError, None), settle);
            call.output_status = Some(status);
            call.error_code = code;
        }
    }

    /// A server stream's chunk could not be read. Under `curate_lists` it may hold a list
    /// response that must not pass unread: the stream is refused from here on, as one whose
    /// headers showed it unreadable ([`Unreadable::HostRead`]; its chunks are swallowed and the
    /// error takes the place of the last). Without curation the chunk passes on and
    /// correlation stops on this stream (calls waiting for a response on it keep their
    /// `deferred` records).
    pub(super) fn server_stream_unread(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) {
        log::warn!("mcp-guard: could not read a server stream chunk");
        // The scanner and any held partial event are dropped.
        self.response = ResponseMode::Pass;
        if !self.must_read(None) {
            return;
        }
        let why = Unreadable::HostRead;
        self.response = ResponseMode::Refused(why);
        let refusal = Refusal::Response(why);
        self.settle_response(host, &refusal);
        let body = if end_of_stream {
            refusal.body(&self.calls, &self.facts.agent_id, &self.config)
        } else {
            String::new()
        };
        host.set_response_body(body_size, body.as_bytes());
    }

    /// Counts a refusal of the response and settles the calls it leaves open.
    fn settle_response(&mut self, host: &mut dyn Host, refusal: &Refusal) {
        for (metric, by) in refusal.metrics(&self.calls) {
            host.count(metric, by);
        }
        refusal.settle(&mut self.calls);
    }

    /// Rewrites the held list response (`body_size` bytes) to the entries this agent may use,
    /// and scans what the client will get. With `curate_lists`, a response that cannot be
    /// shown to be curated ([`Curation::Unreadable`]) is refused: its status and headers have
    /// already gone on (a 200 stays a 200), and the body becomes a JSON-RPC internal error
    /// ([`INTERNAL_ERROR`]) per request, as JSON or as one SSE `message` event, counted and
    /// audited as [`Stream::refuse_response`] does.
    fn curate_held(&mut self, host: &mut dyn Host, body_size: usize) {
        let (kind, ids, mut scanner) =
            match std::mem::replace(&mut self.response, ResponseMode::Pass) {
                ResponseMode::Hold { kind, ids, scanner } => (kind, ids, scanner),
                other => {
                    self.response = other;
                    return;
                }
            };
        let body = match host.response_body(0, body_size) {
            Ok(body) => body.unwrap_or_default(),
            // Not curated: refused like a list curation cannot read. Held only to learn
            // annotations: passed on as it came, its calls settled as `upstream_error`.
            Err(ReadError) if self.must_read(Some(kind)) => {
                self.response = ResponseMode::Scan(scanner); // finished unfed at the end
                return self.refuse_held(host, Unreadable::HostRead, body_size);
            }
            Err(ReadError) => return self.settle_unread(),
        };
        let must_read = self.must_read(Some(kind));
        let config = Rc::clone(&self.config);
        let pins = self.list_check(host, &config, kind);
        // Without curation the list is held only to learn annotations, or for tool pins.
        let keep = ListKeep {
            policy: &config.policy,
            agent: &self.facts.agent_id,
            kind,
            curate: config.curate_lists,
            pins: pins.as_ref(),
        };
        // Every tools/list held teaches the tools' Mcp-Param markings (`crate::params`).
        let mut stats = Rewrite {
            learn_params: kind == ListKind::Tools,
            ..Rewrite::default()
        };
        let curation = match self.response_kind {
            BodyKind::Json => curation::curate_json(&body, kind, &ids, &keep, &mut stats),
            BodyKind::EventStream => curation::curate_sse(&body, kind, &ids, &keep, &mut stats),
            BodyKind::Other => Curation::Unreadable(Unreadable::ContentType),
        };
        if self.config.annotations.is_some()
            && !annotations::learn(host.shared(), &self.facts.server_id, &stats.tools_seen)
        {
            log::warn!("mcp-guard: could not store the tools' annotations");
        }
        if !params::store::learn(host.shared(), &self.facts.server_id, &stats.params_seen) {
            log::warn!("mcp-guard: could not store the tools' Mcp-Param markings");
        }
        let mut curation = curation;
        // A list refused unread was never shown: nothing of it is learned or recorded.
        let shown = !must_read || !matches!(curation, Curation::Unreadable(_));
        if let (Some(check), true) = (&pins, shown) {
            let (drift, lost) = self.finish_list_check(host, check);
            for call in self.calls.iter_mut().filter(|c| {
                c.method.as_deref() == Some(crate::mcp::TOOLS_LIST)
                    && c.request_id.as_ref().is_some_and(|id| ids.contains(id))
            }) {
                call.add_drift(drift.iter().cloned());
            }
            if lost {
                // Another worker's first sighting of a tool won the race: decided again
                // against the stored pins (what is stored and counted stays from the first pass).
                if let Some(again) = self.list_check(host, &config, kind) {
                    let keep = ListKeep {
                        pins: Some(&again),
                        ..keep
                    };
                    let mut scratch = Rewrite::default();
                    curation = match self.response_kind {
                        BodyKind::Json => {
                            curation::curate_json(&body, kind, &ids, &keep, &mut scratch)
                        }
                        BodyKind::EventStream => {
                            curation::curate_sse(&body, kind, &ids, &keep, &mut scratch)
                        }
                        BodyKind::Other => Curation::Unreadable(Unreadable::ContentType),
                    };
                }
            }
        }
        let rewritten = match curation {
            Curation::Rewritten(new) => Some(new),
            Curation::Unchanged => None,
            // Held only to learn annotations: not curated, so passed on as it came.
            Curation::Unreadable(_) if !must_read => None,
            Curation::Unreadable(why) => {
                self.response = ResponseMode::Scan(scanner); // finished unfed at the end
                return self.refuse_held(host, why, body_size);
            }
        };
        if let Some(new) = &rewritten {
            host.set_response_body(body_size, new);
            host.count(Metric::ListRewrite(kind.array()), 1);
        }
        scanner.feed(rewritten.as_deref().unwrap_or(&body), &mut self.correlator);
        self.response = ResponseMode::Scan(scanner);
    }

    /// Looks at the server stream's new events: the legacy `endpoint` event names the session;
    /// each response whose (session, id) matches a call POSTed on another stream gets that
    /// call's outcome record.
    ///
    /// With `curate_lists`, the stream is passed on event by event (an incomplete trailing
    /// event is held back until it completes, up to [`curation::MAX_HELD_EVENT`]), so that a
    /// list response arriving here (the legacy transport's `tools/list`) is curated for the
    /// agent that asked for it.
    fn correlate(&mut self, host: &mut dyn Host, body_size: usize, end_of_stream: bool) {
        let chunk = match host.response_body(0, body_size) {
            Ok(chunk) => chunk.unwrap_or_default(),
            Err(ReadError) => return self.server_stream_unread(host, body_size, end_of_stream),
        };
        let ResponseMode::ServerStream(mut stream) =
            std::mem::replace(&mut self.response, ResponseMode::Pass)
        else {
            return;
        };
        self.correlate_in(host, &mut stream, chunk, body_size, end_of_stream);
        self.response = ResponseMode::ServerStream(stream);
    }

    /// [`Stream::correlate`] with the server stream's state taken out of the mode.
    fn correlate_in(
        &mut self,
        host: &mut dyn Host,
        stream: &mut ServerStream,
        chunk: Vec<u8>,
        body_size: usize,
        end_of_stream: bool,
    ) {
        // Event by event: for curation, and for tool pins (a `tools/list` answered here).
        let curating = self.must_read(None);
        let held_before = !stream.held.is_empty();
        let mut data = if curating && held_before {
            let mut d = std::mem::take(&mut stream.held);
            d.extend_from_slice(&chunk);
            d
        } else {
            chunk
        };
        // The start of an incomplete event too large to hold: passed on unexamined after the
        // complete events (never curated or refused: it is not a whole event).
        let mut oversize = Vec::new();
        if curating && !end_of_stream {
            let boundary = curation::complete_events(&data);
            let rest = data.split_off(boundary);
            if rest.len() > curation::MAX_HELD_EVENT {
                log::warn!("mcp-guard: an SSE event on a server stream is too large to hold");
                oversize = rest;
            } else {
                stream.held = rest;
            }
        }
        let mut rewritten = false;
        if curating && !stream.started && !data.is_empty() {
            // An event stream may start with a byte order mark, which SSE readers drop (WHATWG
            // HTML §9.2.6): dropped here too, so that curation reads the lines a client reads.
            stream.started = true;
            if let Some(rest) = data.strip_prefix("\u{feff}".as_bytes()) {
                data = rest.to_vec();
                rewritten = true;
            }
        }
        let mut answered: Vec<(Id, Outcome)> = Vec::new();
        let mut answer = |s: &Summary| {
            let id =
                s.id.as_deref()
                    .and_then(|raw| std::str::from_utf8(raw).ok())
                    .and_then(Id::from_raw);
            if let (Some(id), Some(outcome)) = (id, s.outcome()) {
                answered.push((id, outcome));
            }
        };
        stream.scanner.feed_each(&data, &mut answer);
        stream.scanner.feed_each(&oversize, &mut answer);
        if self.facts.session_id.is_none() {
            self.facts.session_id = stream
                .scanner
                .take_text_event()
                .and_then(|uri| correlation::session_from_uri(&uri));
        }
        let lists = match self.facts.session_id.clone() {
            Some(session) => self.claim_answered(host, &session, answered),
            None => Vec::new(),
        };
        if curating {
            if let Some(body) = self.curate_server_stream(host, &data, &lists) {
                data = body;
                rewritten = true;
            }
            // `notifications/resources/updated` after `resources/subscribe` (before
            // 2026-07-28) rides this stream: dropped for a resource the agent may not read, as
            // on a listen stream.
            let curated = if !self.config.curate_lists {
                curation::ListenCuration::default()
            } else {
                let policy = &self.config.policy;
                let agent = self.facts.agent_id.as_str();
                let may_read = |uri: &str| may_use(policy, agent, ListKind::Resources, uri);
                curation::curate_listen_events(&data, &may_read)
            };
            if let Some(body) = curated.body {
                data = body;
                rewritten = true;
            }
        }
        if curating && (held_before || rewritten || !stream.held.is_empty()) {
            data.extend_from_slice(&oversize);
            host.set_response_body(body_size, &data);
        }
    }

    /// Curates the list responses among a server stream's complete events `data` for the
    /// agents that asked (`lists`: kind, id, agent); returns the new events if any changed.
    /// A list response that cannot be read is refused: its calls are settled `upstream_error`.
    fn curate_server_stream(
        &mut self,
        host: &mut dyn Host,
        data: &[u8],
        lists: &[(ListKind, Id, String)],
    ) -> Option<Vec<u8>> {
        let config = Rc::clone(&self.config);
        let checks: Vec<Option<ListCheck<'_>>> = lists
            .iter()
            .map(|(kind, _, _)| self.list_check(host, &config, *kind))
            .collect();
        let curated = {
            let keeps: Vec<ListKeep<'_>> = lists
                .iter()
                .zip(&checks)
                .map(|((kind, _, agent), pins)| ListKeep {
                    policy: &config.policy,
                    agent,
                    kind: *kind,
                    curate: config.curate_lists,
                    pins: pins.as_ref(),
                })
                .collect();
            let claimed: Vec<Claimed<'_>> = lists
                .iter()
                .zip(&keeps)
                .map(|((kind, id, _), keep)| Claimed {
                    kind: *kind,
                    id: id.clone(),
                    keep: keep as &dyn curation::Keep,
                })
                .collect();
            let refusal =
                |why: Unreadable| jsonrpc::error_response(None, INTERNAL_ERROR, why.message());
            curation::curate_server_stream(data, &claimed, &refusal)
        };
        if !curated.params_seen.is_empty() {
            let seen: Vec<(Cow<'_, str>, params::Learned)> = curated
                .params_seen
                .iter()
                .map(|(name, learned)| (Cow::Borrowed(name.as_str()), learned.clone()))
                .collect();
            if !params::store::learn(host.shared(), &self.facts.server_id, &seen) {
                log::warn!("mcp-guard: could not store the tools' Mcp-Param markings");
            }
        }
        for why in &curated.refused {
            for (metric, by) in Refusal::Response(*why).metrics(&[]) {
                host.count(metric, by);
            }
        }
        let mut refused_calls = false;
        // The reason of a refused event among these (an unreadable event's id cannot be
        // trusted, so the refused list calls take the first one).
        let reason = curated
            .refused
            .first()
            .copied()
            .unwrap_or(Unreadable::Shape);
        let mut drifted = false;
        for (j, (kind, id, _)) in lists.iter().enumerate() {
            if curated.rewritten.contains(&j) {
                host.count(Metric::ListRewrite(kind.array()), 1);
                if let Some(Some(check)) = checks.get(j) {
                    // A lost first-sighting race is not checked again here: the event has
                    // gone into the rewritten run; calls are checked against the stored pin.
                    let (drift, _) = self.finish_list_check(host, check);
                    drifted |= !drift.is_empty();
                    for call in self
                        .calls
                        .iter_mut()
                        .filter(|c| c.origin.is_some() && c.request_id.as_ref() == Some(id))
                    {
                        call.add_drift(drift.iter().cloned());
                    }
                }
                continue;
            }
            // Its response was refused: the agent never got it.
            for call in self
                .calls
                .iter_mut()
                .filter(|c| c.origin.is_some() && c.request_id.as_ref() == Some(id))
            {
                call.output_status = Some(OutputStatus::UpstreamError);
                call.error_code = Some(i64::from(INTERNAL_ERROR));
                call.refusal = Some(reason.reason());
                refused_calls = true;
            }
        }
        if refused_calls || drifted {
            self.write_audit(host);
        }
        curated.body
    }

    /// Claims the pending calls these responses answer and records their outcomes; returns the
    /// list requests among them answered with a `result` (kind, id, agent), whose responses
    /// are to be curated.
    fn claim_answered(
        &mut self,
        host: &mut dyn Host,
        session: &str,
        answered: Vec<(Id, Outcome)>,
    ) -> Vec<(ListKind, Id, String)> {
        let now = host.now_ms();
        let mut found = false;
        let mut lists = Vec::new();
        for (id, outcome) in answered {
            if let Some(pending) = correlation::claim(host.shared(), session, &id, now) {
                let result = !matches!(outcome, Outcome::Error(_));
                if let Some(kind) = pending.method.as_deref().and_then(ListKind::of) {
                    if result {
                        lists.push((kind, id.clone(), pending.agent_id.clone()));
                    }
                }
                let (mut call, origin) = pending.into_call();
                let (status, code) = settle(outcome);
                call.output_status = Some(status);
                call.error_code = code;
                call.origin = Some(Box::new(origin));
                self.calls.push(call);
                found = true;
            }
        }
        if found {
            self.write_audit(host);
        }
        lists
    }
}

/// The keep decision of a held or server-stream list: tool pins first (each entry is checked and
/// recorded whatever the policy says of it), then, with `curate_lists`, the policy for `agent`.
struct ListKeep<'a> {
    policy: &'a Policy,
    agent: &'a str,
    kind: ListKind,
    curate: bool,
    pins: Option<&'a ListCheck<'a>>,
}

impl curation::Keep for ListKeep<'_> {
    fn keep(&self, name: &str, entry: &str) -> bool {
        let pinned = match self.pins {
            Some(check) if self.kind == ListKind::Tools => check.entry(name, entry),
            _ => true,
        };
        pinned && (!self.curate || may_use(self.policy, self.agent, self.kind, name))
    }
}

/// Whether `agent` may use the list entry `name` (so a curated list shows it); a
/// `dry_run_deny` entry stays visible.
fn may_use(policy: &Policy, agent: &str, kind: ListKind, name: &str) -> bool {
    let subject = match kind {
        ListKind::Tools => Subject::Tool(name),
        ListKind::Prompts => Subject::Prompt(name),
        ListKind::Resources => Subject::Resource(name),
    };
    !policy.decide(agent, subject).blocks()
}

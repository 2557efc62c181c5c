//! The request path of a [`Stream`], in callback order: request headers, request body (or
//! trailers), and the RLS's answer. Each enacts a [`crate::verdict`] decision.

use super::{Curate, RequestPhase, ResponseMode, SessionFrom, Stream};
use crate::annotations;
use crate::audit::{self, Call};
use crate::correlation::{self, Pending};
use crate::curation::ToolHints;
use crate::host::{Action, Host, ReadError};
use crate::identity::{self, IdentityError, Presented, Source};
use crate::metrics::Metric;
use crate::params::{self, ToolParams};
use crate::policy::Decision;
use crate::ratelimit;
use crate::response::Correlator;
use crate::rounds;
use crate::routing;
use crate::verdict::{self, AtHeaders, AtHeadersFacts, Forward, Identity, Known, Refusal, Verdict};
use crate::version;
use std::rc::Rc;

/// [`verdict::Lookups`] over the host's shared data, for the server `server_id`.
struct SharedLookups<'h, 's> {
    host: &'h mut dyn Host,
    server_id: &'s str,
}

impl verdict::Lookups for SharedLookups<'_, '_> {
    fn tool_hints(&mut self, tool: &str) -> Result<Option<ToolHints>, ReadError> {
        annotations::lookup(self.host.shared(), self.server_id, tool)
    }

    fn tool_params(&mut self, tool: &str) -> Result<Option<ToolParams>, ReadError> {
        params::store::lookup(self.host.shared(), self.server_id, tool)
    }

    fn claim_round(&mut self, link: &str) -> Result<Option<u32>, ReadError> {
        let now = self.host.now_ms();
        let claimed = rounds::claim(self.host.shared(), link, now);
        if claimed.is_err() {
            log::warn!("mcp-guard: could not read the open rounds; the retry counts as new");
        }
        claimed
    }

    fn tool_def(&mut self, tool: &str) -> Result<Option<crate::pins::Def>, ReadError> {
        let def = crate::pins::def(self.host.shared(), self.server_id, tool);
        if def.is_err() {
            log::warn!("mcp-guard: could not read the tools' definitions (tool pins)");
        }
        def
    }
}

impl Stream {
    /// Request headers callback.
    pub fn on_request_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Action {
        let config = Rc::clone(&self.config);
        self.facts.start_ms = host.now_ms();
        self.facts.policy_name = config.policy.name.clone();
        self.facts.policy_version = config.policy.version.clone();
        let Ok(headers) = host.request_headers() else {
            let what = "request headers";
            return self.refuse_unread(host, what);
        };
        self.facts.http_method = headers.first(":method").unwrap_or_default().to_owned();
        let resolved = config.identity.resolve(|source| match source {
            Source::Header(name) => headers.presented(name),
            _ => match source.property_path().map(|path| host.property(&path)) {
                Some(Ok(Some(value))) => Presented::Value(value),
                Some(Ok(None)) | None => Presented::Absent,
                Some(Err(ReadError)) => Presented::Unreadable,
            },
        });
        self.facts.identity_source = resolved.source;
        self.facts.identity_error = resolved.error;
        // Streamable HTTP: the Mcp-Session-Id header. Legacy HTTP+SSE: the POST URI's
        // sessionId / session_id query parameter.
        self.facts.session_id = headers.first("mcp-session-id").map(str::to_owned);
        if self.facts.session_id.is_none() {
            self.facts.session_id = headers
                .first(":path")
                .and_then(correlation::session_from_uri);
            if self.facts.session_id.is_some() {
                self.session_from = SessionFrom::LegacyUri;
            }
        }
        self.facts.trace_id = headers
            .first("traceparent")
            .and_then(audit::trace_id_from_traceparent)
            .or_else(|| headers.first("x-request-id"))
            .map(str::to_owned);
        self.facts.server_id = config
            .server_id
            .clone()
            .or_else(|| host.upstream_cluster())
            .unwrap_or_else(|| "unknown".to_owned());

        // Client-sent copies of the tags go. The agent tag is replaced below; a replace may
        // leave further copies of a repeated header (Envoy's `setCopy` without the runtime
        // feature `http_set_copy_replace_all_headers`), so a repeated one is removed first.
        let param_tags = config.param_tags.headers();
        for name in config.headers.all().into_iter().chain(param_tags) {
            let present = if name == config.headers.agent_id {
                headers.only(name).is_none() && headers.has(name)
            } else {
                headers.has(name)
            };
            if present {
                host.set_request_header(name, None);
            }
        }
        // The response must be readable to learn each call's outcome: ask the server for an
        // uncompressed body. (Envoy's compressor filter, placed before mcp-guard, has already
        // read the client's Accept-Encoding and compresses for the client on the way back.)
        if headers.only("accept-encoding") != Some("identity") {
            host.set_request_header("accept-encoding", Some("identity"));
        }
        let identified = match (resolved.error, resolved.agent_id) {
            // A source could not be read: fail closed, whatever the fallback. "Could not read
            // it" is not "nothing there".
            (Some(IdentityError::Unreadable), _) => false,
            (_, None) => false,
            (_, Some(agent_id)) => {
                // The agent tag: left alone when the client's one copy already is the identity
                // (a replace costs a hostcall and a route-cache clear in Envoy), replaced
                // otherwise.
                if headers.only(&config.headers.agent_id) != Some(agent_id.as_str()) {
                    host.set_request_header(&config.headers.agent_id, Some(&agent_id));
                }
                self.facts.agent_id = agent_id;
                true
            }
        };
        if self.is_post() {
            self.routing_headers = routing::RoutingHeaders {
                method: headers.values(routing::MCP_METHOD),
                name: headers.values(routing::MCP_NAME),
                version: Vec::new(),
            };
            // MCP 2026-07-28 `Mcp-Param-*` headers, checked against the body's arguments.
            self.param_headers = headers
                .pairs()
                .iter()
                .filter(|(name, _)| name.starts_with(params::HEADER_PREFIX))
                .cloned()
                .collect();
        }
        // Every request: a GET or DELETE claiming 2026-07-28 is answered 405.
        self.routing_headers.version = headers.values(version::HEADER);
        let identity = match (identified, resolved.error) {
            (true, _) => Identity::Agent(&self.facts.agent_id),
            (false, Some(IdentityError::Unreadable)) => Identity::Unreadable,
            (false, _) => Identity::Unidentified,
        };
        let facts = AtHeadersFacts {
            identity,
            http_method: &self.facts.http_method,
            has_body: !end_of_stream,
            encoded: headers.encoded(),
            routing: &self.routing_headers,
        };
        match verdict::at_headers(&config, &facts) {
            AtHeaders::Refuse(refusal) => {
                if !identified {
                    self.facts.agent_id = identity::UNIDENTIFIED.to_owned();
                }
                self.refuse_request(host, refusal)
            }
            AtHeaders::Pass => {
                // GET (server stream), DELETE (end session) and other methods pass through,
                // audited.
                self.calls.push(Call::bare(Decision::Allow));
                self.request = RequestPhase::Forwarded { curate: None };
                Action::Continue
            }
            AtHeaders::Examine => {
                if !self.is_post() {
                    // Only a POST may carry JSON-RPC; any other body is looked at first.
                    self.calls.push(Call::bare(Decision::Allow));
                }
                self.request = RequestPhase::AwaitingBody { size: 0 };
                self.hold_headers()
            }
            AtHeaders::Stream(tags) => {
                for (tag, value) in tags {
                    host.set_request_header(tag, Some(&value));
                }
                self.request = RequestPhase::Streaming {
                    streamed: Vec::new(),
                    size: 0,
                };
                Action::Continue
            }
        }
    }

    /// What the request-headers callback returns for a request whose body is to be examined:
    /// pause (the body callbacks then see the body buffered, and tags can still be set), or,
    /// with `hold_request_headers: false`, continue (the body callbacks hold the body).
    fn hold_headers(&self) -> Action {
        if self.config.hold_request_headers {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    /// Request body callback; `body_size` is the size buffered so far (streamed: of this
    /// chunk).
    pub fn on_request_body(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        let streamed_len = match &mut self.request {
            RequestPhase::AwaitingBody { size } => {
                *size = body_size;
                0
            }
            RequestPhase::Streaming { streamed, size } => {
                *size = body_size;
                streamed.len()
            }
            _ => return Action::Continue,
        };
        // Buffered, `body_size` is the whole body so far; streamed, this chunk after the rest.
        if streamed_len.saturating_add(body_size) > self.config.max_body_bytes {
            let max = self.config.max_body_bytes;
            return self.refuse_request(host, Refusal::TooLarge { max });
        }
        if end_of_stream {
            return self.decide(host);
        }
        match &mut self.request {
            RequestPhase::Streaming { streamed, .. } => {
                // Passed on now; kept for the check at the end of the body.
                match host.request_body(body_size) {
                    Ok(chunk) => streamed.extend_from_slice(&chunk.unwrap_or_default()),
                    Err(ReadError) => return self.refuse_unread(host, "request body"),
                }
                Action::Continue
            }
            _ => Action::Pause,
        }
    }

    /// Request trailers callback: with HTTP/2 trailers the body callback never sees
    /// `end_of_stream`, so the decision is made here.
    pub fn on_request_trailers(&mut self, host: &mut dyn Host) -> Action {
        match &mut self.request {
            RequestPhase::Streaming { size, .. } => {
                *size = 0; // every chunk is in `streamed`
                self.decide(host)
            }
            RequestPhase::AwaitingBody { .. } => self.decide(host),
            _ => Action::Continue,
        }
    }

    /// The end of the request body: reads it and enacts [`verdict::decide`].
    fn decide(&mut self, host: &mut dyn Host) -> Action {
        let (size, streamed, was_streamed) =
            match std::mem::replace(&mut self.request, RequestPhase::Abandoned) {
                RequestPhase::AwaitingBody { size } => (size, Vec::new(), false),
                RequestPhase::Streaming { streamed, size } => (size, streamed, true),
                other => {
                    self.request = other;
                    return Action::Continue;
                }
            };
        let mut bytes = match host.request_body(size) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(ReadError) => return self.refuse_unread(host, "request body"),
        };
        if !streamed.is_empty() {
            let mut all = streamed;
            all.extend_from_slice(&bytes);
            bytes = all;
        }
        let config = Rc::clone(&self.config);
        let known = Known {
            agent_id: &self.facts.agent_id,
            http_method: &self.facts.http_method,
            routing: &self.routing_headers,
            streamed: was_streamed,
            params: &self.param_headers,
            server_id: &self.facts.server_id,
        };
        let mut lookups = SharedLookups {
            host: &mut *host,
            server_id: &self.facts.server_id,
        };
        match verdict::decide(&config, &known, &bytes, &mut lookups) {
            Verdict::Pass => {
                self.request = RequestPhase::Forwarded { curate: None };
                Action::Continue
            }
            Verdict::Refuse { refusal, calls } => {
                self.adopt(host, calls);
                self.refuse(host, refusal)
            }
            Verdict::Forward(forward) => {
                let curate = self.prepare(host, forward);
                self.forwarded(host, curate);
                Action::Continue
            }
            Verdict::AskRls {
                forward,
                descriptors,
            } => {
                let curate = self.prepare(host, forward);
                let Some(rls) = &config.rate_limit_service else {
                    self.forwarded(host, curate);
                    return Action::Continue;
                };
                let call = host.grpc_call(
                    rls.grpc_service(),
                    ratelimit::SERVICE,
                    ratelimit::METHOD,
                    &rls.request(&descriptors),
                    rls.timeout_ms,
                );
                match call {
                    Some(token) => {
                        self.request = RequestPhase::WaitingRls { token, curate };
                        Action::Pause
                    }
                    None => match self.rls_failed(host, "the gRPC call could not be started") {
                        Some(action) => action,
                        None => {
                            self.forwarded(host, curate);
                            Action::Continue
                        }
                    },
                }
            }
        }
    }

    /// Takes on an allowed request's calls (counted), sets its tags and expects its
    /// responses; returns the curation its response needs.
    fn prepare(&mut self, host: &mut dyn Host, forward: Forward<'_>) -> Curate {
        self.adopt(host, forward.calls);
        for (name, value) in &forward.tags {
            host.set_request_header(name, Some(value));
        }
        self.correlator = Correlator::new(forward.expected);
        forward.curation
    }

    /// The answer to a gRPC call this stream started: `status` is the gRPC status (0: OK),
    /// `message` the response message. Only the pending RLS call is expected; anything else
    /// is ignored.
    ///
    /// OK from the RLS → the request is forwarded. `OVER_LIMIT` → HTTP 429 with a JSON-RPC
    /// error per request ([`super::RATE_LIMITED`]) and `Retry-After`. No usable answer (an
    /// error status such as UNAVAILABLE or DEADLINE_EXCEEDED, or an unreadable message) →
    /// refused with HTTP 500 under `failure_mode_deny`, forwarded otherwise.
    pub fn on_grpc_response(
        &mut self,
        host: &mut dyn Host,
        token: u32,
        status: u32,
        message: Option<&[u8]>,
    ) {
        if matches!(self.response, ResponseMode::Done) {
            return; // the stream ended while it waited
        }
        let curate = match std::mem::replace(&mut self.request, RequestPhase::Abandoned) {
            RequestPhase::WaitingRls { token: t, curate } if t == token => curate,
            other => {
                self.request = other;
                return;
            }
        };
        let answer = if status == 0 {
            ratelimit::verdict(message.unwrap_or_default())
        } else {
            Err(format!("gRPC status {status}"))
        };
        match answer {
            Ok(ratelimit::Verdict::Allow) => self.forward(host, curate),
            Ok(ratelimit::Verdict::OverLimit { retry_after_s }) => {
                let retry_after_s = Some(retry_after_s);
                self.refuse(host, Refusal::RateLimited { retry_after_s });
            }
            Err(why) => {
                if self.rls_failed(host, &why).is_none() {
                    self.forward(host, curate);
                }
            }
        }
    }

    /// The RLS could not be asked or did not answer usably: counted; under
    /// `failure_mode_deny` refused ([`verdict::rls_failed`]) and the callback's action
    /// returned, else `None` (forward it).
    fn rls_failed(&mut self, host: &mut dyn Host, why: &str) -> Option<Action> {
        log::warn!("mcp-guard: rate limit service: {why}");
        host.count(Metric::RlsError, 1);
        let refusal = verdict::rls_failed(&self.config)?;
        Some(self.refuse(host, refusal))
    }

    /// Lets a request that waited for the RLS go on.
    fn forward(&mut self, host: &mut dyn Host, curate: Curate) {
        self.forwarded(host, curate);
        host.resume_request();
    }

    /// The request is going to the upstream: what must happen before its response can come.
    fn forwarded(&mut self, host: &mut dyn Host, curate: Curate) {
        self.request = RequestPhase::Forwarded { curate };
        if self.session_from == SessionFrom::LegacyUri {
            // Legacy HTTP+SSE: the response will come on the GET stream, possibly before this
            // POST's own `202 Accepted` has passed back through here. Store the calls now.
            let session = self.facts.session_id.as_deref().unwrap_or_default();
            let requests = self
                .calls
                .iter()
                .filter(|c| c.method.is_some() && c.request_id.is_some());
            let pending: Vec<Pending> = requests
                .filter_map(|c| Pending::new(session, &self.facts, c))
                .collect();
            super::store_all(host, &pending);
        }
    }

    /// A request-side host read failed (the request headers, or the body): refused, never
    /// forwarded unexamined ([`Refusal::RequestUnread`]).
    fn refuse_unread(&mut self, host: &mut dyn Host, what: &'static str) -> Action {
        log::warn!("mcp-guard: could not read the {what}; request refused");
        if self.facts.agent_id.is_empty() {
            self.facts.agent_id = identity::UNIDENTIFIED.to_owned();
        }
        self.refuse_request(host, Refusal::RequestUnread { what })
    }

    /// Refuses the whole request before (or instead of) evaluating its calls: one record.
    fn refuse_request(&mut self, host: &mut dyn Host, refusal: Refusal) -> Action {
        let calls = refusal.request_call().into_iter().collect();
        self.adopt(host, calls);
        self.refuse(host, refusal)
    }
}

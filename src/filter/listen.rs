//! The response path of a `subscriptions/listen` POST (MCP 2026-07-28, "Subscriptions",
//! SEP-2575): its response is a long-lived `text/event-stream` carrying
//! `notifications/subscriptions/acknowledged`, the `notifications/*/list_changed` and
//! `notifications/resources/updated` notifications the client asked for, and, when the server
//! ends the subscription gracefully, the listen request's own response. With `curate_lists`
//! it is passed on event by event as it arrives ([`ResponseMode::Listen`]); a
//! `notifications/resources/updated` event about a resource the agent may not read is dropped
//! ([`curation::curate_listen_events`]), and the acknowledgement no longer lists those
//! resources among its `resourceSubscriptions`. The stream is never held: at most one incomplete
//! event (up to [`curation::MAX_HELD_EVENT`] bytes) waits for its end; a longer event is
//! dropped whole, since it cannot be checked.
//!
//! The listen call's audit record settles when the stream ends: `success` when the server
//! ended the subscription with its result, or when the client closed an acknowledged
//! subscription (the usual way a subscription ends); `error` with a JSON-RPC error;
//! `client_disconnected` when the client left before the acknowledgement; `upstream_error`
//! when the upstream reset it.

use super::{ListenStream, ResponseMode, Stream};
use crate::audit::OutputStatus;
use crate::curation;
use crate::host::{Action, Headers, Host, ReadError};
use crate::mcp;
use crate::policy::Subject;
use crate::response::{BodyKind, ResponseScanner};

impl Stream {
    /// Whether the request forwarded is a `subscriptions/listen` (its response is a listen
    /// stream to curate).
    pub(super) fn listens(&self) -> bool {
        self.calls
            .iter()
            .any(|c| c.method.as_deref() == Some(mcp::SUBSCRIPTIONS_LISTEN) && !c.decision.blocks())
    }

    /// The response headers of a `subscriptions/listen` POST, with `curate_lists`, before its
    /// body: a `text/event-stream` (exactly one `content-type`, UTF-8, no `content-encoding`)
    /// is curated as a listen stream (its `content-length`, if any, removed); an
    /// `application/json` answer (an error, or an immediate end) is one finite message, only
    /// scanned; a `202 Accepted` has no answer in it and its body is dropped; any other
    /// response cannot be read and is refused ([`Stream::refuse_response`]), never forwarded
    /// unread.
    pub(super) fn listen_headers(
        &mut self,
        host: &mut dyn Host,
        headers: &Headers,
        status: Option<u32>,
    ) -> Action {
        if status == Some(202) {
            self.response = ResponseMode::Discard;
            host.set_response_header("content-length", None);
            return Action::Continue;
        }
        match curation::curatable_kind(&headers.values("content-type"), headers.encoded()) {
            Ok(BodyKind::EventStream) => {
                self.response_kind = BodyKind::EventStream;
                host.set_response_header("content-length", None);
                self.response = ResponseMode::Listen(ListenStream {
                    scanner: ResponseScanner::new(BodyKind::EventStream),
                    held: Vec::new(),
                    skipping: None,
                    started: false,
                    acknowledged: false,
                });
                Action::Continue
            }
            Ok(kind) => {
                self.response_kind = kind;
                self.response = ResponseMode::Scan(ResponseScanner::new(kind));
                Action::Continue
            }
            Err(why) => self.refuse_response(host, why, status, false),
        }
    }

    /// One chunk (`body_size` bytes) of a listen stream: the complete events among what is
    /// held and this chunk are curated and passed on, an incomplete trailing event is held
    /// back (all of it is curated at the end of the stream), and the listen request's outcome
    /// is read from what the client gets. A chunk that cannot be read refuses the stream from
    /// here on (`Unreadable::HostRead`): its notifications cannot be checked.
    pub(super) fn listen_chunk(&mut self, host: &mut dyn Host, body_size: usize, end: bool) {
        let chunk = match host.response_body(0, body_size) {
            Ok(chunk) => chunk.unwrap_or_default(),
            Err(ReadError) => return self.server_stream_unread(host, body_size, end),
        };
        let ResponseMode::Listen(mut listen) =
            std::mem::replace(&mut self.response, ResponseMode::Pass)
        else {
            return;
        };
        let mut data = std::mem::take(&mut listen.held);
        data.extend_from_slice(&chunk);
        let mut dropped = 0;
        if let Some(tail) = listen.skipping.take() {
            // The rest of an event too large to hold: dropped up to its end.
            let mut rest = tail;
            rest.extend_from_slice(&data);
            match curation::first_event_end(&rest) {
                Some(after) => {
                    data = rest.split_off(after);
                    dropped += 1;
                }
                None if end => {
                    data.clear();
                    dropped += 1;
                }
                None => {
                    listen.skipping = Some(curation::skipped_tail(&rest));
                    data.clear();
                }
            }
        }
        if !end {
            let rest = data.split_off(curation::complete_events(&data));
            if rest.len() > curation::MAX_HELD_EVENT {
                log::warn!(
                    "mcp-guard: an SSE event on a listen stream is too large to check; dropped"
                );
                listen.skipping = Some(curation::skipped_tail(&rest));
            } else {
                listen.held = rest;
            }
        }
        if !listen.started && !data.is_empty() {
            // SSE readers drop a byte order mark at the start of the stream (WHATWG HTML
            // §9.2.6): dropped here too, so that curation reads the lines a client reads.
            listen.started = true;
            if let Some(rest) = data.strip_prefix("\u{feff}".as_bytes()) {
                data = rest.to_vec();
            }
        }
        let curated = {
            let policy = &self.config.policy;
            let agent = self.facts.agent_id.as_str();
            let may_read = |uri: &str| !policy.decide(agent, Subject::Resource(uri)).blocks();
            curation::curate_listen_events(&data, &may_read)
        };
        dropped += curated.dropped;
        listen.acknowledged |= curated.acknowledged;
        if dropped > 0 {
            log::debug!("mcp-guard: {dropped} event(s) dropped from a listen stream");
        }
        let out = curated.body.unwrap_or(data);
        listen.scanner.feed(&out, &mut self.correlator);
        if out != chunk {
            host.set_response_body(body_size, &out);
        }
        self.response = ResponseMode::Listen(listen);
    }

    /// The client closed the stream (the way it ends a subscription, "Subscriptions /
    /// Cancellation"): a listen call whose subscription was acknowledged and has no outcome
    /// yet is settled `success`, as a server stream the client closes is.
    pub(super) fn listen_closed_by_client(&mut self) {
        let ResponseMode::Listen(listen) = &self.response else {
            return;
        };
        if !listen.acknowledged {
            return;
        }
        for call in self.calls.iter_mut().filter(|c| {
            c.output_status.is_none() && c.method.as_deref() == Some(mcp::SUBSCRIPTIONS_LISTEN)
        }) {
            call.output_status = Some(OutputStatus::Success);
        }
    }
}

//! Incremental Server-Sent Events scanner (WHATWG HTML Living Standard, §9.2.6 "Interpreting an
//! event stream"), as used by MCP Streamable HTTP responses (`text/event-stream`).
//!
//! The scanner is fed body chunks as Envoy delivers them and never holds an event: the value of
//! each `data:` line is handed to an [`EventSink`] piece by piece, so memory stays constant
//! whatever the size of an event (tool results of tens of megabytes occur). It handles:
//! - events split anywhere across chunks, including between `\r` and `\n`;
//! - LF, CRLF and CR line endings (Python SDK: CRLF; TypeScript SDK: LF);
//! - comment lines (`: ping`), `event:`, `id:` and `retry:` fields (skipped), fields without a
//!   colon, and empty priming events (`id: X` + `data:` with no value).
//!
//! It also splits held bodies into complete events ([`split_lines`], [`events`],
//! [`event_data`], [`complete_events`]) for curation, which rewrites events in place: the one
//! SSE grammar of mcp-guard, in one module.

use std::borrow::Cow;

/// Receives the `data` of SSE events as the scanner finds it.
pub trait EventSink {
    /// A piece of the value of a `data:` line (the one optional leading space removed).
    fn data(&mut self, bytes: &[u8]);
    /// The rest of a chunk from inside the value of a `data:` line: the value runs to the
    /// first `\n` or `\r` of `rest`, or to its end. The sink takes the value and returns the
    /// offset of that line end in `rest` (`None`: all of `rest` is value).
    ///
    /// The default finds the line end with a byte search and hands the value to
    /// [`EventSink::data`]. A sink that reads every byte of the value anyway can override it
    /// and find the line end in the same pass, so a large event is read once, not twice.
    fn data_to_line_end(&mut self, rest: &[u8]) -> Option<usize> {
        let end = memchr::memchr2(b'\n', b'\r', rest);
        self.data(rest.get(..end.unwrap_or(rest.len())).unwrap_or_default());
        end
    }
    /// The end of one `data:` line; the standard joins data lines with `\n`.
    fn data_line_end(&mut self);
    /// A blank line ended an event that had at least one `data:` line.
    fn dispatch(&mut self);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Data,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the first byte of a line.
    LineStart,
    /// Reading a field name.
    Name,
    /// Just after the colon: one leading space is dropped.
    ValueStart(Field),
    /// Inside a field value.
    Value(Field),
    /// Inside a comment line.
    Comment,
}

/// The field whose values make an event's data (WHATWG HTML §9.2.6), for both parsers here.
const DATA: &[u8] = b"data";

/// Field names longer than this are not `data` and are skipped.
const MAX_FIELD_NAME: usize = 8;

/// The scanner state; constant size.
#[derive(Debug, Clone)]
pub struct SseScanner {
    state: State,
    name: [u8; MAX_FIELD_NAME],
    name_len: usize,
    name_overflow: bool,
    after_cr: bool,
    event_has_data: bool,
    events: u64,
}

impl Default for SseScanner {
    fn default() -> Self {
        SseScanner {
            state: State::LineStart,
            name: [0; MAX_FIELD_NAME],
            name_len: 0,
            name_overflow: false,
            after_cr: false,
            event_has_data: false,
            events: 0,
        }
    }
}

fn is_newline(b: u8) -> bool {
    b == b'\n' || b == b'\r'
}

impl SseScanner {
    /// A scanner at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of events dispatched so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Scans one body chunk.
    pub fn feed(&mut self, chunk: &[u8], sink: &mut impl EventSink) {
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some((b'\n', tail)) = rest.split_first() {
                rest = tail;
            }
        }
        while let Some((&b, tail)) = rest.split_first() {
            if is_newline(b) {
                self.end_line(sink);
                rest = tail;
                if b == b'\r' {
                    match rest.split_first() {
                        Some((b'\n', t)) => rest = t,
                        None => self.after_cr = true,
                        Some(_) => {}
                    }
                }
                continue;
            }
            match self.state {
                State::ValueStart(field) => {
                    // Drop the single optional space after the colon.
                    self.state = State::Value(field);
                    if b == b' ' {
                        rest = tail;
                    }
                }
                State::Value(Field::Data) => {
                    // Only a line end is taken as one: a sink that answers anything else has
                    // taken the whole rest, and the scanner cannot stall on its answer.
                    let end = sink
                        .data_to_line_end(rest)
                        .filter(|&end| rest.get(end).is_some_and(|&b| is_newline(b)))
                        .unwrap_or(rest.len());
                    rest = rest.get(end..).unwrap_or_default();
                }
                State::Value(Field::Other) | State::Comment => {
                    let end = memchr::memchr2(b'\n', b'\r', rest).unwrap_or(rest.len());
                    rest = rest.get(end..).unwrap_or_default();
                }
                State::LineStart if b == b':' => {
                    self.state = State::Comment;
                    rest = tail;
                }
                State::LineStart | State::Name => {
                    if self.state == State::LineStart {
                        self.name_len = 0;
                        self.name_overflow = false;
                        self.state = State::Name;
                    }
                    if b == b':' {
                        self.state = State::ValueStart(self.field());
                    } else if let Some(slot) = self.name.get_mut(self.name_len) {
                        *slot = b;
                        self.name_len += 1;
                    } else {
                        self.name_overflow = true;
                    }
                    rest = tail;
                }
            }
        }
    }

    /// Ends the stream. An event still open (no final blank line) is dispatched if it carried
    /// data: the standard would discard it, but an observer must not lose a response that a
    /// lenient client may still accept.
    pub fn finish(&mut self, sink: &mut impl EventSink) {
        if self.state != State::LineStart {
            self.end_line(sink);
        }
        if self.event_has_data {
            self.event_has_data = false;
            self.events += 1;
            sink.dispatch();
        }
        self.after_cr = false;
    }

    fn field(&self) -> Field {
        if !self.name_overflow && self.name.get(..self.name_len) == Some(DATA) {
            Field::Data
        } else {
            Field::Other
        }
    }

    fn end_line(&mut self, sink: &mut impl EventSink) {
        match self.state {
            State::LineStart => {
                if self.event_has_data {
                    self.event_has_data = false;
                    self.events += 1;
                    sink.dispatch();
                }
            }
            State::Name => {
                // A line with no colon is a field with an empty value.
                if self.field() == Field::Data {
                    self.event_has_data = true;
                    sink.data_line_end();
                }
            }
            State::ValueStart(Field::Data) | State::Value(Field::Data) => {
                self.event_has_data = true;
                sink.data_line_end();
            }
            State::ValueStart(Field::Other) | State::Value(Field::Other) | State::Comment => {}
        }
        self.state = State::LineStart;
    }
}

// Complete-event splitting: a held body (a curated list response, or the complete events a
// server stream holds back) read line by line, with every byte kept so that events can be
// rewritten in place. Same grammar as [`SseScanner`]: LF, CRLF or CR line ends, a blank line
// ends an event, `data` lines' values (one leading space dropped) joined with LF.

/// One line of a complete event stream and its ending (`\n`, `\r\n`, `\r` or empty).
pub type Line<'a> = (&'a [u8], &'a [u8]);

/// Splits a body into (line, line ending) pairs on LF, CRLF or CR (WHATWG HTML §9.2.6); the
/// ending is empty only for a last line without one. Concatenating the pairs gives `body` back.
pub fn split_lines(body: &[u8]) -> Vec<Line<'_>> {
    let mut lines = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        match memchr::memchr2(b'\n', b'\r', rest) {
            None => {
                lines.push((rest, &[][..]));
                break;
            }
            Some(i) => {
                let ending_len = if rest.get(i) == Some(&b'\r') && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                let (line, after) = rest.split_at(i);
                let (ending, next) = after.split_at(ending_len.min(after.len()));
                lines.push((line, ending));
                rest = next;
            }
        }
    }
    lines
}

/// The events of a split body: each one's lines up to and including the blank line that ends
/// it (the last may have none).
pub fn events<'l, 'a>(lines: &'l [Line<'a>]) -> impl Iterator<Item = &'l [Line<'a>]> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= lines.len() {
            return None;
        }
        let end = lines
            .iter()
            .skip(start)
            .position(|(line, _)| line.is_empty())
            .map_or(lines.len(), |p| start + p + 1);
        let event = lines.get(start..end);
        start = end;
        event
    })
}

/// Whether an SSE line is blank, a comment, or one of the fields the event stream
/// interpretation defines (`data`, `event`, `id`, `retry`; WHATWG HTML §9.2.6): what a curated
/// `text/event-stream` list response may hold.
pub fn known_sse_line(line: &[u8]) -> bool {
    let name = line
        .iter()
        .position(|&b| b == b':')
        .map_or(line, |colon| line.get(..colon).unwrap_or_default());
    line.is_empty()
        || line.first() == Some(&b':')
        || matches!(name, b"data" | b"event" | b"id" | b"retry")
}

/// An event's data: its `data` line values joined with LF (WHATWG HTML §9.2.6); `None` when it
/// has no `data` line.
pub fn event_data<'a>(event: &[Line<'a>]) -> Option<Cow<'a, [u8]>> {
    let mut values = event.iter().filter_map(|(line, _)| data_value(line));
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(Cow::Borrowed(first));
    };
    let mut d = Vec::with_capacity(first.len() + 1 + second.len());
    d.extend_from_slice(first);
    d.push(b'\n');
    d.extend_from_slice(second);
    for value in values {
        d.push(b'\n');
        d.extend_from_slice(value);
    }
    Some(Cow::Owned(d))
}

/// The event with its data replaced by `data` (which must hold no line break): one `data:`
/// line where its first `data` line was (with that line's ending, or LF at the end of the
/// input), every other `data` line dropped and every other line (`event`, `id`, comments)
/// kept byte for byte. `None` when the event has no `data` line.
pub fn with_data(event: &[Line<'_>], data: &[u8]) -> Option<Vec<u8>> {
    let first = event
        .iter()
        .position(|(line, _)| data_value(line).is_some())?;
    let mut out = Vec::with_capacity(data.len() + 64);
    for (i, (line, ending)) in event.iter().enumerate() {
        if i == first {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(data);
            out.extend_from_slice(if ending.is_empty() { b"\n" } else { ending });
        } else if data_value(line).is_none() {
            out.extend_from_slice(line);
            out.extend_from_slice(ending);
        }
    }
    Some(out)
}

/// The value of a `data` field line (one leading space after the colon dropped), or `None`
/// for any other line (a field named e.g. `database` is not data).
pub fn data_value(line: &[u8]) -> Option<&[u8]> {
    let value = line.strip_prefix(DATA)?;
    match value.split_first() {
        None => Some(value),
        Some((b':', v)) => Some(v.strip_prefix(b" ").unwrap_or(v)),
        Some(_) => None,
    }
}

/// The length of the prefix of `data` that consists of complete SSE events (up to and
/// including the blank line of the last one). A trailing CR is never counted as complete: it
/// may be the first half of a CRLF.
pub fn complete_events(data: &[u8]) -> usize {
    let usable = if data.last() == Some(&b'\r') {
        data.len().saturating_sub(1)
    } else {
        data.len()
    };
    let mut boundary = 0;
    let mut pos = 0;
    for (line, ending) in split_lines(data.get(..usable).unwrap_or_default()) {
        pos += line.len() + ending.len();
        if line.is_empty() && !ending.is_empty() {
            boundary = pos;
        }
    }
    boundary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_data_puts_one_data_line_where_the_first_was_and_keeps_the_rest() {
        let lines = split_lines(b"event: message\r\ndata: {\r\n: note\r\ndata: }\r\nid: 7\r\n\r\n");
        let event = events(&lines).next().unwrap();
        assert_eq!(
            with_data(event, b"{}").unwrap(),
            b"event: message\r\ndata: {}\r\n: note\r\nid: 7\r\n\r\n".to_vec()
        );
        // A last data line without an ending gets LF; no data line: nothing to replace.
        let lines = split_lines(b"data: x");
        assert_eq!(with_data(&lines, b"y").unwrap(), b"data: y\n".to_vec());
        let lines = split_lines(b"event: ping\n");
        assert_eq!(with_data(&lines, b"y"), None);
    }

    #[derive(Default)]
    struct Collect {
        current: Vec<u8>,
        events: Vec<String>,
    }

    impl EventSink for Collect {
        fn data(&mut self, bytes: &[u8]) {
            self.current.extend_from_slice(bytes);
        }
        fn data_line_end(&mut self) {
            self.current.push(b'\n');
        }
        fn dispatch(&mut self) {
            let mut data = std::mem::take(&mut self.current);
            data.pop(); // the standard drops the last line feed
            self.events.push(String::from_utf8(data).unwrap());
        }
    }

    fn scan_chunks(chunks: &[&[u8]]) -> Vec<String> {
        let mut s = SseScanner::new();
        let mut c = Collect::default();
        for chunk in chunks {
            s.feed(chunk, &mut c);
        }
        s.finish(&mut c);
        c.events
    }

    fn scan_bytewise(stream: &[u8]) -> Vec<String> {
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        scan_chunks(&chunks)
    }

    /// A sink whose `data_to_line_end` answers an offset that is not a line end.
    struct Wrong(Collect, Option<usize>);

    impl EventSink for Wrong {
        fn data(&mut self, bytes: &[u8]) {
            self.0.data(bytes);
        }
        fn data_to_line_end(&mut self, rest: &[u8]) -> Option<usize> {
            self.0.data(rest);
            self.1
        }
        fn data_line_end(&mut self) {
            self.0.data_line_end();
        }
        fn dispatch(&mut self) {
            self.0.dispatch();
        }
    }

    #[test]
    fn a_sink_answering_no_line_end_cannot_stall_the_scanner() {
        for answer in [Some(0), Some(2), Some(1000), None] {
            let mut s = SseScanner::new();
            let mut sink = Wrong(Collect::default(), answer);
            s.feed(b"data: abc", &mut sink);
            s.feed(b"def\n\ndata: x\n\n", &mut sink);
            s.finish(&mut sink);
            // The sink was taken at its word that the whole rest was its value.
            assert_eq!(
                sink.0.events,
                vec!["abcdef\n\ndata: x\n\n".to_owned()],
                "{answer:?}"
            );
        }
    }

    #[test]
    fn line_endings_and_fields() {
        let want = vec!["{\"a\":1}".to_owned(), "x\ny".to_owned()];
        for stream in [
            &b"event: message\ndata: {\"a\":1}\n\ndata: x\ndata: y\n\n"[..],
            b"event: message\r\ndata: {\"a\":1}\r\n\r\ndata: x\r\ndata: y\r\n\r\n",
            b"event: message\rdata: {\"a\":1}\r\rdata: x\rdata: y\r\r",
            b": ping - 2025\nretry: 3000\nid: 7\ndata:{\"a\":1}\n\nevent: message\ndata: x\ndata: y\n\n",
        ] {
            assert_eq!(scan_chunks(&[stream]), want, "{stream:?}");
            assert_eq!(scan_bytewise(stream), want, "bytewise {stream:?}");
        }
    }

    #[test]
    fn priming_and_empty_events() {
        // Empty priming event (data with no value) is dispatched with empty data; an event with
        // only an id is not dispatched at all.
        let events = scan_chunks(&[b"id: 0\ndata: \n\nid: 1\n\ndata\n\ndata: z\n\n"]);
        assert_eq!(events, vec!["".to_owned(), "".to_owned(), "z".to_owned()]);
    }

    #[test]
    fn only_one_leading_space_is_removed_and_colons_in_values_stay() {
        assert_eq!(scan_chunks(&[b"data:  a:b\n\n"]), vec![" a:b".to_owned()]);
        assert_eq!(
            scan_chunks(&[b"datax: no\ndata: yes\n\n"]),
            vec!["yes".to_owned()]
        );
        assert_eq!(
            scan_chunks(&[b"verylongfieldname: no\ndata: yes\n\n"]),
            vec!["yes".to_owned()]
        );
    }

    #[test]
    fn crlf_split_across_chunks_is_one_line_end() {
        let events = scan_chunks(&[b"data: a\r", b"\n\r", b"\ndata: b\r", b"\r"]);
        assert_eq!(events, vec!["a".to_owned(), "b".to_owned()]);
    }

    #[test]
    fn unterminated_event_is_dispatched_at_finish() {
        assert_eq!(
            scan_chunks(&[b"data: {\"id\":1}"]),
            vec!["{\"id\":1}".to_owned()]
        );
    }

    #[test]
    fn large_data_is_passed_through_in_pieces() {
        struct Count(usize, usize);
        impl EventSink for Count {
            fn data(&mut self, b: &[u8]) {
                self.0 += b.len();
            }
            fn data_line_end(&mut self) {}
            fn dispatch(&mut self) {
                self.1 += 1;
            }
        }
        let mut s = SseScanner::new();
        let mut c = Count(0, 0);
        s.feed(b"data: ", &mut c);
        let block = vec![b'x'; 1 << 16];
        for _ in 0..64 {
            s.feed(&block, &mut c);
        }
        s.feed(b"\n\n", &mut c);
        assert_eq!((c.0, c.1, s.events()), (64 << 16, 1, 1));
    }

    /// The complete-event splitter and the incremental scanner are one grammar: on every
    /// stream, the data of the split events (those with a `data` line) is what the scanner
    /// dispatches.
    #[test]
    fn the_splitter_and_the_scanner_read_the_same_events() {
        let streams: [&[u8]; 9] = [
            b"event: message\ndata: {\"a\":1}\n\ndata: x\ndata: y\n\n",
            b"event: message\r\ndata: {\"a\":1}\r\n\r\ndata: x\r\ndata: y\r\n\r\n",
            b"event: message\rdata: {\"a\":1}\r\rdata: x\rdata: y\r\r",
            b": ping\nretry: 3000\nid: 7\ndata:{\"a\":1}\n\nevent: message\ndata: x\n\n",
            b"id: 0\ndata: \n\nid: 1\n\ndata\n\ndata: z\n\n",
            b"data:  a:b\n\ndatax: no\ndata: yes\n\nverylongfieldname: no\ndata: yes\n\n",
            b"data: a\r\n\r\ndata: b\r\r",
            b"data: {\"id\":1}",
            b"\n\n\r\ndata\rdata:\r\n\n: c\ndata:x\n",
        ];
        for stream in streams {
            let lines = split_lines(stream);
            let joined: Vec<u8> = lines.iter().flat_map(|(l, e)| [*l, *e].concat()).collect();
            assert_eq!(joined, stream, "lines keep every byte");
            let split: Vec<String> = events(&lines)
                .filter_map(event_data)
                .map(|d| String::from_utf8(d.into_owned()).unwrap())
                .collect();
            assert_eq!(
                split,
                scan_chunks(&[stream]),
                "{}",
                String::from_utf8_lossy(stream)
            );
        }
    }
}

//! The `sse_scanner` target: `sse::SseScanner` under every chunking, against a whole-input
//! reference parser written from the WHATWG algorithm.

use super::*;

/// Fingerprints the events an [`SseScanner`] reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct SseFingerprint(Fingerprint);

impl EventSink for SseFingerprint {
    fn data(&mut self, bytes: &[u8]) {
        self.0.data(bytes);
    }
    fn data_line_end(&mut self) {
        self.0.mark(1);
    }
    fn dispatch(&mut self) {
        self.0.mark(2);
    }
}

/// Reference: the WHATWG "interpreting an event stream" algorithm over the whole input, with
/// the scanner's one documented leniency (an unterminated last event is dispatched). Like the
/// scanner, it does not strip a leading U+FEFF (byte-order mark).
pub(crate) fn reference_sse(data: &[u8], sink: &mut impl EventSink) -> u64 {
    let (mut has_data, mut events) = (false, 0u64);
    let mut rest = data;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&c| c == b'\n' || c == b'\r')
            .unwrap_or(rest.len());
        let (line, after) = rest.split_at(end);
        rest = match after {
            [b'\r', b'\n', tail @ ..] | [b'\r', tail @ ..] | [b'\n', tail @ ..] => tail,
            _ => &[],
        };
        if line.is_empty() {
            if has_data {
                has_data = false;
                events += 1;
                sink.dispatch();
            }
            continue;
        }
        if line.first() == Some(&b':') {
            continue;
        }
        let (name, value) = match line.iter().position(|&c| c == b':') {
            Some(i) => {
                let (n, v) = line.split_at(i);
                let v = v.get(1..).unwrap_or_default();
                (n, v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        if name == b"data" {
            sink.data(value);
            sink.data_line_end();
            has_data = true;
        }
    }
    if has_data {
        events += 1;
        sink.dispatch();
    }
    events
}

/// Target `sse_scanner`: [`SseScanner`] on arbitrary bytes under several chunkings.
pub fn sse_scanner(data: &[u8]) {
    require_counting();
    let mut want = SseFingerprint::default();
    let want_events = reference_sse(data, &mut want);
    for how in chunkings(data) {
        let label = format!("{how:?}");
        let mut scanner = SseScanner::new();
        let mut got = SseFingerprint::default();
        let meter = Meter::start();
        for chunk in Chunks::new(data, how) {
            scanner.feed(chunk, &mut got);
        }
        scanner.finish(&mut got);
        let peak = meter.peak();
        assert_eq!(peak, 0, "SseScanner allocated {peak} bytes ({label})");
        assert_eq!(got, want, "events differ from the reference ({label})");
        assert_eq!(scanner.events(), want_events, "event count ({label})");
    }
}

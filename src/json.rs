//! One JSON framing and scanning codec (RFC 8259) for every reader in mcp-guard: the request
//! parser ([`crate::jsonrpc`]), the incremental response scanner ([`crate::response`]) and list
//! curation ([`crate::curation`]).
//!
//! The primitives, each used by all three readers where they apply:
//! - **strings**: [`string_stop`] (the next `"` or `\\`), [`string_or_line_end`] (the same, or a
//!   line end, for SSE `data:` lines), [`string_end`] (past a complete string);
//! - **member framing**: [`Seq`] walks the members of an object or the elements of an array,
//!   [`value_end`] skips a whole value with a depth counter and no state per level (so the
//!   depth of a skipped value never matters), [`skip_ws`] / [`is_ws`];
//! - **names**: [`plain_key`] and [`decode_key`] decode member names exactly as serde_json does
//!   (every escape, `\u` surrogate pairs; a name serde_json refuses is no name), so
//!   `"n\u0061me"` is `name` to every reader; [`Members`] reads an object's members in order
//!   with duplicates kept, so a duplicated name can be refused (serde_json's maps keep the
//!   last, some readers keep the first);
//! - **depth**: [`exceeds_nesting`], the pre-check of the configured `max_json_depth`.
//!
//! Framing never decodes or validates scalars; it only follows strings (with their backslash
//! escapes) and bracket nesting (RFC 8259 §2-§7 structure). On text that is not well-formed it
//! may return `None` or boundaries a parser would not find, so every caller either runs on text
//! serde_json has already accepted, or has serde_json check what it keeps. Positions are byte
//! offsets into the slice given.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// Whether `b` is JSON whitespace (RFC 8259 §2: space, tab, LF, CR).
#[inline]
pub fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The offset of the first `"` or `\\` in `bytes` (where the text of a JSON string stops:
/// its end or an escape); `None` when there is none. memchr's SIMD search.
#[inline]
pub fn string_stop(bytes: &[u8]) -> Option<usize> {
    memchr::memchr2(b'"', b'\\', bytes)
}

/// The first position at or after `i` that is not JSON whitespace (RFC 8259 §2: space,
/// tab, LF, CR); `b.len()` if there is none.
pub fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// The end (one past the closing quote) of the string whose opening quote is at `i`;
/// `None` when it is not closed.
#[inline]
pub fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut pos = i + 1;
    // Keys and most values are short: look at up to 32 bytes eight at a time (SWAR)
    // before calling memchr, whose set-up costs more than such a string.
    for _ in 0..4 {
        let Some(word) = b
            .get(pos..pos + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
        else {
            break;
        };
        let hits = quote_or_backslash(u64::from_le_bytes(word));
        if hits != 0 {
            let at = pos + (hits.trailing_zeros() / 8) as usize;
            if b.get(at) == Some(&b'"') {
                return Some(at + 1);
            }
            pos = at + 2; // a backslash and the byte it escapes
            break;
        }
        pos += 8;
    }
    loop {
        let rest = b.get(pos..)?;
        let at = pos + string_stop(rest)?;
        if b.get(at) == Some(&b'"') {
            return Some(at + 1);
        }
        pos = at + 2; // a backslash and the byte it escapes
    }
}

/// The high bit of each byte of `word` (little-endian) that is `"` or `\\`; the lowest set
/// bit is exact (bits above it may be spurious, from the borrow of the zero-byte test).
#[inline]
fn quote_or_backslash(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    ((quote.wrapping_sub(ONES) & !quote) | (backslash.wrapping_sub(ONES) & !backslash)) & HIGH
}

/// The end of the value starting at `i` (its first byte, not whitespace): past the
/// matching bracket of an object or array, past the closing quote of a string, or at the
/// first byte after a scalar (whitespace, `,`, `]`, `}` or the end). `None` for an
/// unclosed string or bracket, or when `i` is not inside `b`.
pub fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            // A counter, no state per level: the depth of the value does not matter. (A byte
            // loop: cheaper here than a search for `quote_or_bracket`, since the values skipped
            // in lists are short and dense in brackets and quotes.)
            let mut depth = 0usize;
            let mut pos = i;
            loop {
                match *b.get(pos)? {
                    b'"' => {
                        pos = string_end(b, pos)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            return Some(pos + 1);
                        }
                    }
                    _ => {}
                }
                pos += 1;
            }
        }
        _ => {
            let rest = b.get(i..)?;
            Some(
                i + rest
                    .iter()
                    .position(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b',' | b']' | b'}'))
                    .unwrap_or(rest.len()),
            )
        }
    }
}

/// A cursor over the members of an object or the elements of an array: [`Seq::next`]
/// reads the punctuation up to the next value and returns where it starts; the caller then
/// moves past the value ([`Seq::skip_value`], or [`Seq::resume`] after reading it itself).
pub struct Seq<'a> {
    b: &'a [u8],
    pos: usize,
    first: bool,
    object: bool,
}

/// Where the punctuation did not fit the object or array grammar.
#[derive(Debug)]
pub struct Malformed;

impl<'a> Seq<'a> {
    /// The members of the object whose `{` is at `open`.
    pub fn object(b: &'a [u8], open: usize) -> Seq<'a> {
        Seq {
            b,
            pos: open + 1,
            first: true,
            object: true,
        }
    }

    /// The elements of the array whose `[` is at `open`.
    pub fn array(b: &'a [u8], open: usize) -> Seq<'a> {
        Seq {
            b,
            pos: open + 1,
            first: true,
            object: false,
        }
    }

    /// The next member (its raw key, quotes included, and where its value starts) or
    /// element (no key); `Ok(None)` at the closing bracket, after which [`Seq::pos`] is one
    /// past it.
    // Not an `Iterator`: a framing error is a value, and the caller moves past each value.
    #[allow(clippy::type_complexity, clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<(Option<&'a [u8]>, usize)>, Malformed> {
        let b = self.b;
        let mut i = skip_ws(b, self.pos);
        let close = if self.object { b'}' } else { b']' };
        match b.get(i) {
            Some(&c) if c == close => {
                self.pos = i + 1;
                return Ok(None);
            }
            Some(b',') if !self.first => i = skip_ws(b, i + 1),
            Some(_) if self.first => {}
            _ => return Err(Malformed),
        }
        self.first = false;
        if !self.object {
            self.pos = i;
            return Ok(Some((None, i)));
        }
        if b.get(i) != Some(&b'"') {
            return Err(Malformed);
        }
        let key_end = string_end(b, i).ok_or(Malformed)?;
        let key = b.get(i..key_end).ok_or(Malformed)?;
        let colon = skip_ws(b, key_end);
        if b.get(colon) != Some(&b':') {
            return Err(Malformed);
        }
        let start = skip_ws(b, colon + 1);
        self.pos = start;
        Ok(Some((Some(key), start)))
    }

    /// Moves past the value starting at `start` (from [`Seq::next`]); returns its end.
    pub fn skip_value(&mut self, start: usize) -> Result<usize, Malformed> {
        let end = value_end(self.b, start).ok_or(Malformed)?;
        if end == start {
            return Err(Malformed);
        }
        self.pos = end;
        Ok(end)
    }

    /// Continues after a value the caller read itself, which ended at `end`.
    pub fn resume(&mut self, end: usize) {
        self.pos = end;
    }

    /// The current position (one past the closing bracket once [`Seq::next`] said so).
    pub fn pos(&self) -> usize {
        self.pos
    }
}

/// The text of a raw key without its quotes, if it has no escapes (then it is the key).
pub fn plain_key(raw: &[u8]) -> Option<&[u8]> {
    let inner = raw.get(1..raw.len().checked_sub(1)?)?;
    // Keys are short: a plain loop beats the call to memchr that `contains` makes.
    #[allow(clippy::manual_contains)]
    (!inner.iter().any(|&c| c == b'\\')).then_some(inner)
}

/// The offset of the first byte of `bytes` that matters when a value is skipped without being
/// read: a quote (a string starts) or a bracket (the depth changes), and with `LINE_END` also
/// `\n` or `\r` (an SSE `data:` line ends). Used by the incremental response scanner's
/// skipping state, which counts depth without state per level as [`value_end`] does.
#[inline]
pub fn quote_or_bracket<const LINE_END: bool>(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&c| {
        matches!(c, b'"' | b'{' | b'[' | b'}' | b']') || (LINE_END && matches!(c, b'\n' | b'\r'))
    })
}

/// The name a member's raw key text stands for, with escapes decoded: `inner` is the text
/// between the quotes. A name without a backslash is its own text (borrowed); one with escapes
/// is decoded by serde_json's string decoder (the request parser's), and `None` when it does not
/// decode (a bad escape, a lone surrogate: serde_json and the Python SDK refuse the message).
#[inline]
pub fn decode_key(inner: &[u8]) -> Option<Cow<'_, [u8]>> {
    // Keys are short: a plain loop beats the call to memchr that `contains` makes.
    #[allow(clippy::manual_contains)]
    if !inner.iter().any(|&c| c == b'\\') {
        return Some(Cow::Borrowed(inner));
    }
    decode_escaped(inner).map(Cow::Owned)
}

/// [`decode_key`] of a name with escapes (rare: kept out of line so the plain path inlines).
#[cold]
#[inline(never)]
fn decode_escaped(inner: &[u8]) -> Option<Vec<u8>> {
    let mut quoted = Vec::with_capacity(inner.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(inner);
    quoted.push(b'"');
    serde_json::from_slice::<String>(&quoted)
        .ok()
        .map(String::into_bytes)
}

/// The decoded name of a raw key as [`Seq::next`] returns it (quotes included); `None` when it
/// does not decode ([`decode_key`]).
#[inline]
pub fn key_name(raw: &[u8]) -> Option<Cow<'_, [u8]>> {
    decode_key(raw.get(1..raw.len().checked_sub(1)?)?)
}

/// The members of a JSON object in wire order, names decoded, duplicates kept (serde_json's
/// own maps keep only the last), each value borrowed as raw JSON text. Deserializing anything
/// but an object is an error.
pub struct Members<'a>(pub Vec<(String, &'a RawValue)>);

impl<'a> Members<'a> {
    /// The raw text of the first member named `name`.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.get())
    }

    /// Whether some name is there twice (what a first-wins and a last-wins reader read
    /// differently).
    pub fn has_duplicates(&self) -> bool {
        has_duplicates(self.0.iter().map(|(n, _)| n.as_str()))
    }
}

/// Whether some name of `names` is there twice.
pub fn has_duplicates<'n>(names: impl Iterator<Item = &'n str>) -> bool {
    let mut names: Vec<&str> = names.collect();
    names.sort_unstable();
    names.windows(2).any(|w| w.first() == w.get(1))
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                collect_members(map)
            }
        }
        d.deserialize_map(Visit)
    }
}

fn collect_members<'de, A: MapAccess<'de>>(mut map: A) -> Result<Members<'de>, A::Error> {
    let mut members = Vec::new();
    while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
        members.push(member);
    }
    Ok(Members(members))
}

/// A JSON value read as an object's [`Members`], or `None` for any other value (checked by
/// serde_json, then skipped).
pub struct MaybeObject<'a>(pub Option<Members<'a>>);

impl<'de> Deserialize<'de> for MaybeObject<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = MaybeObject<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                collect_members(map).map(|m| MaybeObject(Some(m)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(MaybeObject(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MaybeObject(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MaybeObject(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MaybeObject(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MaybeObject(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(MaybeObject(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(MaybeObject(None))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// Whether brackets outside strings nest deeper than `limit`. Only a pre-check: syntax errors
/// are left to the parser.
pub fn exceeds_nesting(bytes: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Where a JSON string in an SSE `data:` line stops: the offset of the first `"`, `\\`, `\n`
/// or `\r` in `bytes`.
///
/// In Wasm with simd128 (the filter as Envoy runs it), one pass where the two searches of the
/// native version read every byte twice: 64-byte blocks are tested four 16-byte vectors at a
/// time (one saturating subtract and two compares each), and only a block that may hold one of
/// the four is searched byte by byte. Under callgrind, Envoy 1.40's V8 runs it in about 8.6M
/// instructions per 10 MB, where the two searches took about 11.0M.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub fn string_or_line_end(bytes: &[u8]) -> Option<usize> {
    const BLOCK: usize = 64;
    let is_stop = |b: &u8| matches!(b, b'"' | b'\\' | b'\n' | b'\r');
    let mut blocks = bytes.chunks_exact(BLOCK);
    let mut base = 0;
    for block in &mut blocks {
        if block_may_stop(block) {
            if let Some(at) = block.iter().position(is_stop) {
                return Some(base + at);
            }
        }
        base += BLOCK;
    }
    blocks
        .remainder()
        .iter()
        .position(is_stop)
        .map(|at| base + at)
}

/// Whether `block` (64 bytes) may hold `"`, `\\`, `\n` or `\r`: true for every block that does,
/// and also for one with another control byte (below 0x20), which the byte search then passes.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn block_may_stop(block: &[u8]) -> bool {
    use core::arch::wasm32::{
        u8x16, u8x16_eq, u8x16_splat, u8x16_sub_sat, v128, v128_any_true, v128_or,
    };
    let (quote, backslash, space) = (u8x16_splat(b'"'), u8x16_splat(b'\\'), u8x16_splat(0x20));
    let mut any: v128 = u8x16_splat(0);
    for lane in block.chunks(16) {
        let Ok(&[b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15]) =
            <&[u8; 16]>::try_from(lane)
        else {
            return true; // not a whole vector: let the byte search decide
        };
        // Sixteen consecutive bytes: the compiler emits one v128.load.
        let v = u8x16(
            b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15,
        );
        // 0x20 - v (saturating) is non-zero exactly for the control bytes.
        let hits = v128_or(
            u8x16_sub_sat(space, v),
            v128_or(u8x16_eq(v, quote), u8x16_eq(v, backslash)),
        );
        any = v128_or(any, hits);
    }
    v128_any_true(any)
}

/// Where a JSON string in an SSE `data:` line stops (see the Wasm version). Natively, two of
/// memchr's SSE2/AVX2 searches beat one pass of 16-byte blocks: the string's end, then a line
/// end before it.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
pub fn string_or_line_end(bytes: &[u8]) -> Option<usize> {
    let string_end = memchr::memchr2(b'"', b'\\', bytes);
    let before = bytes.get(..string_end.unwrap_or(bytes.len()));
    memchr::memchr2(b'\n', b'\r', before.unwrap_or_default()).or(string_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_end_finds_the_closing_quote() {
        let cases: &[&[u8]] = &[
            br#""""#,
            br#""a""#,
            br#""0123456789abcdef0123456789abcdef0123456789""#,
            br#""0123456\"9abc\\""#,
            br#""\\""#,
            br#""012345678901234\"x""#,
            br#""01234567890123456789012345678901234\"x\\""#,
            "\"é€😀 \\u0022\"".as_bytes(),
        ];
        for case in cases {
            for pad in 0..12 {
                let mut text = b" ".repeat(pad);
                text.extend_from_slice(case);
                let tail = text.len();
                text.extend_from_slice(br#","b":"c"}"#);
                assert_eq!(
                    string_end(&text, pad),
                    Some(tail),
                    "{}",
                    String::from_utf8_lossy(case)
                );
                assert_eq!(string_end(text.get(..tail - 1).unwrap(), pad), None);
            }
        }
    }

    #[test]
    fn a_string_stops_at_a_quote_backslash_or_line_end_and_nowhere_else() {
        // Offsets across whole 64-byte blocks and the remainder after them.
        for len in [0, 1, 63, 64, 65, 130, 200, 700] {
            let mut text = vec![b'a'; len];
            assert_eq!(string_or_line_end(&text), None, "len {len}");
            // Every other byte value (control bytes, bytes that share a stop's low or high
            // nibble, non-ASCII) is content.
            let others = (0..=255u8).filter(|b| !b"\"\\\n\r".contains(b));
            for (at, b) in (0..len).zip(others.cycle()) {
                text[at] = b;
            }
            assert_eq!(string_or_line_end(&text), None, "len {len}");
            for at in 0..len {
                for stop in [b'"', b'\\', b'\n', b'\r'] {
                    let mut t = text.clone();
                    t[at] = stop;
                    if at + 1 < len {
                        t[len - 1] = b'"'; // a later stop does not hide the first
                    }
                    assert_eq!(string_or_line_end(&t), Some(at), "len {len} at {at} {stop}");
                }
            }
        }
    }
}

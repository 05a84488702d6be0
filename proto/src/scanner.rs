//! The delimiter scanner: turns the bytes of successive reads into protocol events.
//!
//! Rules (the protocol reference, "Sending requests"):
//! - every `\r` is treated as `\n` before scanning (the delimiter is translated the same way,
//!   so a configured `"\r\n"` matches a received `\r\n` as `\n\n`);
//! - an empty line produces no event at all;
//! - a line longer than the effective limit is never buffered past the limit: the scanner
//!   reports it once and skips to the next delimiter;
//! - a read that is exactly a break sequence while no partial line is pending is a break.
//!
//! Lines are handed out as byte slices; UTF-8 decoding happens on whole lines, so a
//! multi-byte character split across reads is never damaged.

use memchr::memmem;

/// Telnet "interrupt process" + "do timing mark" (what telnet sends for Ctrl-C).
const BREAK_CTRL_C: &[u8] = &[0xFF, 0xF4, 0xFF, 0xFD, 0x06];
/// End of transmission (Ctrl-D).
const BREAK_CTRL_D: &[u8] = &[0x04];

/// Shared, immutable scanning parameters (one per listener, not per connection).
#[derive(Debug, Clone)]
pub struct ScanConfig {
    /// The delimiter after `\r` → `\n` translation. Never empty.
    delimiter: Box<[u8]>,
    /// The effective line limit in bytes (delimiter excluded).
    max: usize,
    /// Searcher for the delimiter, built once.
    finder: memmem::Finder<'static>,
}

impl ScanConfig {
    /// Builds the scanning parameters.
    ///
    /// `max_data_length` is actionhero's `maxDataLength` (0 = no protocol limit) and
    /// `max_line_bytes` the hard safety cap that always applies. Returns `None` when the
    /// delimiter is empty or the hard cap is zero (both are refused by config validation).
    pub fn new(delimiter: &[u8], max_data_length: usize, max_line_bytes: usize) -> Option<Self> {
        if delimiter.is_empty() || max_line_bytes == 0 {
            return None;
        }
        let delimiter: Box<[u8]> = delimiter
            .iter()
            .map(|&b| if b == b'\r' { b'\n' } else { b })
            .collect();
        let finder = memmem::Finder::new(&delimiter).into_owned();
        let max = if max_data_length > 0 {
            max_data_length.min(max_line_bytes)
        } else {
            max_line_bytes
        };
        Some(ScanConfig {
            delimiter,
            max,
            finder,
        })
    }

    /// The effective line limit in bytes.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The delimiter as matched (after `\r` → `\n` translation).
    pub fn delimiter(&self) -> &[u8] {
        &self.delimiter
    }
}

/// How long an over-long line was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineLength {
    /// The whole line was in hand: its exact length in bytes (delimiter excluded).
    Exact(usize),
    /// The limit was crossed before the delimiter arrived: the line is longer than the limit.
    AtLeast(usize),
}

/// What the scanner found in a read.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete, non-empty line (delimiter removed, CRs already translated).
    Line(&'a [u8]),
    /// A line over the limit was discarded (reported once per line).
    TooLong { max: usize, actual: LineLength },
    /// The read was a break sequence (Ctrl-C or Ctrl-D): end the connection like `quit`.
    Break,
}

/// What the consumer of events wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop scanning this read (the connection is closing); the rest is discarded.
    Stop,
    /// Stop scanning until [`Scanner::resume`]: the consumer cannot take the next line yet
    /// (it waits for an answer that decides it). The rest of this read is held.
    Pause,
}

/// Per-connection scanner state.
///
/// The default value is an idle scanner that holds no allocation.
#[derive(Debug, Default)]
pub struct Scanner {
    /// In `Line` state: the bytes of the partial line. In `Skipping` state: at most
    /// `delimiter.len() - 1` trailing bytes, kept only to find a delimiter split across reads.
    pending: Vec<u8>,
    state: State,
    /// After [`Flow::Pause`]: the bytes of the read not scanned yet (empty otherwise, and
    /// holding no allocation).
    held: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a line.
    #[default]
    Line,
    /// Discarding the rest of an over-long line that was already reported.
    Skipping,
}

impl Scanner {
    /// True when no partial line is pending (a break sequence would be recognised).
    pub fn is_idle(&self) -> bool {
        self.state == State::Line && self.pending.is_empty() && self.held.is_empty()
    }

    /// Bytes held after a [`Flow::Pause`], not scanned yet.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Scans what a [`Flow::Pause`] held back, as if it had just been read (without the
    /// break-sequence check: those bytes were not a read of their own). May pause again.
    pub fn resume<F>(&mut self, cfg: &ScanConfig, sink: F) -> Flow
    where
        F: FnMut(Event<'_>) -> Flow,
    {
        let mut held = std::mem::take(&mut self.held);
        if held.is_empty() {
            return Flow::Continue;
        }
        self.scan(cfg, &mut held, sink)
    }

    /// Bytes currently buffered for a partial line.
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    /// Scans one read. `data` is translated in place (`\r` → `\n`); events are passed to
    /// `sink` in stream order until it returns [`Flow::Stop`].
    pub fn feed<F>(&mut self, cfg: &ScanConfig, data: &mut [u8], mut sink: F) -> Flow
    where
        F: FnMut(Event<'_>) -> Flow,
    {
        debug_assert!(self.held.is_empty(), "fed while paused: resume first");
        if self.is_idle() && (data == BREAK_CTRL_C || data == BREAK_CTRL_D) {
            return sink(Event::Break);
        }
        self.scan(cfg, data, sink)
    }

    fn scan<F>(&mut self, cfg: &ScanConfig, data: &mut [u8], mut sink: F) -> Flow
    where
        F: FnMut(Event<'_>) -> Flow,
    {
        for b in data.iter_mut() {
            if *b == b'\r' {
                *b = b'\n';
            }
        }
        let delim: &[u8] = &cfg.delimiter;
        let d = delim.len();
        let mut pos = 0;

        // A delimiter that started in an earlier read and ends in this one.
        if d > 1
            && !self.pending.is_empty()
            && let Some(k) = straddle(&self.pending, data, delim)
        {
            pos = d - k;
            let keep = self.pending.len() - k;
            let flow = match self.state {
                State::Line => {
                    self.pending.truncate(keep);
                    emit_line(cfg, &self.pending, &mut sink)
                }
                State::Skipping => Flow::Continue,
            };
            self.reset();
            if flow != Flow::Continue {
                return self.stop_at(flow, &data[pos..]);
            }
        }

        while let Some(i) = cfg.finder.find(&data[pos..]) {
            let end = pos + i;
            let flow = match self.state {
                State::Skipping => Flow::Continue,
                State::Line if self.pending.is_empty() => {
                    emit_line(cfg, &data[pos..end], &mut sink)
                }
                State::Line => {
                    let total = self.pending.len() + (end - pos);
                    if total > cfg.max {
                        sink(too_long(cfg, LineLength::Exact(total)))
                    } else {
                        self.pending.extend_from_slice(&data[pos..end]);
                        emit_line(cfg, &self.pending, &mut sink)
                    }
                }
            };
            self.reset();
            pos = end + d;
            if flow != Flow::Continue {
                return self.stop_at(flow, &data[pos..]);
            }
        }

        let rest = &data[pos..];
        match self.state {
            State::Line => {
                let total = self.pending.len() + rest.len();
                // Up to d-1 trailing bytes may be the start of the delimiter, so the line is
                // certainly over the limit only when what precedes them already is.
                if total.saturating_sub(d - 1) > cfg.max {
                    self.keep_tail(rest, d - 1);
                    self.state = State::Skipping;
                    return sink(too_long(cfg, LineLength::AtLeast(cfg.max)));
                }
                self.pending.extend_from_slice(rest);
            }
            State::Skipping => self.keep_tail(rest, d - 1),
        }
        // Idle connections hold no buffers: every path that empties `pending` (reset) also
        // releases it, and a skipped line keeps only its last d-1 bytes.
        debug_assert!(
            !self.pending.is_empty() || self.pending.capacity() == 0,
            "an empty scanner holds no allocation"
        );
        Flow::Continue
    }

    /// Scanning stops after a line: on a pause, what follows it is held for `resume`.
    fn stop_at(&mut self, flow: Flow, rest: &[u8]) -> Flow {
        if flow == Flow::Pause && !rest.is_empty() {
            self.held = rest.to_vec();
        }
        flow
    }

    /// Back to collecting a fresh line, releasing the buffer.
    fn reset(&mut self) {
        self.state = State::Line;
        if self.pending.capacity() > 0 {
            self.pending = Vec::new();
        }
    }

    /// Keeps only the last `n` bytes of `pending ++ rest` (for a delimiter split across reads).
    fn keep_tail(&mut self, rest: &[u8], n: usize) {
        if n == 0 {
            self.pending = Vec::new();
            return;
        }
        let mut tail = Vec::with_capacity(n);
        let from_rest = rest.len().min(n);
        let from_pending = (n - from_rest).min(self.pending.len());
        tail.extend_from_slice(&self.pending[self.pending.len() - from_pending..]);
        tail.extend_from_slice(&rest[rest.len() - from_rest..]);
        debug_assert!(tail.len() <= n);
        self.pending = tail;
    }
}

/// If the delimiter begins within the last bytes of `pending` and ends at the start of
/// `data`, returns how many of its bytes lie in `pending` (the earliest such match).
fn straddle(pending: &[u8], data: &[u8], delim: &[u8]) -> Option<usize> {
    let d = delim.len();
    let max_k = (d - 1).min(pending.len());
    (1..=max_k).rev().find(|&k| {
        let need = d - k;
        pending.ends_with(&delim[..k]) && data.len() >= need && data[..need] == delim[k..]
    })
}

fn emit_line<F>(cfg: &ScanConfig, line: &[u8], sink: &mut F) -> Flow
where
    F: FnMut(Event<'_>) -> Flow,
{
    if line.is_empty() {
        Flow::Continue
    } else if line.len() > cfg.max {
        sink(too_long(cfg, LineLength::Exact(line.len())))
    } else {
        sink(Event::Line(line))
    }
}

fn too_long(cfg: &ScanConfig, actual: LineLength) -> Event<'static> {
    Event::TooLong {
        max: cfg.max,
        actual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Owned copy of an event, for comparisons.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Ev {
        Line(Vec<u8>),
        TooLong(LineLength),
        Break,
    }

    pub(crate) fn scan_chunks(cfg: &ScanConfig, chunks: &[&[u8]]) -> (Vec<Ev>, Scanner) {
        let mut s = Scanner::default();
        let mut out = Vec::new();
        for c in chunks {
            let mut buf = c.to_vec();
            s.feed(cfg, &mut buf, |e| {
                out.push(match e {
                    Event::Line(l) => Ev::Line(l.to_vec()),
                    Event::TooLong { actual, .. } => Ev::TooLong(actual),
                    Event::Break => Ev::Break,
                });
                Flow::Continue
            });
        }
        (out, s)
    }

    fn cfg(d: &str, max_data: usize, cap: usize) -> ScanConfig {
        ScanConfig::new(d.as_bytes(), max_data, cap).expect("valid config")
    }

    fn line(s: &str) -> Ev {
        Ev::Line(s.as_bytes().to_vec())
    }

    #[test]
    fn the_delimiter_is_matched_after_cr_translation() {
        assert_eq!(cfg("\r\n", 0, 64).delimiter(), b"\n\n");
        assert_eq!(cfg("<END>", 0, 64).delimiter(), b"<END>");
    }

    #[test]
    fn an_over_long_line_keeps_only_a_possible_delimiter_start() {
        // While skipping an over-long line, at most d-1 bytes are held (a delimiter may be
        // split across reads), never the line.
        let c = cfg("<END>", 0, 16);
        let (ev, s) = scan_chunks(&c, &[&[b'x'; 100], &[b'y'; 100]]);
        assert_eq!(ev, vec![Ev::TooLong(LineLength::AtLeast(16))]);
        assert_eq!(s.buffered(), 4);
        let c = cfg("\n", 0, 16);
        let (_, s) = scan_chunks(&c, &[&[b'x'; 100]]);
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn an_idle_scanner_holds_no_buffer() {
        let c = cfg("\n", 0, 1024);
        let (ev, s) = scan_chunks(&c, &[b"abc", b"def\n"]);
        assert_eq!(ev, vec![line("abcdef")]);
        assert_eq!(s.pending.capacity(), 0, "released after the line");
        let (_, s) = scan_chunks(&c, &[b"abc", b"\n\n"]);
        assert_eq!(s.pending.capacity(), 0);
    }

    #[test]
    fn lf_cr_and_crlf_all_end_a_line() {
        let c = cfg("\n", 0, 1024);
        let (ev, _) = scan_chunks(&c, &[b"a\nb\rc\r\nd\n"]);
        assert_eq!(ev, vec![line("a"), line("b"), line("c"), line("d")]);
    }

    #[test]
    fn empty_lines_produce_nothing_and_spaces_are_kept() {
        let c = cfg("\n", 0, 1024);
        let (ev, _) = scan_chunks(&c, &[b"\n\n  \n\r\n x \n"]);
        assert_eq!(ev, vec![line("  "), line(" x ")]);
    }

    #[test]
    fn partial_line_waits_for_its_delimiter() {
        let c = cfg("\n", 0, 1024);
        let (ev, s) = scan_chunks(&c, &[b"para", b"mAdd a", b"=b\nx"]);
        assert_eq!(ev, vec![line("paramAdd a=b")]);
        assert_eq!(s.buffered(), 1);
    }

    #[test]
    fn multibyte_character_split_across_reads_is_intact() {
        let c = cfg("\n", 0, 1024);
        let bytes = "say r héllo €\n".as_bytes();
        let (a, b) = bytes.split_at(9); // inside 'é'
        let (ev, _) = scan_chunks(&c, &[a, b]);
        assert_eq!(ev, vec![line("say r héllo €")]);
    }

    #[test]
    fn custom_multibyte_delimiter_split_across_reads() {
        let c = cfg("<END>", 0, 1024);
        let (ev, _) = scan_chunks(&c, &[b"one<E", b"N", b"D>two<END><END>thr", b"ee<END"]);
        assert_eq!(ev, vec![line("one"), line("two")]);
        let (ev, _) = scan_chunks(
            &c,
            &[b"one<E", b"N", b"D>two<END><END>thr", b"ee<END", b">"],
        );
        assert_eq!(ev, vec![line("one"), line("two"), line("three")]);
    }

    #[test]
    fn configured_crlf_delimiter_matches_crlf_only() {
        let c = cfg("\r\n", 0, 1024);
        let (ev, _) = scan_chunks(&c, &[b"a\r\nb\nc\r", b"\n"]);
        assert_eq!(ev, vec![line("a"), line("b\nc")]);
    }

    #[test]
    fn over_long_line_with_delimiter_in_hand_reports_exact_length() {
        let c = cfg("\n", 5, 1024);
        let (ev, s) = scan_chunks(&c, &[b"123456789\nok\n"]);
        assert_eq!(ev, vec![Ev::TooLong(LineLength::Exact(9)), line("ok")]);
        assert!(s.is_idle());
    }

    #[test]
    fn over_long_line_without_delimiter_is_reported_at_once_and_skipped() {
        let c = cfg("\n", 0, 8);
        let (ev, s) = scan_chunks(&c, &[b"0123456789", b"abcdef"]);
        assert_eq!(ev, vec![Ev::TooLong(LineLength::AtLeast(8))]);
        assert_eq!(s.buffered(), 0, "nothing of a skipped line is kept");
        let mut s = s;
        let mut got = Vec::new();
        s.feed(&c, &mut b"xyz\nnext\n".to_vec(), |e| {
            if let Event::Line(l) = e {
                got.push(l.to_vec());
            }
            Flow::Continue
        });
        assert_eq!(got, vec![b"next".to_vec()]);
    }

    #[test]
    fn line_exactly_at_the_limit_is_accepted() {
        let c = cfg("\n", 4, 1024);
        let (ev, _) = scan_chunks(&c, &[b"ab", b"cd", b"\n"]);
        assert_eq!(ev, vec![line("abcd")]);
    }

    #[test]
    fn effective_limit_is_the_smaller_of_the_two() {
        assert_eq!(cfg("\n", 0, 100).max(), 100);
        assert_eq!(cfg("\n", 10, 100).max(), 10);
        assert_eq!(cfg("\n", 1000, 100).max(), 100);
        assert!(ScanConfig::new(b"", 0, 10).is_none());
        assert!(ScanConfig::new(b"\n", 0, 0).is_none());
    }

    #[test]
    fn partial_line_crossing_the_limit_across_reads() {
        let c = cfg("\n", 4, 1024);
        let (ev, _) = scan_chunks(&c, &[b"abc", b"de", b"f\nok\n"]);
        assert_eq!(ev, vec![Ev::TooLong(LineLength::AtLeast(4)), line("ok")]);
        let (ev, _) = scan_chunks(&c, &[b"abc", b"de\n"]);
        assert_eq!(ev, vec![Ev::TooLong(LineLength::Exact(5))]);
    }

    #[test]
    fn break_reads_when_idle_only() {
        let c = cfg("\n", 0, 1024);
        let (ev, _) = scan_chunks(&c, &[&[0x04]]);
        assert_eq!(ev, vec![Ev::Break]);
        let (ev, _) = scan_chunks(&c, &[&[0xFF, 0xF4, 0xFF, 0xFD, 0x06]]);
        assert_eq!(ev, vec![Ev::Break]);
        // Pending partial line: Ctrl-D is data.
        let (ev, _) = scan_chunks(&c, &[b"ab", &[0x04], b"\n"]);
        assert_eq!(ev, vec![Ev::Line(vec![b'a', b'b', 0x04])]);
        // Inside a longer read: data.
        let (ev, _) = scan_chunks(&c, &[&[0x04, b'\n']]);
        assert_eq!(ev, vec![Ev::Line(vec![0x04])]);
    }

    #[test]
    fn stop_discards_the_rest_of_the_read() {
        let c = cfg("\n", 0, 1024);
        let mut s = Scanner::default();
        let mut n = 0;
        let flow = s.feed(&c, &mut b"quit\nmore\nand more\n".to_vec(), |_| {
            n += 1;
            Flow::Stop
        });
        assert_eq!(flow, Flow::Stop);
        assert_eq!(n, 1);
    }

    #[test]
    fn idle_scanner_holds_no_allocation() {
        let c = cfg("\n", 0, 1024);
        let (_, s) = scan_chunks(&c, &[b"partial", b" line\n"]);
        assert!(s.is_idle());
        assert_eq!(s.pending.capacity(), 0);
    }

    /// Feeds `data`, pausing after every line whose text is in `pause_on`; then resumes
    /// until nothing is held. Returns every line seen, in order.
    fn scan_pausing(
        cfg: &ScanConfig,
        s: &mut Scanner,
        data: &[u8],
        pause_on: &[&[u8]],
    ) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let mut sink = |e: Event<'_>| match e {
            Event::Line(l) => {
                lines.push(l.to_vec());
                if pause_on.contains(&l) {
                    Flow::Pause
                } else {
                    Flow::Continue
                }
            }
            _ => Flow::Continue,
        };
        let mut buf = data.to_vec();
        let mut flow = s.feed(cfg, &mut buf, &mut sink);
        while flow == Flow::Pause && s.held() > 0 {
            flow = s.resume(cfg, &mut sink);
        }
        lines
    }

    #[test]
    fn a_pause_holds_the_rest_of_the_read_until_resumed() {
        let c = cfg("\n", 100, 100);
        let mut s = Scanner::default();
        let mut seen = Vec::new();
        let mut buf = b"a\nb\nc".to_vec();
        let flow = s.feed(&c, &mut buf, |e| {
            if let Event::Line(l) = e {
                seen.push(l.to_vec());
            }
            Flow::Pause
        });
        assert_eq!((flow, seen.clone()), (Flow::Pause, vec![b"a".to_vec()]));
        assert_eq!(s.held(), 3);
        assert!(!s.is_idle(), "held bytes are not idle");
        // Resumed: `b`, then a pause again; then `c` stays a partial line.
        let flow = s.resume(&c, |e| {
            if let Event::Line(l) = e {
                seen.push(l.to_vec());
            }
            Flow::Pause
        });
        assert_eq!(flow, Flow::Pause);
        assert_eq!(s.resume(&c, |_| Flow::Continue), Flow::Continue);
        assert_eq!((s.held(), s.buffered()), (0, 1));
        let mut end = b"\n".to_vec();
        s.feed(&c, &mut end, |e| {
            if let Event::Line(l) = e {
                seen.push(l.to_vec());
            }
            Flow::Continue
        });
        assert_eq!(seen, [&b"a"[..], b"b", b"c"]);
        assert!(s.is_idle() && s.held == Vec::<u8>::new() && s.held.capacity() == 0);
    }

    #[test]
    fn pausing_anywhere_loses_and_reorders_nothing() {
        for delim in ["\n", "\r\n", "||"] {
            let c = cfg(delim, 100, 100);
            let text: Vec<u8> = ["x", "pause", "y", "pause", "pause", "z"]
                .iter()
                .flat_map(|l| [l.as_bytes(), delim.as_bytes()].concat())
                .collect();
            // Every split into two reads, pausing on each "pause" line.
            for cut in 0..=text.len() {
                let mut s = Scanner::default();
                let mut lines = scan_pausing(&c, &mut s, &text[..cut], &[b"pause"]);
                lines.extend(scan_pausing(&c, &mut s, &text[cut..], &[b"pause"]));
                let expect: Vec<&[u8]> = vec![b"x", b"pause", b"y", b"pause", b"pause", b"z"];
                assert_eq!(lines, expect, "delimiter {delim:?}, cut at {cut}");
            }
        }
    }
}

#[cfg(test)]
mod props {
    use super::tests::{Ev, scan_chunks};
    use super::*;
    use proptest::prelude::*;

    /// Bytes from a small alphabet so delimiters, CRs and long lines are common. Break bytes
    /// (0x04, 0xFF) are left out: a break depends on how reads are cut, by definition.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b'a'),
                Just(b'b'),
                Just(b'\n'),
                Just(b'\r'),
                Just(b' '),
                Just(b'<'),
                Just(b'>'),
                Just(0xC3u8),
                Just(0xA9u8),
            ],
            0..400,
        )
    }

    fn delimiter() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"<>".to_vec()),
            Just(b"<<>".to_vec()),
            Just(b"aab".to_vec()),
        ]
    }

    /// Kinds only: whether an over-long line's length is exact depends on the cuts.
    fn kinds(ev: &[Ev]) -> Vec<Ev> {
        ev.iter()
            .map(|e| match e {
                Ev::TooLong(_) => Ev::TooLong(LineLength::AtLeast(0)),
                other => other.clone(),
            })
            .collect()
    }

    proptest! {
        #[test]
        fn cutting_the_stream_anywhere_yields_the_same_lines(
            data in stream(),
            delim in delimiter(),
            max in 1usize..40,
            cuts in proptest::collection::vec(0usize..400, 0..20),
        ) {
            let cfg = ScanConfig::new(&delim, 0, max).expect("valid");
            let (whole, _) = scan_chunks(&cfg, &[&data]);
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            points.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&data[last..p]);
                last = p;
            }
            chunks.push(&data[last..]);
            let (cut, s) = scan_chunks(&cfg, &chunks);
            prop_assert_eq!(kinds(&whole), kinds(&cut));
            // Never buffers past the limit (plus a partial delimiter).
            prop_assert!(s.buffered() <= max + delim.len());
        }

        #[test]
        fn lines_never_exceed_the_limit_nor_contain_cr(
            data in stream(),
            max in 1usize..40,
        ) {
            let cfg = ScanConfig::new(b"\n", 0, max).expect("valid");
            let (ev, _) = scan_chunks(&cfg, &[&data]);
            for e in ev {
                if let Ev::Line(l) = e {
                    prop_assert!(!l.is_empty() && l.len() <= max);
                    prop_assert!(!l.contains(&b'\r') && !l.contains(&b'\n'));
                }
            }
        }
    }
}

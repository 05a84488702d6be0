//! Fuzzes the scanner and the request parser together, as the server uses them: arbitrary
//! bytes, cut into arbitrary reads, scanned with one of several delimiters and limits; every
//! line is decoded and classified, and verb arguments parsed. Checks the scanner's
//! invariants and that cutting the stream differently never changes the lines.
#![no_main]

use actionwire_proto::request::{self, Request, Verb};
use actionwire_proto::scanner::{Event, Flow};
use actionwire_proto::{ScanConfig, Scanner};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
enum Seen {
    Line(Vec<u8>),
    TooLong,
    Break,
}

fn scan(cfg: &ScanConfig, chunks: &[&[u8]]) -> Vec<Seen> {
    let mut s = Scanner::default();
    let mut out = Vec::new();
    for c in chunks {
        let mut buf = c.to_vec();
        s.feed(cfg, &mut buf, |e| {
            out.push(match e {
                Event::Line(l) => {
                    assert!(!l.is_empty() && l.len() <= cfg.max());
                    assert!(!l.contains(&b'\r'));
                    let text = String::from_utf8_lossy(l);
                    exercise(&text);
                    Seen::Line(l.to_vec())
                }
                Event::TooLong { .. } => Seen::TooLong,
                Event::Break => Seen::Break,
            });
            Flow::Continue
        });
        assert!(s.buffered() <= cfg.max() + cfg.delimiter().len());
    }
    out
}

fn exercise(line: &str) {
    match request::classify(line, 32) {
        Request::Verb { verb, args } => match verb {
            Verb::ParamAdd => {
                if let Ok((k, v)) = request::param_add(args) {
                    assert!(!k.is_empty() && args.contains(k) && args.ends_with(v));
                }
            }
            Verb::Say => {
                if let Some((room, msg)) = request::say(args) {
                    assert!(!room.is_empty() && !msg.is_empty());
                }
            }
            _ => {}
        },
        Request::Json { .. } | Request::Bare { .. } | Request::TooDeep { .. } => {}
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let delimiters: [&[u8]; 4] = [b"\n", b"\r\n", b"<END>", b"aa"];
    let delim = delimiters[usize::from(data[0] % 4)];
    let max = 1 + usize::from(data[1] % 64);
    let Some(cfg) = ScanConfig::new(delim, 0, max) else {
        return;
    };
    let body = &data[2..];
    // Cut points from the data itself; break sequences depend on cuts by definition, so the
    // differential check skips streams that contain their bytes.
    let whole = scan(&cfg, &[body]);
    let mut chunks = Vec::new();
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let n = 1 + usize::from(body[i % body.len()] % 7);
        let (a, b) = rest.split_at(n.min(rest.len()));
        chunks.push(a);
        rest = b;
        i += 1;
    }
    let cut = scan(&cfg, &chunks);
    if !body.contains(&0x04) && !body.contains(&0xFF) {
        assert_eq!(whole, cut);
    }
});

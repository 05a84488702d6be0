//! Micro-benchmarks of the per-request protocol work on the loop thread: scanning a read
//! into lines, classifying a line, and encoding a verb reply.
//!
//! `cargo bench -p actionwire-proto --bench proto`

use std::hint::black_box;

use actionwire_proto::encode;
use actionwire_proto::request::classify;
use actionwire_proto::scanner::Flow;
use actionwire_proto::{RawJson, ScanConfig, Scanner};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn scanner(c: &mut Criterion) {
    let cfg = ScanConfig::new(b"\n", 0, 1 << 20).expect("config");
    let mut g = c.benchmark_group("scanner");
    for (name, lines) in [("one_line_per_read", 1), ("sixteen_pipelined_lines", 16)] {
        let read = b"paramView key\n".repeat(lines);
        g.throughput(Throughput::Elements(lines as u64));
        g.bench_function(name, |b| {
            let mut s = Scanner::default();
            let mut buf = read.clone();
            b.iter(|| {
                let mut n = 0;
                s.feed(&cfg, &mut buf, |_| {
                    n += 1;
                    Flow::Continue
                });
                black_box(n)
            })
        });
    }
    g.finish();
}

fn request(c: &mut Criterion) {
    let mut g = c.benchmark_group("request");
    g.bench_function("classify_verb", |b| {
        b.iter(|| black_box(classify(black_box("paramView key"), 64)))
    });
    g.bench_function("classify_json", |b| {
        b.iter(|| {
            black_box(classify(
                black_box(r#"{"action":"cacheTest","params":{"key":"abc","value":"def"}}"#),
                64,
            ))
        })
    });
    g.finish();
}

fn encoder(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    let mut out = Vec::with_capacity(256);
    let id = RawJson("\"2d68c389-521d-4dc6-b4f1-8292cd6cbde6\"");
    g.bench_function("verb_ok_null", |b| {
        b.iter(|| {
            out.clear();
            encode::verb_ok(&mut out, &serde_json::Value::Null, black_box(12345), id);
            black_box(out.len())
        })
    });
    g.bench_function("chat", |b| {
        b.iter(|| {
            out.clear();
            encode::chat(
                &mut out,
                black_box("hello everyone"),
                "defaultRoom",
                encode::From::Connection("2d68c389-521d-4dc6-b4f1-8292cd6cbde6"),
                1_700_000_000_000,
            );
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, scanner, request, encoder);
criterion_main!(benches);

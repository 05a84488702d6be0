//! Fuzzes the HTTP request-head parser of the front door: arbitrary bytes and a header limit.
//! Checks that it never panics, that a complete head lies within the input and the limit,
//! that what follows a complete head never changes how it was read, and that no prefix of a
//! complete head is read as a (different) complete head.
#![no_main]

use actionwire_proto::http::{Parsed, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&limit, input)) = data.split_first() else {
        return;
    };
    let max = 16 + usize::from(limit) * 64; // 16 B .. 16 KiB
    match parse(input, max) {
        Parsed::Head(head, len) => {
            assert!(len <= input.len() && len <= max, "{len} of {}", input.len());
            // Bytes after the head (a body, the next request) do not change it.
            let mut longer = input.to_vec();
            longer.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(parse(&longer, max), Parsed::Head(head.clone(), len));
            // Cut short, it is incomplete or refused, never another head.
            for cut in [0, len / 2, len.saturating_sub(1)] {
                match parse(&input[..cut], max) {
                    Parsed::Partial | Parsed::Refuse(..) => {}
                    Parsed::Head(h, l) => panic!("prefix {cut} read as a head {h:?} of {l}"),
                }
            }
        }
        Parsed::Partial => assert!(input.len() <= max, "a partial head over the limit"),
        Parsed::Refuse(status, _) => assert!(matches!(status, 400 | 431), "{status}"),
    }
});

//! Fuzz the request-smuggling scanner (outpost_proxy::conn::FramingScanner).
//!
//! Input: two bytes choose a split point, the rest is the byte stream a client sends. Checks that
//! feeding the stream in two chunks, or one byte at a time, gives the same answer — and the same
//! internal state (compared through `Debug`) — as feeding it in one go; and that the flag, once
//! raised, stays raised.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_proxy::conn::FramingScanner;

fuzz_target!(|data: &[u8]| {
    let (cut, bytes) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => return,
    };
    let k = cut % (bytes.len() + 1);

    let mut whole = FramingScanner::default();
    let r_whole = whole.feed(bytes);

    let mut split = FramingScanner::default();
    let r_first = split.feed(&bytes[..k]);
    let r_split = split.feed(&bytes[k..]);
    assert_eq!(r_split, r_whole, "split at {k} changed the answer");
    assert!(
        !r_first || r_split,
        "flag cleared after being raised (split at {k})"
    );
    assert_eq!(
        format!("{split:?}"),
        format!("{whole:?}"),
        "split at {k} changed the state"
    );

    let mut bytewise = FramingScanner::default();
    let mut r_bytewise = bytewise.feed(&[]);
    assert!(!r_bytewise, "empty feed raised the flag");
    for b in bytes {
        let r = bytewise.feed(std::slice::from_ref(b));
        assert!(
            !r_bytewise || r,
            "flag cleared after being raised (bytewise)"
        );
        r_bytewise = r;
    }
    assert_eq!(r_bytewise, r_whole, "bytewise feed changed the answer");
    assert_eq!(
        format!("{bytewise:?}"),
        format!("{whole:?}"),
        "bytewise feed changed the state"
    );
});

//! Hostile input never panics the helper's protocol: arbitrary control messages and process
//! specs decode to a value or an error (issue 12). Bounded case counts so CI stays fast;
//! failures found are kept in `hostile.proptest-regressions` next to this file.

use ctinit_proto::{InitSpec, Message, MAX_MESSAGE};
use proptest::prelude::*;

/// Short random messages, and long ones up to past the size limit (built cheaply: a tag, a
/// random prefix and a fill byte; element-wise generation of 64 KiB is too slow for CI).
fn message_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => (
            proptest::collection::vec(any::<u8>(), 1..16),
            any::<u8>(),
            (MAX_MESSAGE - 16)..(MAX_MESSAGE + 16),
        )
            .prop_map(|(mut head, fill, len)| {
                head.resize(len, fill);
                head
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_decode_or_fail_cleanly(bytes in message_bytes()) {
        match Message::decode(&bytes) {
            // What decodes re-encodes to a message the decoder takes back. An Error's text may
            // come back shorter: invalid UTF-8 decodes lossily (one byte becomes three), and
            // encode cuts at the size limit.
            Ok(Message::Error(text)) => {
                let again = Message::decode(&Message::Error(text.clone()).encode());
                match again {
                    Ok(Message::Error(back)) => prop_assert!(text.starts_with(&back)),
                    other => prop_assert!(false, "Error re-decoded as {other:?}"),
                }
            }
            Ok(m) => prop_assert_eq!(Message::decode(&m.encode()), Ok(m)),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn error_text_of_any_size_encodes_within_the_limit(text in ".{0,300}", pad in 0usize..(2 * MAX_MESSAGE)) {
        // Multi-byte characters at the cut: encode must cut on a char boundary.
        let long = format!("{}{}", "é".repeat(pad / 2), text);
        let bytes = Message::Error(long).encode();
        prop_assert!(bytes.len() <= MAX_MESSAGE);
        prop_assert!(Message::decode(&bytes).is_ok());
    }

    #[test]
    fn any_bytes_as_a_spec_parse_or_fail(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = InitSpec::from_json(&bytes);
    }

    #[test]
    fn json_shaped_specs_parse_or_fail(
        args in proptest::collection::vec(".*", 0..4),
        env in proptest::collection::vec(".*", 0..4),
        uid in any::<i64>(),
        umask in any::<i64>(),
        extra in "[a-z_]{0,12}",
    ) {
        let doc = serde_json::json!({
            "args": args, "env": env, "cwd": "/", "uid": uid, "gid": 0,
            "umask": umask, extra: [1, "x", null],
        });
        if let Ok(spec) = InitSpec::from_json(doc.to_string().as_bytes()) {
            // A spec that parses survives its own round trip.
            let again = InitSpec::from_json(&spec.to_json());
            prop_assert!(again.is_ok());
        }
    }
}

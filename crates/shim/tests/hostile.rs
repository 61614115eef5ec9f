//! Hostile input never panics the shim's configuration parsers (issue 12): the host config
//! file, containerd's runtime options (protobuf) and their inline TOML body give a config or
//! an error naming what was wrong. Bounded case counts; failures found are kept in
//! `hostile.proptest-regressions` next to this file.

use proptest::prelude::*;
use shim::config::{RuntimeOptions, ShimConfig};

/// TOML-ish text built from the config's own keys, so most cases get past the tokenizer and
/// exercise validation.
fn config_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("driver"),
        Just("log_level"),
        Just("lxcpath"),
        Just("url"),
        Just("node"),
        Just("token_id"),
        Just("token_secret_file"),
        Just("ca_file"),
        Just("fingerprint"),
        Just("vmid_range"),
        Just("storage"),
        Just("tag_prefix"),
        Just("task_timeout"),
        Just("x"),
    ];
    let value = prop_oneof![
        ".{0,12}".prop_map(|s| format!("{s:?}")),
        any::<i64>().prop_map(|n| n.to_string()),
        (any::<i64>(), any::<i64>()).prop_map(|(a, b)| format!("[{a}, {b}]")),
        proptest::collection::vec(any::<u32>(), 0..4).prop_map(|v| format!("{v:?}")),
        Just("true".to_string()),
        ".{0,8}",
    ];
    let header = prop_oneof![
        Just(""),
        Just("[lxc]\n"),
        Just("[pve]\n"),
        Just("[[pve]]\n")
    ];
    proptest::collection::vec((header, key, value), 0..8).prop_map(|lines| {
        lines
            .into_iter()
            .map(|(h, k, v)| format!("{h}{k} = {v}\n"))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn any_text_parses_or_fails(text in ".{0,200}") {
        if let Err(e) = ShimConfig::parse(&text, "prop") {
            prop_assert!(e.to_string().contains("prop"), "error names its origin: {e}");
        }
    }

    #[test]
    fn config_shaped_text_parses_or_fails(text in config_text()) {
        let _ = ShimConfig::parse(&text, "prop");
    }

    #[test]
    fn any_runtime_options_decode_or_fail(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = RuntimeOptions::decode(&bytes);
    }

    #[test]
    fn any_inline_body_applies_or_fails(body in config_text()) {
        let options = RuntimeOptions {
            type_url: "runtimeoptions.v1.Options".into(),
            config_path: String::new(),
            config_body: body,
        };
        let _ = options.apply(ShimConfig::default());
    }

}

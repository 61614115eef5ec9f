//! Hostile input never panics the client (issue 12): whatever status and body a server (or
//! something posing as one) sends, response decoding gives a value or a typed error; the same
//! for UPIDs, property strings and the typed responses. Bounded case counts; failures found
//! are kept in `hostile.proptest-regressions` next to this file.

use proptest::prelude::*;
use pve_client::{
    decode_response, parse_property_string, ClusterResource, CtConfig, CtStatus, Error, TaskStatus,
    Upid,
};
use serde_json::{json, Value};

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bodies a Proxmox API answers with, and damaged ones.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        (json_value(), json_value())
            .prop_map(|(d, e)| json!({"data": d, "errors": e}).to_string().into_bytes()),
        (json_value(), ".{0,40}")
            .prop_map(|(e, m)| json!({"message": m, "errors": e}).to_string().into_bytes()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn any_status_and_body_decode_or_fail(status in 0u16..1200, bytes in body()) {
        match decode_response("GET", "/nodes/n/lxc", status, &bytes) {
            Ok(_) => prop_assert!((200..300).contains(&status)),
            Err(Error::Api { status: s, message, .. }) => {
                prop_assert!(!(200..300).contains(&s));
                prop_assert!(!message.is_empty());
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn typed_responses_decode_or_fail(v in json_value()) {
        let _ = serde_json::from_value::<Vec<ClusterResource>>(v.clone());
        let _ = serde_json::from_value::<ClusterResource>(v.clone());
        let _ = serde_json::from_value::<CtStatus>(v.clone());
        let _ = serde_json::from_value::<CtConfig>(v.clone());
        let _ = serde_json::from_value::<TaskStatus>(v);
    }

    #[test]
    fn any_upid_parses_or_fails(text in ".{0,120}") {
        let _ = text.parse::<Upid>();
    }

    #[test]
    fn upid_shaped_text_parses_or_fails(
        fields in proptest::collection::vec("[0-9A-Fa-f:@!é]{0,10}", 0..10),
    ) {
        let text = format!("UPID:{}", fields.join(":"));
        if let Ok(upid) = text.parse::<Upid>() {
            prop_assert!(!upid.to_string().is_empty());
        }
    }

    #[test]
    fn any_property_string_parses(text in ".{0,120}", default_key in "[a-z]{0,6}") {
        let _ = parse_property_string(&text, &default_key);
    }
}

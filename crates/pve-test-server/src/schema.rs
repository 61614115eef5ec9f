//! The Proxmox API schema of the implemented endpoints and a validator that follows
//! pve-common `PVE::JSONSchema::check_prop` (order of checks, error texts, property strings).

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use regex::{Regex, RegexBuilder};
use serde_json::Value;

use crate::formats::check_named_format;

const SCHEMA_JSON: &str = include_str!("../fixtures/pve-api-schema.json");

/// Per-parameter error messages, keyed like Proxmox's `errors` object.
pub type ParamErrors = BTreeMap<String, String>;

/// One method of one API path, from the derived fixture.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Path template, e.g. `/nodes/{node}/lxc/{vmid}/config`.
    pub template: String,
    /// HTTP method.
    pub method: String,
    /// The `parameters` schema (an object schema).
    pub parameters: Value,
    /// The `returns` schema.
    pub returns: Value,
    /// Whether Proxmox runs the handler in the privileged daemon (informational).
    pub protected: bool,
}

/// The endpoints of the fixture.
#[derive(Debug)]
pub struct ApiSchema {
    endpoints: Vec<Endpoint>,
}

impl ApiSchema {
    /// The schema compiled into this crate (see fixtures/README.md for its provenance).
    pub fn builtin() -> &'static ApiSchema {
        static SCHEMA: OnceLock<ApiSchema> = OnceLock::new();
        SCHEMA.get_or_init(|| {
            let raw: BTreeMap<String, BTreeMap<String, Value>> =
                serde_json::from_str(SCHEMA_JSON).expect("fixture pve-api-schema.json is valid");
            let mut endpoints = Vec::new();
            for (template, methods) in raw {
                for (method, info) in methods {
                    endpoints.push(Endpoint {
                        template: template.clone(),
                        method,
                        parameters: info.get("parameters").cloned().unwrap_or(Value::Null),
                        returns: info.get("returns").cloned().unwrap_or(Value::Null),
                        protected: info.get("protected").and_then(Value::as_i64) == Some(1),
                    });
                }
            }
            ApiSchema { endpoints }
        })
    }

    /// All endpoints.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Finds the endpoint for `method` and a path relative to `/api2/json`, with the values of
    /// the `{...}` path segments. `Err(true)` when the path exists with other methods.
    pub fn route(
        &self,
        method: &str,
        path: &str,
    ) -> Result<(&Endpoint, BTreeMap<String, String>), bool> {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let mut path_exists = false;
        for ep in &self.endpoints {
            let tmpl: Vec<&str> = ep.template.split('/').collect();
            if tmpl.len() != segments.len() {
                continue;
            }
            let mut vars = BTreeMap::new();
            let matched = tmpl.iter().zip(&segments).all(|(t, s)| {
                if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                    vars.insert(name.to_string(), (*s).to_string());
                    !s.is_empty()
                } else {
                    t == s
                }
            });
            if matched {
                if ep.method == method {
                    return Ok((ep, vars));
                }
                path_exists = true;
            }
        }
        Err(path_exists)
    }

    /// Finds an endpoint by template and method.
    pub fn endpoint(&self, method: &str, template: &str) -> Option<&Endpoint> {
        self.endpoints
            .iter()
            .find(|e| e.method == method && e.template == template)
    }
}

/// Property names of the form `net[n]` and how many indices Proxmox allows
/// (pve-container: 32 networks, 256 mount points, unused disks and devices).
fn indexed_limit(base: &str) -> usize {
    match base {
        "net" => 32,
        _ => 256,
    }
}

/// Resolves a parameter name against an object schema's properties, expanding `name[n]`.
pub(crate) fn lookup_property<'a>(
    props: &'a serde_json::Map<String, Value>,
    key: &str,
) -> Option<&'a Value> {
    if let Some(schema) = props.get(key) {
        return Some(schema);
    }
    let digits = key.trim_start_matches(|c: char| !c.is_ascii_digit());
    let base = &key[..key.len() - digits.len()];
    if base.is_empty() || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    let index: usize = digits.parse().ok()?;
    if index >= indexed_limit(base) {
        return None;
    }
    props.get(&format!("{base}[n]"))
}

/// Validates the request parameters (all values, including path variables) against an
/// endpoint's `parameters` schema, as Proxmox's RESTHandler does before calling the handler.
pub fn validate_parameters(schema: &Value, params: &BTreeMap<String, Value>) -> ParamErrors {
    let mut errors = ParamErrors::new();
    let empty = serde_json::Map::new();
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let additional = schema.get("additionalProperties");
    check_object("", props, additional, params, &mut errors);
    errors
}

fn check_object(
    path: &str,
    props: &serde_json::Map<String, Value>,
    additional: Option<&Value>,
    value: &BTreeMap<String, Value>,
    errors: &mut ParamErrors,
) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    // Declared properties: missing non-optional ones are errors. Indexed names (`net[n]`)
    // are always optional.
    for (name, sub) in props {
        if name.ends_with("[n]") {
            continue;
        }
        check_prop(value.get(name), sub, &join(name), errors);
    }
    for (key, v) in value {
        let newpath = join(key);
        if let Some(sub) = lookup_property(props, key) {
            if !props.contains_key(key.as_str()) {
                check_prop(Some(v), sub, &newpath, errors);
            }
            if let Some(req) = sub.get("requires").and_then(Value::as_str) {
                if !value.contains_key(req) {
                    add_error(
                        errors,
                        &join(req),
                        &format!("missing property required by '{newpath}'"),
                    );
                }
            }
            continue;
        }
        let allows_additional = match additional {
            None => true,
            Some(Value::Number(n)) => n.as_i64() != Some(0),
            Some(Value::Bool(b)) => *b,
            Some(_) => true,
        };
        if !allows_additional {
            add_error(
                errors,
                &newpath,
                "property is not defined in schema and the schema does not allow additional properties",
            );
        }
    }
}

fn add_error(errors: &mut ParamErrors, path: &str, msg: &str) {
    let path = if path.is_empty() { "_root" } else { path };
    errors
        .entry(path.to_string())
        .and_modify(|e| {
            // Perl joins with a literal backslash-n here (single-quoted '\n').
            e.push_str("\\n");
            e.push_str(msg);
        })
        .or_insert_with(|| msg.to_string());
}

fn is_optional(schema: &Value) -> bool {
    match schema.get("optional") {
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        Some(Value::Bool(b)) => *b,
        _ => false,
    }
}

/// Perl's `is_number` / `is_integer` on the string form of a value.
fn is_number(s: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?$").expect("static regex")
    })
    .is_match(s)
}

fn is_integer(s: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^[+-]?\d+$").expect("static regex"))
        .is_match(s)
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "1".into() } else { "0".into() }),
        _ => None,
    }
}

fn json_num_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `check_prop`: type, then format, pattern, maxLength, minLength, maximum/minimum, enum.
pub fn check_prop(value: Option<&Value>, schema: &Value, path: &str, errors: &mut ParamErrors) {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        if schema.get("type").and_then(Value::as_str) == Some("null") {
            return;
        }
        if !is_optional(schema) {
            add_error(errors, path, "property is missing and it is not optional");
        }
        return;
    };
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    if !check_type(path, ty, value, errors) {
        return;
    }
    match value {
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check_prop(Some(item), item_schema, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::Object(map) => {
            if schema.get("properties").is_some() || schema.get("additionalProperties").is_some() {
                let empty = serde_json::Map::new();
                let props = schema
                    .get("properties")
                    .and_then(Value::as_object)
                    .unwrap_or(&empty);
                let value: BTreeMap<String, Value> =
                    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                check_object(
                    path,
                    props,
                    schema.get("additionalProperties"),
                    &value,
                    errors,
                );
            }
        }
        scalar => {
            let Some(text) = scalar_text(scalar) else {
                return;
            };
            if let Some(format) = schema.get("format") {
                let result = match format {
                    Value::String(name) => check_named_format(name, &text),
                    Value::Object(fmt) => parse_property_string(fmt, &text, path).map(|_| ()),
                    _ => Ok(()),
                };
                if let Err(msg) = result {
                    add_error(errors, path, &format!("invalid format - {msg}"));
                    return;
                }
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                match compile_perl_pattern(pattern) {
                    Some(re) if re.is_match(&text) => {}
                    _ => {
                        add_error(errors, path, "value does not match the regex pattern");
                        return;
                    }
                }
            }
            let chars = text.chars().count() as u64;
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
                if chars > max {
                    add_error(
                        errors,
                        path,
                        &format!("value may only be {max} characters long"),
                    );
                    return;
                }
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
                if chars < min {
                    add_error(
                        errors,
                        path,
                        &format!("value must be at least {min} characters long"),
                    );
                    return;
                }
            }
            if is_number(&text) {
                let n: f64 = text.parse().unwrap_or(f64::NAN);
                if let Some(max) = schema.get("maximum") {
                    let m: f64 = json_num_text(max).parse().unwrap_or(f64::INFINITY);
                    if n > m {
                        add_error(
                            errors,
                            path,
                            &format!("value must have a maximum value of {}", json_num_text(max)),
                        );
                        return;
                    }
                }
                if let Some(min) = schema.get("minimum") {
                    let m: f64 = json_num_text(min).parse().unwrap_or(f64::NEG_INFINITY);
                    if n < m {
                        add_error(
                            errors,
                            path,
                            &format!("value must have a minimum value of {}", json_num_text(min)),
                        );
                        return;
                    }
                }
            }
            if let Some(Value::Array(options)) = schema.get("enum") {
                let found = options
                    .iter()
                    .any(|o| scalar_text(o).as_deref() == Some(&text));
                if !found {
                    let list: Vec<String> = options.iter().filter_map(scalar_text).collect();
                    add_error(
                        errors,
                        path,
                        &format!(
                            "value '{text}' does not have a value in the enumeration '{}'",
                            list.join(", ")
                        ),
                    );
                }
            }
        }
    }
}

fn check_type(path: &str, ty: &str, value: &Value, errors: &mut ParamErrors) -> bool {
    let fail = |errors: &mut ParamErrors, msg: String| {
        add_error(errors, path, &msg);
        false
    };
    match (ty, value) {
        ("" | "any", _) => true,
        ("null", _) => fail(
            errors,
            format!("type check ('{ty}') failed - value is not null"),
        ),
        ("array", Value::Array(_)) | ("object", Value::Object(_)) => true,
        ("array" | "object", _) => fail(errors, format!("type check ('{ty}') failed")),
        (_, Value::Array(_)) => fail(errors, format!("type check ('{ty}') failed - got ARRAY")),
        (_, Value::Object(_)) => fail(errors, format!("type check ('{ty}') failed - got HASH")),
        ("boolean", Value::Bool(_)) => true,
        ("string", _) => true,
        ("boolean", v) => {
            let text = scalar_text(v).unwrap_or_default();
            if text == "1" || text == "0" {
                true
            } else {
                fail(errors, format!("type check ('{ty}') failed - got '{text}'"))
            }
        }
        ("integer", v) => {
            let text = scalar_text(v).unwrap_or_default();
            if is_integer(&text) {
                true
            } else {
                fail(errors, format!("type check ('{ty}') failed - got '{text}'"))
            }
        }
        ("number", v) => {
            let text = scalar_text(v).unwrap_or_default();
            if is_number(&text) {
                true
            } else {
                fail(errors, format!("type check ('{ty}') failed - got '{text}'"))
            }
        }
        _ => true,
    }
}

/// `parse_property_string`: splits `k=v,k2=v2` (a bare value goes to the `default_key`),
/// then checks the result like an object without additional properties. On failure the
/// message has Proxmox's shape: "format error\n" followed by one "path.key: msg\n" line per
/// error (the stringified PVE::Exception).
pub fn parse_property_string(
    format: &serde_json::Map<String, Value>,
    data: &str,
    path: &str,
) -> Result<BTreeMap<String, Value>, String> {
    let mut res: BTreeMap<String, Value> = BTreeMap::new();
    let mut default_key: Option<String> = None;
    for part in data.split(',') {
        if part.trim().is_empty() {
            continue;
        }
        if let Some((k, v)) = part.split_once('=') {
            if k.is_empty() || v.is_empty() {
                return Err("missing key in comma-separated list property\n".into());
            }
            if res.contains_key(k) {
                return Err(format!(
                    "duplicate key in comma-separated list property: {k}\n"
                ));
            }
            let Some(schema) = format.get(k) else {
                return Err(format!(
                    "invalid key in comma-separated list property: {k}\n"
                ));
            };
            let mut v = v.to_string();
            if schema.get("type").and_then(Value::as_str) == Some("boolean") {
                if let Some(b) = parse_boolean(&v) {
                    v = b.to_string();
                }
            }
            res.insert(k.to_string(), Value::String(v));
        } else {
            if let Some(dk) = &default_key {
                return Err(format!(
                    "duplicate key in comma-separated list property: {dk}\n"
                ));
            }
            let Some((key, schema)) = format.iter().find(|(_, s)| {
                matches!(s.get("default_key"), Some(Value::Number(n)) if n.as_i64() == Some(1))
            }) else {
                return Err("value without key, but schema does not define a default key\n".into());
            };
            if res.contains_key(key) {
                return Err(format!(
                    "duplicate key in comma-separated list property: {key}\n"
                ));
            }
            let mut v = part.to_string();
            if schema.get("type").and_then(Value::as_str) == Some("boolean") {
                if let Some(b) = parse_boolean(&v) {
                    v = b.to_string();
                }
            }
            default_key = Some(key.clone());
            res.insert(key.clone(), Value::String(v));
        }
    }
    let mut errors = ParamErrors::new();
    check_object(path, format, Some(&Value::from(0)), &res, &mut errors);
    if errors.is_empty() {
        Ok(res)
    } else {
        let mut msg = String::from("format error\n");
        for (k, v) in &errors {
            msg.push_str(&format!("{k}: {v}\n"));
        }
        Err(msg)
    }
}

fn parse_boolean(v: &str) -> Option<u8> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "on" | "yes" | "true" => Some(1),
        "0" | "off" | "no" | "false" => Some(0),
        _ => None,
    }
}

/// Translates a Perl regex from the schema into Rust `regex` syntax and anchors it as
/// `check_prop` does (`m/^$pattern$/`). Perl's `(?^:...)` ("default flags") becomes `(?:...)`,
/// `(?^i:` becomes `(?i:`, `\z`/`\Z` become `\z`, and octal `\0` becomes `\x00`.
/// Compiled patterns are cached.
pub fn compile_perl_pattern(pattern: &str) -> Option<Regex> {
    static CACHE: OnceLock<Mutex<BTreeMap<String, Option<Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(BTreeMap::new()));
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(re) = cache.get(pattern) {
        return re.clone();
    }
    let translated = translate_perl_regex(pattern);
    let compiled = RegexBuilder::new(&format!("^(?:{translated})$"))
        .build()
        .ok();
    if compiled.is_none() {
        tracing::warn!(pattern, translated, "schema pattern does not compile");
    }
    cache.insert(pattern.to_string(), compiled.clone());
    compiled
}

/// The syntactic part of [`compile_perl_pattern`], exposed for tests.
pub fn translate_perl_regex(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && i + 1 < chars.len() {
            let n = chars[i + 1];
            match n {
                '0' if !chars.get(i + 2).is_some_and(|d| d.is_ascii_digit()) => {
                    out.push_str("\\x00");
                }
                'Z' | 'z' => out.push_str("\\z"),
                _ => {
                    out.push(c);
                    out.push(n);
                }
            }
            i += 2;
            continue;
        }
        if c == '(' && chars.get(i + 1) == Some(&'?') && chars.get(i + 2) == Some(&'^') {
            // (?^flags: ...)  ->  (?flags: ...)  or (?: ...)
            let mut j = i + 3;
            let mut flags = String::new();
            while j < chars.len() && chars[j].is_ascii_alphabetic() {
                flags.push(chars[j]);
                j += 1;
            }
            out.push_str("(?");
            out.push_str(&flags);
            i = j;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn perl_regex_translation() {
        assert_eq!(translate_perl_regex("(?^:a(?^:b))"), "(?:a(?:b))");
        assert_eq!(translate_perl_regex("(?^i:x)"), "(?i:x)");
        let env = compile_perl_pattern(
            r"(?^:(?:\w+=[^\x00-\x08\x10-\x1F\x7F]*)(?:\0\w+=[^\x00-\x08\x10-\x1F\x7F]*)*)",
        )
        .unwrap();
        assert!(env.is_match("A=1\0B=2"));
        assert!(!env.is_match("A=1\x01B"));
        // \x0A lies between the two excluded ranges, so Proxmox lets a newline through.
        assert!(env.is_match("A=1\nB"));
    }

    #[test]
    fn every_schema_pattern_compiles() {
        fn walk(v: &Value, bad: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(p)) = m.get("pattern") {
                        if compile_perl_pattern(p).is_none() {
                            bad.push(p.clone());
                        }
                    }
                    m.values().for_each(|v| walk(v, bad));
                }
                Value::Array(a) => a.iter().for_each(|v| walk(v, bad)),
                _ => {}
            }
        }
        let mut bad = Vec::new();
        for ep in ApiSchema::builtin().endpoints() {
            walk(&ep.parameters, &mut bad);
            walk(&ep.returns, &mut bad);
        }
        assert!(bad.is_empty(), "patterns that do not compile: {bad:?}");
    }

    #[test]
    fn validates_like_proxmox() {
        let ep = ApiSchema::builtin()
            .endpoint("POST", "/nodes/{node}/lxc")
            .unwrap();
        let mut p = BTreeMap::new();
        p.insert("node".to_string(), json!("pve"));
        p.insert("vmid".to_string(), json!("99"));
        p.insert("ostemplate".to_string(), json!("local:vztmpl/x.tar.zst"));
        p.insert("net0".to_string(), json!("name=eth0,ip=300.1.1.1/24"));
        p.insert("net99".to_string(), json!("name=eth0"));
        p.insert("cores".to_string(), json!("x"));
        p.insert("arch".to_string(), json!("sparc"));
        p.insert("unique".to_string(), json!("1"));
        let e = validate_parameters(&ep.parameters, &p);
        // format before bounds, as check_prop does
        assert_eq!(
            e["vmid"],
            "invalid format - value does not look like a valid VM ID\n"
        );
        assert!(e["net0"].starts_with("invalid format - format error\nnet0.ip: invalid format"));
        assert_eq!(
            e["net99"],
            "property is not defined in schema and the schema does not allow additional properties"
        );
        assert_eq!(e["cores"], "type check ('integer') failed - got 'x'");
        assert!(e["arch"].starts_with("value 'sparc' does not have a value in the enumeration"));
        assert_eq!(e["restore"], "missing property required by 'unique'");
    }

    #[test]
    fn return_schemas_catch_bad_answers() {
        let ep = ApiSchema::builtin()
            .endpoint("GET", "/nodes/{node}/lxc/{vmid}/status/current")
            .unwrap();
        let mut e = ParamErrors::new();
        check_prop(
            Some(&json!({"vmid": 100, "status": "running", "ha": {}})),
            &ep.returns,
            "",
            &mut e,
        );
        assert!(e.is_empty(), "{e:?}");
        check_prop(
            Some(&json!({"vmid": "x", "status": "paused"})),
            &ep.returns,
            "",
            &mut e,
        );
        assert!(
            e.contains_key("status") && e.contains_key("vmid") && e.contains_key("ha"),
            "{e:?}"
        );
    }

    #[test]
    fn routes() {
        let s = ApiSchema::builtin();
        let (ep, vars) = s.route("GET", "/nodes/pve/lxc/100/config").unwrap();
        assert_eq!(ep.template, "/nodes/{node}/lxc/{vmid}/config");
        assert_eq!(vars["vmid"], "100");
        assert!(s.route("PATCH", "/nodes/pve/lxc/100/config").unwrap_err());
        assert!(!s.route("GET", "/nope").unwrap_err());
    }
}

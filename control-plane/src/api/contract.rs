//! The OpenAPI document as a contract: what utoipa generates from the handlers,
//! completed with what is true of every operation and is tedious (and easy to
//! forget) to write on each:
//!
//! * every error answer is `application/problem+json`, with the `Problem` schema
//!   narrowed to the codes of that status (`api::problems`), so a client generated
//!   from the spec knows Ferry's errors and a checker (schemathesis, in `make test`)
//!   fails on a code the spec does not list;
//! * the error statuses each operation can answer: 400 when it has parameters or a
//!   body, 401 unless it is public, 403 for changes, 404 for a path with an id, 409
//!   for changes, 413/415/422 with a body, 503 (the database away) always;
//! * the constraints the server enforces on the shared list parameters (`limit`
//!   1..1000, each list's cursor form, `since` ≥ 0).
//!
//! Computed once; `GET /api/v1/openapi.json` serves it.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use super::problems::PROBLEMS;
use super::ApiDoc;

/// The document `GET /api/v1/openapi.json` serves.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| complete(serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()))
}

const UUID_PATTERN: &str = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";

/// The cursor each list writes (`None`: the list has its own, described on it).
fn cursor_schema(operation_id: &str) -> Option<Value> {
    Some(match operation_id {
        // Sequence numbers.
        "events_list" | "events_stream" | "audit_list" => {
            json!({"type": "string", "pattern": "^[0-9]{1,18}$"})
        }
        // Creation time (µs) and id.
        "tasks_list" => {
            json!({"type": "string", "pattern": format!("^[0-9]{{1,15}}_{}", &UUID_PATTERN[1..])})
        }
        // An order's own cursor (the id for the default order, else URL-safe
        // base64): it belongs to the `sort` that made it.
        "vms_list" => {
            json!({"type": "string", "minLength": 1, "maxLength": 4096, "pattern": "^[A-Za-z0-9_-]+$"})
        }
        // The last item's id.
        _ => json!({"type": "string", "format": "uuid", "pattern": UUID_PATTERN}),
    })
}

fn codes_of(status: u16) -> Vec<&'static str> {
    let mut codes: Vec<&'static str> = PROBLEMS
        .iter()
        .filter(|p| p.status == status)
        .map(|p| p.code)
        .collect();
    // Codes answered with more than one status.
    match status {
        400 => codes.push("invalid_body"),
        422 => codes.push("out_of_range"),
        _ => {}
    }
    codes
}

fn problem_response(what: &str, codes: &[&str]) -> Value {
    let list = codes
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    json!({
        "description": format!("{what} (`application/problem+json`; codes: {list}; each is described at `/api/v1/problems/{{code}}`)"),
        "content": {"application/problem+json": {"schema": {
            "allOf": [
                {"$ref": "#/components/schemas/Problem"},
                {"type": "object", "properties": {"code": {"type": "string", "enum": codes}}}
            ]
        }}}
    })
}

/// Where a created object leads: `(operation, status, [(link, operation, id)])`,
/// the id taken from the answer's `id` (or from the request's path).
/// `(link name, target operation, where its `id` comes from)`.
type Link = (&'static str, &'static str, &'static str);

const LINKS: &[(&str, &str, &[Link])] = &[
    (
        "clusters_create",
        "201",
        &[
            ("get", "clusters_get", "$response.body#/id"),
            ("patch", "clusters_patch", "$response.body#/id"),
            ("drs", "drs_get", "$response.body#/id"),
            ("drs_run", "drs_run", "$response.body#/id"),
            (
                "recommendations",
                "drs_recommendations",
                "$response.body#/id",
            ),
            ("rules", "rules_list", "$response.body#/id"),
            ("add_rule", "rules_create", "$response.body#/id"),
        ],
    ),
    (
        "rules_create",
        "201",
        &[
            ("get", "rules_get", "$response.body#/id"),
            ("delete", "rules_delete", "$response.body#/id"),
        ],
    ),
    (
        "schedules_create",
        "201",
        &[
            ("get", "schedules_get", "$response.body#/id"),
            ("patch", "schedules_patch", "$response.body#/id"),
            ("cancel", "schedules_cancel", "$response.body#/id"),
        ],
    ),
    (
        "vms_create",
        "201",
        &[
            ("get", "vms_get", "$response.body#/id"),
            ("patch", "vms_patch", "$response.body#/id"),
            ("power", "vms_power", "$response.body#/id"),
            ("console", "vms_console", "$response.body#/id"),
            ("check", "migrations_check", "$response.body#/id"),
            ("migrate", "migrations_start", "$response.body#/id"),
            ("delete", "vms_delete", "$response.body#/id"),
        ],
    ),
    (
        "migrations_start",
        "202",
        &[
            ("get", "migrations_get", "$response.body#/id"),
            ("cancel", "migrations_cancel", "$response.body#/id"),
        ],
    ),
    (
        "vms_power",
        "202",
        &[("task", "tasks_get", "$response.body#/id")],
    ),
    (
        "tokens_create",
        "201",
        &[("revoke", "tokens_delete", "$response.body#/id")],
    ),
    (
        "maintenance_enter",
        "202",
        &[
            ("get", "maintenance_get", "$request.path.id"),
            ("cancel", "maintenance_cancel", "$request.path.id"),
        ],
    ),
];

/// A string the schema leaves free may still not hold a NUL character
/// (PostgreSQL's text cannot; the server refuses it with 400/422).
fn no_nul(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let is_string = match o.get("type") {
                Some(Value::String(t)) => t == "string",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
                _ => false,
            };
            if is_string
                && !o.contains_key("pattern")
                && !o.contains_key("format")
                && !o.contains_key("enum")
            {
                o.insert("pattern".into(), json!("^[^\\u0000]*$"));
            }
            for (_, child) in o.iter_mut() {
                no_nul(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(no_nul),
        _ => {}
    }
}

fn complete(mut doc: Value) -> Value {
    if let Some(schemas) = doc.pointer_mut("/components/schemas") {
        // Tagged enums refuse unknown fields (`deny_unknown_fields`) as structs
        // do; utoipa says so of structs only.
        for name in ["Repeat", "ScheduledAction"] {
            if let Some(variants) = schemas[name]["oneOf"].as_array_mut() {
                for v in variants {
                    v["additionalProperties"] = json!(false);
                    if v["properties"].get("at").is_some() {
                        v["properties"]["at"] =
                            json!({"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"});
                    }
                }
            }
        }
        no_nul(schemas);
    }
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return doc;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            if let Some(op) = op.as_object_mut() {
                complete_operation(path, method, op);
                if let Some(ps) = op.get_mut("parameters") {
                    no_nul(ps);
                }
                add_links(op);
            }
        }
    }
    doc
}

fn add_links(op: &mut Map<String, Value>) {
    let id = op
        .get("operationId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    for (from, status, links) in LINKS {
        if *from != id {
            continue;
        }
        let Some(r) = op.get_mut("responses").and_then(|r| r.get_mut(*status)) else {
            continue;
        };
        let mut m = Map::new();
        for (name, to, value) in links.iter() {
            m.insert(
                (*name).to_string(),
                json!({"operationId": to, "parameters": {"id": value}}),
            );
        }
        r["links"] = Value::Object(m);
    }
}

fn complete_operation(path: &str, method: &str, op: &mut Map<String, Value>) {
    let id = op
        .get("operationId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let public = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().all(|r| r.as_object().is_some_and(Map::is_empty)));
    let changes = method != "get";
    let has_body = op.contains_key("requestBody");
    let params: Vec<(String, String)> = op
        .get("parameters")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    (
                        p["in"].as_str().unwrap_or_default().to_string(),
                        p["name"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let path_params = params.iter().any(|(i, _)| i == "path") || path.contains('{');
    let query = |n: &str| params.iter().any(|(i, name)| i == "query" && name == n);
    let query_params = params.iter().any(|(i, _)| i == "query");

    // Shared list parameters: the server's own bounds.
    if let Some(ps) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in ps.iter_mut() {
            if p["in"] != "query" {
                continue;
            }
            match p["name"].as_str() {
                Some("limit") => {
                    p["schema"] =
                        json!({"type": "integer", "format": "int32", "minimum": 1, "maximum": 1000})
                }
                Some("cursor") => {
                    if let Some(s) = cursor_schema(&id) {
                        p["schema"] = s;
                    }
                }
                Some("since") => p["schema"]["minimum"] = json!(0),
                _ => {}
            }
        }
    }

    let responses = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("responses is an object");
    // Declared error answers: problem+json, codes of their status.
    for (status, r) in responses.iter_mut() {
        let Ok(s) = status.parse::<u16>() else {
            continue;
        };
        if s >= 400 {
            let what = r["description"].as_str().unwrap_or_default().to_string();
            let what = if what.is_empty() {
                canonical(s).to_string()
            } else {
                what
            };
            *r = problem_response(&what, &codes_of(s));
        }
    }
    let mut add = |s: u16, what: &str, codes: Vec<&'static str>| {
        responses
            .entry(s.to_string())
            .or_insert_with(|| problem_response(what, &codes));
    };
    if path_params || query_params || has_body {
        let mut codes = Vec::new();
        if path_params {
            codes.push("invalid_id");
        }
        if query_params {
            codes.extend(["invalid_query", "out_of_range"]);
        }
        if query("cursor") {
            codes.push("invalid_cursor");
        }
        if has_body {
            codes.extend([
                "invalid_json",
                "invalid_body",
                "invalid_address",
                "invalid_csr",
            ]);
        }
        add(400, "The request is malformed", codes);
    }
    if !public {
        add(401, "No valid token", vec!["unauthorized"]);
    }
    if changes && !public {
        add(
            403,
            "The token's role does not allow this",
            vec!["forbidden"],
        );
    }
    if path_params {
        add(404, "No object with this id", vec!["not_found"]);
    }
    if changes && !public {
        add(
            409,
            "The state of things does not allow this now",
            codes_of(409),
        );
    }
    if has_body {
        add(
            413,
            "The body is larger than 1 MiB",
            vec!["payload_too_large"],
        );
        add(
            415,
            "The body is not application/json",
            vec!["unsupported_media_type"],
        );
        add(422, "The body is understood and refused", codes_of(422));
    }
    if !public {
        add(
            503,
            "The database is unavailable; retry (Retry-After)",
            vec!["unavailable"],
        );
    }
    // A 404 or 409 the handler declared keeps its (narrower) description, with
    // every code of its status: the catalogue is the one list.
    for s in [404u16, 409, 422] {
        if let Some(r) = responses.get_mut(&s.to_string()) {
            let what = r["description"].as_str().unwrap_or_default().to_string();
            let what = what
                .split(" (`application/problem+json`")
                .next()
                .unwrap_or_default()
                .to_string();
            *r = problem_response(&what, &codes_of(s));
        }
    }
}

fn canonical(status: u16) -> &'static str {
    axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_answer_is_problem_json_with_its_codes() {
        let doc = document();
        let mut seen = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, r) in op["responses"].as_object().unwrap() {
                    if status.parse::<u16>().unwrap_or(0) < 400 {
                        continue;
                    }
                    let content = r["content"].as_object().unwrap();
                    assert_eq!(
                        content.keys().collect::<Vec<_>>(),
                        vec!["application/problem+json"],
                        "{method} {path} {status}"
                    );
                    seen += 1;
                }
                if !path.starts_with("/api/v1/problems") && path != "/api/v1/health" {
                    assert!(op["responses"].get("401").is_some(), "{method} {path}");
                }
            }
        }
        assert!(seen > 100);
        // A list's limit is bounded as the server bounds it.
        let vms = &doc["paths"]["/api/v1/vms"]["get"]["parameters"];
        let limit = vms
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap();
        assert_eq!(limit["schema"]["minimum"], 1);
        assert_eq!(limit["schema"]["maximum"], 1000);
    }
}

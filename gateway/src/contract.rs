//! What the OpenAPI document must say beyond what each handler's annotation says,
//! applied once to the whole document so that no handler can forget it:
//!
//! - **Shared responses**, declared once under `components.responses` and referred
//!   to by every operation that can answer them: a malformed path or query (400), a
//!   body that is not JSON or not the schema (400, 422), too large (413), without a
//!   JSON content type (415), an unusable `Idempotency-Key` (400, 409), no token
//!   where one is needed or a bad one anywhere (401), the wrong role (403), a missing resource (404), the rate limit
//!   (429 with `Retry-After`). Where a handler already documents the status, its
//!   own description stays and the shared codes are added to it.
//! - **Constraints** the service enforces, written into the schemas from the very
//!   constants the validation uses (one source: change a limit and both move).
//!   The rules no schema can say (an on-sale before the show, a seat that exists)
//!   stay 422s with their codes, listed on the operation.

use proto::Role;
use serde_json::{Value, json};

/// The document as served at `/openapi.json`, completed. It stays JSON from here
/// on: some of what it says (`not`, `propertyNames`, a schema of any value) has no
/// place in utoipa's typed model.
pub fn complete(doc: utoipa::openapi::OpenApi) -> Value {
    let mut value = serde_json::to_value(&doc).expect("the OpenAPI document serialises");
    shared_responses(&mut value);
    constraints(&mut value);
    links(&mut value);
    roles(&mut value);
    value
}

/// Says on every operation who may call it: OpenAPI 3.1 lets a bearer requirement
/// list role names, and the description says it in words.
fn roles(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        for operation in item
            .as_object_mut()
            .into_iter()
            .flat_map(|i| i.values_mut())
        {
            let secured = operation
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
            // The role is the one the handler's extractor (`platform::auth::Operator`,
            // `Admin`) demands, declared beside it as the bearer scope; an operation
            // without one takes any account.
            let declared = operation["security"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.get("bearer")?.as_array()?.first()?.as_str())
                .find_map(Role::parse);
            let (role, words) = if !secured {
                (None, "Needs: nothing (no token).")
            } else {
                match declared {
                    Some(Role::Admin) => (Some(Role::Admin), "Needs: an admin's token."),
                    Some(Role::Operator) => (
                        Some(Role::Operator),
                        "Needs: an operator's or an admin's token.",
                    ),
                    Some(Role::Fan) | None => (
                        Some(Role::Fan),
                        "Needs: any account's token (fan, operator or admin).",
                    ),
                }
            };
            if let Some(role) = role {
                for requirement in operation["security"].as_array_mut().into_iter().flatten() {
                    if let Some(bearer) = requirement.get_mut("bearer") {
                        *bearer = json!([role.as_str()]);
                    }
                }
            }
            let description = operation["description"].as_str().unwrap_or_default();
            operation["description"] = json!(if description.is_empty() {
                words.to_owned()
            } else {
                format!("{description}\n\n{words}")
            });
        }
    }
}

/// Where an id a response carries can go next (OpenAPI links): what a client
/// generator shows as "next", and what lets a stateful test reach real resources.
fn links(doc: &mut Value) {
    // (path, method, status, the id's field in the body, the operations taking it)
    let flows: [(&str, &str, &str, &str, &[&str]); 6] = [
        ("/v1/auth/register", "post", "201", "user_id", &["set_role"]),
        ("/v1/venues", "post", "201", "venue_id", &["get_venue"]),
        (
            "/v1/events",
            "post",
            "201",
            "event_id",
            &[
                "get_event",
                "get_seats",
                "get_lottery",
                "join",
                "live_snapshot",
                "get_stats",
                "get_history",
                "get_audit",
                "pull_lever",
                "set_admission",
                "rebuild_seat_map",
                "restore",
            ],
        ),
        (
            "/v1/events/{event_id}/requests",
            "post",
            "202",
            "request_id",
            &["get_request", "leave", "post_checkout"],
        ),
        (
            "/v1/requests/{request_id}/checkout",
            "post",
            "200",
            "order_id",
            &["get_order"],
        ),
        (
            "/v1/events/{event_id}",
            "get",
            "200",
            "event_id",
            &["get_seats", "join", "live_snapshot", "get_stats"],
        ),
    ];
    for (path, method, status, field, targets) in flows {
        let Some(response) = doc
            .pointer_mut(&format!(
                "/paths/{}/{method}/responses/{status}",
                path.replace('~', "~0").replace('/', "~1")
            ))
            .filter(|r| r.get("$ref").is_none())
        else {
            continue;
        };
        let links: serde_json::Map<String, Value> = targets
            .iter()
            .map(|target| {
                (
                    target.to_string(),
                    json!({
                        "operationId": target,
                        "parameters": {field: format!("$response.body#/{field}")},
                        "description": format!("the {field} this answer carries"),
                    }),
                )
            })
            .collect();
        response["links"] = Value::Object(links);
    }
}

/// A shared response: its name under `components.responses`, status, description.
struct Shared {
    name: &'static str,
    status: &'static str,
    description: &'static str,
}

const BAD_PATH: Shared = Shared {
    name: "InvalidPath",
    status: "400",
    description: "`invalid_path`: a path parameter is not of its type (an id that is not a UUID)",
};
const BAD_QUERY: Shared = Shared {
    name: "InvalidQuery",
    status: "400",
    description: "`invalid_query`: a query parameter is unknown, not of its type or out of range",
};
const BAD_BODY: Shared = Shared {
    name: "MalformedBody",
    status: "400",
    description: "`malformed_json`: the body is not JSON",
};
const INVALID_BODY: Shared = Shared {
    name: "InvalidBody",
    status: "422",
    description: "`invalid_request`: the body is JSON but not of the schema (a missing or unknown field, a value out of range)",
};
const TOO_LARGE: Shared = Shared {
    name: "PayloadTooLarge",
    status: "413",
    description: "`payload_too_large`: the body is larger than the gateway accepts",
};
const NOT_JSON: Shared = Shared {
    name: "UnsupportedMediaType",
    status: "415",
    description: "`unsupported_media_type`: the body is not sent as `application/json`",
};
const BAD_KEY: Shared = Shared {
    name: "InvalidIdempotencyKey",
    status: "400",
    description: "`invalid_idempotency_key`: the `Idempotency-Key` is not 1 to 255 visible ASCII characters",
};
const KEY_CONFLICT: Shared = Shared {
    name: "IdempotencyConflict",
    status: "409",
    description: "`idempotency_key_reused`: the key was used with another body; `idempotency_key_in_flight`: the first call with this key is still running",
};
const UNAUTHENTICATED: Shared = Shared {
    name: "Unauthenticated",
    status: "401",
    description: "`unauthenticated`: no bearer token where one is needed; `invalid_token`: a token that is forged, expired or not for onsale (refused wherever it is sent); `session_ended`: its session was signed out; `token_outdated`: the account's role changed since (refresh it)",
};
const FORBIDDEN: Shared = Shared {
    name: "Forbidden",
    status: "403",
    description: "`forbidden`: the caller's role may not do this",
};
const NOT_FOUND: Shared = Shared {
    name: "NotFound",
    status: "404",
    description: "the resource the path names does not exist (`event_not_found`, `venue_not_found`, `request_not_found`, `order_not_found`, `user_not_found`, `not_found`)",
};
const RATE_LIMITED: Shared = Shared {
    name: "RateLimited",
    status: "429",
    description: "`rate_limited`: too many calls from this address or account; `Retry-After` says when to come back",
};

const ALL: [&Shared; 12] = [
    &BAD_PATH,
    &BAD_QUERY,
    &BAD_BODY,
    &INVALID_BODY,
    &TOO_LARGE,
    &NOT_JSON,
    &BAD_KEY,
    &KEY_CONFLICT,
    &UNAUTHENTICATED,
    &FORBIDDEN,
    &NOT_FOUND,
    &RATE_LIMITED,
];

fn error_content() -> Value {
    json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}})
}

fn shared_responses(doc: &mut Value) {
    let components = doc
        .as_object_mut()
        .expect("an object")
        .entry("components")
        .or_insert_with(|| json!({}));
    let responses = components
        .as_object_mut()
        .expect("components")
        .entry("responses")
        .or_insert_with(|| json!({}));
    for shared in ALL {
        let mut response = json!({"description": shared.description, "content": error_content()});
        if shared.status == "429" {
            response["headers"] = json!({"Retry-After": {
                "description": "seconds to wait before trying again",
                "schema": {"type": "integer", "minimum": 1}
            }});
        }
        responses[shared.name] = response;
    }

    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, operation) in item.iter_mut() {
            if !["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            let params: Vec<(String, String)> = operation["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            (
                                p["in"].as_str().unwrap_or_default().to_owned(),
                                p["name"].as_str().unwrap_or_default().to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let has = |place: &str| params.iter().any(|(p, _)| p == place);
            let mut wanted: Vec<&Shared> = Vec::new();
            // Every call passes the per-address limit first; a token, when one is
            // sent, must verify, on public routes too.
            wanted.extend([&RATE_LIMITED, &UNAUTHENTICATED]);
            if path.contains('{') || has("path") {
                wanted.extend([&BAD_PATH, &NOT_FOUND]);
            }
            if has("query") {
                wanted.push(&BAD_QUERY);
            }
            if operation.get("requestBody").is_some() {
                wanted.extend([&BAD_BODY, &INVALID_BODY, &TOO_LARGE, &NOT_JSON]);
            }
            if params
                .iter()
                .any(|(p, n)| p == "header" && n.eq_ignore_ascii_case("idempotency-key"))
            {
                wanted.extend([&BAD_KEY, &KEY_CONFLICT]);
            }
            if operation
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| !s.is_empty())
            {
                wanted.push(&FORBIDDEN);
            }
            let responses = operation
                .as_object_mut()
                .expect("an operation")
                .entry("responses")
                .or_insert_with(|| json!({}));
            for shared in wanted {
                add_response(responses, shared);
            }
        }
    }
}

/// Puts `shared` under its status: a reference when the operation says nothing of
/// that status, else its codes added to the operation's own description.
fn add_response(responses: &mut Value, shared: &Shared) {
    match responses.get_mut(shared.status) {
        None => {
            responses[shared.status] =
                json!({"$ref": format!("#/components/responses/{}", shared.name)});
        }
        Some(own) if own.get("$ref").is_none() => {
            let description = own["description"].as_str().unwrap_or_default().to_owned();
            if !description.contains(shared.description) {
                own["description"] = json!(if description.is_empty() {
                    shared.description.to_owned()
                } else {
                    format!("{description}; or {}", shared.description)
                });
            }
            if own.get("content").is_none() {
                own["content"] = error_content();
            }
        }
        Some(_) => {}
    }
}

/// The service's limits, written into the schemas from the constants that enforce
/// them.
fn constraints(doc: &mut Value) {
    use proto::wire::queue::{ADMISSION_PER_SECOND, MAX_SEATS_PER_REQUEST};
    let schemas = &mut doc["components"]["schemas"];
    let credentials = &mut schemas["Credentials"]["properties"];
    credentials["password"]["minLength"] = json!(crate::accounts::MIN_PASSWORD_CHARS);
    credentials["password"]["maxLength"] = json!(crate::accounts::MAX_PASSWORD_CHARS);
    credentials["email"]["maxLength"] = json!(crate::accounts::MAX_EMAIL_CHARS);

    let per_second = &mut schemas["SetAdmission"]["properties"]["per_second"];
    per_second["minimum"] = json!(*ADMISSION_PER_SECOND.start());
    per_second["maximum"] = json!(*ADMISSION_PER_SECOND.end());

    // A booking ask has two shapes, never both (waiting_room::requests::Ask::parse).
    let ask = schemas["CreateRequest"].clone();
    let description = ask["description"].clone();
    schemas["CreateRequest"] = json!({
        "description": description,
        "oneOf": [
            {
                "title": "Seats",
                "description": "specific seats, as picked on the seat map",
                "type": "object",
                "additionalProperties": false,
                "required": ["seats"],
                "properties": {"seats": {
                    "type": "array", "minItems": 1, "maxItems": MAX_SEATS_PER_REQUEST,
                    "uniqueItems": true,
                    "items": {"type": "string", "pattern": "^[A-Za-z0-9_]+-[A-Za-z0-9]+-[1-9][0-9]*$"},
                    "example": ["Floor-A-1", "Floor-A-2"]
                }}
            },
            {
                "title": "BestAvailable",
                "description": "the best adjacent seats, optionally in one section or one price tier (not both)",
                "type": "object",
                "additionalProperties": false,
                "required": ["quantity"],
                "properties": {
                    "quantity": {"type": "integer", "minimum": 1, "maximum": MAX_SEATS_PER_REQUEST, "example": 2},
                    "section": {"type": ["string", "null"]},
                    "price_tier": {"type": ["string", "null"]}
                },
                "not": {"required": ["section", "price_tier"], "properties": {
                    "section": {"type": "string"}, "price_tier": {"type": "string"}
                }}
            }
        ]
    });

    use inventory::venues::{
        MAX_NAME_CHARS, MAX_ROW_LABEL, MAX_ROWS, MAX_SEATS_PER_ROW, MAX_SECTION_NAME, MAX_SECTIONS,
    };
    let schemas = &mut doc["components"]["schemas"];
    // inventory::venues::is_display_name: no control characters, not only spaces.
    const NO_CONTROL: &str = "[^\\x00-\\x1f\\x7f-\\x9f]";
    let named = |schema: &mut Value| {
        schema["minLength"] = json!(1);
        schema["maxLength"] = json!(MAX_NAME_CHARS);
        schema["pattern"] = json!(format!(
            "^{NO_CONTROL}*[^\\s\\x00-\\x1f\\x7f-\\x9f]{NO_CONTROL}*$"
        ));
    };
    named(&mut schemas["CreateVenue"]["properties"]["name"]);
    named(&mut schemas["CreateEvent"]["properties"]["name"]);
    let venue = &mut schemas["CreateVenue"]["properties"]["sections"];
    venue["minItems"] = json!(1);
    venue["maxItems"] = json!(MAX_SECTIONS);
    let section = &mut schemas["SectionSpec"]["properties"];
    let tier_pattern = format!("^[A-Za-z0-9_]{{1,{MAX_SECTION_NAME}}}$");
    section["name"]["pattern"] = json!(tier_pattern);
    section["price_tier"]["pattern"] = json!(tier_pattern);
    section["rows"]["minItems"] = json!(1);
    section["rows"]["maxItems"] = json!(MAX_ROWS);
    let row = &mut schemas["RowSpec"]["properties"];
    row["label"]["pattern"] = json!(format!("^[A-Za-z0-9]{{1,{MAX_ROW_LABEL}}}$"));
    row["seats"]["minimum"] = json!(1);
    row["seats"]["maximum"] = json!(MAX_SEATS_PER_ROW);

    let event = &mut schemas["CreateEvent"]["properties"];
    event["max_per_fan"]["minimum"] = json!(1);
    event["max_per_fan"]["maximum"] = json!(inventory::events::MAX_PER_FAN);
    event["hold_seconds"]["minimum"] = json!(*inventory::events::HOLD_SECONDS.start());
    event["hold_seconds"]["maximum"] = json!(*inventory::events::HOLD_SECONDS.end());
    event["admission_per_second"]["minimum"] = json!(*ADMISSION_PER_SECOND.start());
    event["admission_per_second"]["maximum"] = json!(*ADMISSION_PER_SECOND.end());
    event["prices"]["additionalProperties"] = json!({
        "type": "integer", "minimum": 0, "maximum": inventory::events::MAX_PRICE_CENTS
    });
    event["prices"]["propertyNames"] = json!({"pattern": tier_pattern});

    let webhook_id = &mut schemas["Webhook"]["properties"]["id"];
    webhook_id["minLength"] = json!(1);
    webhook_id["maxLength"] = json!(payments::routes::MAX_WEBHOOK_ID);
    webhook_id["pattern"] = json!(format!("^{NO_CONTROL}+$"));

    // The card's shape (payments::card); the Luhn check, an expiry in the past and
    // a cvc of the wrong length for the brand are 422s no pattern can say.
    let card = &mut schemas["Checkout"]["properties"];
    card["card_number"]["pattern"] = json!("^[0-9]{12,19}$");
    card["expiry"]["pattern"] = json!("^(0[1-9]|1[0-2])/[0-9]{2}$");
    card["cvc"]["pattern"] = json!("^[0-9]{3,4}$");

    // What a lever changed from and to is whatever the lever sets: any JSON value.
    for field in ["from", "to"] {
        let value = &mut schemas["AuditEntry"]["properties"][field];
        let description = value["description"].clone();
        *value = json!({"description": description});
    }

    // crate::accounts::normalize_email: trimmed (of Unicode White_Space, what Rust's
    // trim takes), then one @, a dotted domain, no spaces or control characters.
    const SPACE: &str = "[\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*";
    const C: &str = "@\\s\\x00-\\x1f\\x7f-\\x9f";
    schemas["Credentials"]["properties"]["email"]["pattern"] = json!(format!(
        "^{SPACE}[^{C}]+@[^.{C}][^{C}]*\\.[^{C}]*[^.{C}]{SPACE}$"
    ));

    let params = |path: &str, method: &str| {
        format!(
            "/paths/{}/{method}/parameters",
            path.replace('~', "~0").replace('/', "~1")
        )
    };
    let mut limit_param = |pointer: String, name: &str, range: &std::ops::RangeInclusive<u32>| {
        if let Some(list) = doc.pointer_mut(&pointer).and_then(Value::as_array_mut) {
            for param in list.iter_mut().filter(|p| p["name"] == name) {
                param["schema"]["minimum"] = json!(*range.start());
                param["schema"]["maximum"] = json!(*range.end());
            }
        }
    };
    limit_param(
        params("/v1/ops/events/{event_id}/stats/history", "get"),
        "seconds",
        &waiting_room::routes::HISTORY_SECONDS,
    );
    limit_param(
        params("/v1/events", "get"),
        "limit",
        &inventory::routes::LIST_LIMIT,
    );

    // Headers and path words the service reads as they are.
    let name_pattern = format!("^[A-Za-z0-9_]{{1,{}}}$", waiting_room::requests::MAX_NAME);
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            for (_, operation) in item.as_object_mut().into_iter().flatten() {
                for param in operation
                    .get_mut("parameters")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    let name = param["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    match name.as_str() {
                        "idempotency-key" => {
                            param["schema"] = json!({
                                "type": "string", "minLength": 1,
                                "maxLength": waiting_room::requests::MAX_IDEMPOTENCY_KEY,
                                "pattern": "^[!-~]+$", "example": "3f1c2a7e-checkout-1"
                            });
                        }
                        "onsale-signature" => {
                            param["required"] = json!(true);
                            param["schema"] =
                                json!({"type": "string", "pattern": "^t=[0-9]+,v1=[0-9a-f]{64}$"});
                        }
                        "request_id" if param["in"] == "query" => {
                            param["schema"] = json!({"type": "string", "format": "uuid"});
                        }
                        "action" if path.ends_with("{action}") => {
                            param["schema"] = json!({"type": "string", "enum": ["open", "pause", "resume", "close"]});
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    let best = &mut doc["components"]["schemas"]["CreateRequest"]["oneOf"][1]["properties"];
    best["section"]["pattern"] = json!(name_pattern);
    best["price_tier"]["pattern"] = json!(name_pattern);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves() {
        let doc = crate::openapi();
        let text = doc.to_string();
        for shared in ALL {
            assert!(
                doc["components"]["responses"][shared.name].is_object(),
                "{} declared",
                shared.name
            );
        }
        let mut rest = text.as_str();
        while let Some(at) = rest.find("#/components/") {
            let tail = &rest[at + 2..];
            let end = tail.find('"').expect("a closing quote");
            let pointer = format!("/{}", &tail[..end]);
            assert!(
                doc.pointer(&pointer).is_some(),
                "{pointer} does not resolve"
            );
            rest = &tail[end..];
        }
    }

    #[test]
    fn every_operation_says_who_may_call_it() {
        let doc = crate::openapi();
        let op = |path: &str, method: &str| doc["paths"][path][method].clone();
        assert_eq!(
            op("/v1/venues", "post")["security"][0]["bearer"],
            json!(["admin"])
        );
        assert_eq!(
            op("/v1/ops/events/{event_id}/stats", "get")["security"][0]["bearer"],
            json!(["operator"])
        );
        assert_eq!(
            op("/v1/events/{event_id}/requests", "post")["security"][0]["bearer"],
            json!(["fan"])
        );
        assert!(op("/v1/events", "get").get("security").is_none());
        for item in doc["paths"].as_object().expect("paths").values() {
            for operation in item.as_object().expect("item").values() {
                let said = operation["description"].as_str().unwrap_or_default();
                assert!(said.contains("Needs: "), "{}", operation["operationId"]);
            }
        }
    }

    #[test]
    fn links_name_operations_that_exist() {
        let doc = crate::openapi();
        let operations: std::collections::BTreeSet<&str> = doc["paths"]
            .as_object()
            .expect("paths")
            .values()
            .flat_map(|item| item.as_object().expect("item").values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        let mut seen = 0;
        for item in doc["paths"].as_object().expect("paths").values() {
            for op in item.as_object().expect("item").values() {
                for response in op["responses"]
                    .as_object()
                    .into_iter()
                    .flat_map(|r| r.values())
                {
                    for link in response["links"]
                        .as_object()
                        .into_iter()
                        .flat_map(|l| l.values())
                    {
                        let target = link["operationId"].as_str().expect("operationId");
                        assert!(operations.contains(target), "a link to {target}");
                        seen += 1;
                    }
                }
            }
        }
        assert!(seen >= 20, "only {seen} links");
    }

    #[test]
    fn a_path_with_an_id_documents_a_bad_id_and_a_missing_one() {
        let doc = crate::openapi();
        let responses = &doc["paths"]["/v1/events/{event_id}"]["get"]["responses"];
        assert_eq!(
            responses["400"]["$ref"],
            "#/components/responses/InvalidPath"
        );
        assert!(responses["404"].is_object());
        assert!(responses["429"].is_object());
    }
}

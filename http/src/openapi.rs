//! The published description of every route, kept beside the code that
//! serves it and filtered per listener so a client sees only what it can call.

use serde_json::{Value, json};

/// Every route of both listeners, each path marked with the listener that
/// serves it (`x-muhr-listener`: public, mtls or both) and what it needs
/// configured (`x-muhr-needs`). Callers get [`openapi_for`] their listener.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// The description of exactly what one listener serves: its paths, with the
/// citizens' routes only when `[citizens]` is configured, the portal's calls
/// only with `[portal]` (its pages are not APIs and are not listed), and
/// `/tsa` only when the TSA is enabled.
pub fn openapi_for(listener: &str, citizens: bool, portal: bool, tsa: bool) -> String {
    let mut doc: Value = match serde_json::from_str(OPENAPI) {
        Ok(d) => d,
        Err(e) => return json!({ "error": e.to_string() }).to_string(),
    };
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        paths.retain(|_, item| {
            let on = item.get("x-muhr-listener").and_then(Value::as_str);
            let needs = item.get("x-muhr-needs").and_then(Value::as_str);
            (on == Some(listener) || on == Some("both"))
                && match needs {
                    Some("citizens") => citizens,
                    Some("portal") => portal,
                    Some("tsa") => tsa,
                    _ => true,
                }
        });
    }
    doc["servers"] = json!([{ "url": "/", "description": listener }]);
    doc.to_string()
}

//! ID tokens as a hostile or careless provider could send them.

use super::*;

fn verifier() -> Verifier {
    Verifier::new(OidcConfig {
        issuer: "https://id.example.uz".into(),
        audience: "muhr".into(),
        jwks_url: None,
        jwks_file: Some("/nonexistent".into()),
        jwks_ca_file: None,
        jwks_refresh_seconds: 3600,
        jwks_min_refetch_seconds: 10,
        leeway_seconds: 60,
        max_auth_age_seconds: 3600,
        assurance: Assurance::default(),
        claims: ClaimNames::default(),
        client_id: None,
        client_secret_env: None,
        authorization_endpoint: None,
        token_endpoint: None,
    })
    .unwrap()
}

fn claims(now: i64) -> serde_json::Map<String, Value> {
    serde_json::json!({
        "iss": "https://id.example.uz", "aud": ["other", "muhr"], "azp": "muhr",
        "sub": "u1", "exp": now + 300, "iat": now - 10, "auth_time": now - 20,
        "acr": "high",
        "pinfl": "31505851234567", "family_name": "Toshmatov", "given_name": "Sardor",
    })
    .as_object()
    .unwrap()
    .clone()
}

#[test]
fn claim_rules() {
    let v = verifier();
    let t = SystemTime::now();
    let now = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let c = v.check_claims(&claims(now), t).unwrap();
    assert_eq!(
        (c.pinfl.as_str(), c.assurance.as_str()),
        ("31505851234567", "high")
    );
    assert_eq!(c.patronymic, None);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("iss", "https://evil".into(), "iss"),
        ("aud", "other".into(), "aud"),
        ("exp", (now - 61).into(), "expired"),
        ("nbf", (now + 61).into(), "not valid yet"),
        ("iat", (now + 61).into(), "future"),
        ("iat", Value::Null, "iat"),
        ("acr", "low".into(), "below"),
        ("acr", "unheard-of".into(), "below"),
        ("pinfl", "".into(), "pinfl"),
        // A token issued to another client that lists us among several.
        ("azp", "other".into(), "azp"),
        ("azp", Value::Null, "azp is required"),
        // A login older than the configured hour, or none stated.
        ("auth_time", (now - 3661 - 60).into(), "older than"),
        ("auth_time", Value::Null, "auth_time"),
        ("auth_time", (now + 61).into(), "future"),
    ];
    for (claim, value, want) in cases {
        let mut c = claims(now);
        c.insert(claim.into(), value.clone());
        let e = v.check_claims(&c, t).unwrap_err();
        let text = format!("{e:?}");
        assert!(text.contains(want), "{claim}={value}: {text}");
    }
    // A token that does not say when its login was.
    let mut c = claims(now);
    c.remove("auth_time");
    let e = format!("{:?}", v.check_claims(&c, t).unwrap_err());
    assert!(e.contains("auth_time is required"), "{e}");
    // One audience needs no azp.
    let mut c = claims(now);
    c.insert("aud".into(), "muhr".into());
    c.remove("azp");
    assert!(v.check_claims(&c, t).is_ok());
    // Within the leeway, a just-expired token still counts.
    let mut c = claims(now);
    c.insert("exp".into(), (now - 30).into());
    assert!(v.check_claims(&c, t).is_ok());
}

#[test]
fn config_rules() {
    let mut c = verifier().config().clone();
    c.jwks_url = Some("http://x".into());
    assert!(c.validate().is_err());
    c.jwks_file = None;
    c.assurance.minimum = "top".into();
    assert!(c.validate().is_err());
}

/// The key set that decides who a citizen is never crosses the network
/// in the clear: a man in the middle would serve their own keys.
#[test]
fn a_plain_http_key_set_off_this_machine_is_refused() {
    let mut c = verifier().config().clone();
    c.jwks_file = None;
    for (url, ok) in [
        ("https://id.egov.uz/jwks", true),
        ("http://127.0.0.1:9000/jwks", true),
        ("http://localhost/jwks", true),
        ("http://[::1]:80/jwks", true),
        ("http://id.egov.uz/jwks", false),
        ("http://127.0.0.1.evil.example/jwks", false),
        ("http://localhost@evil.example/jwks", false),
        ("ftp://127.0.0.1/jwks", false),
    ] {
        c.jwks_url = Some(url.into());
        assert_eq!(c.validate().is_ok(), ok, "{url}");
    }
    c.jwks_url = Some("https://id.egov.uz/jwks".into());
    c.max_auth_age_seconds = 2 * 86_400;
    assert!(c.validate().is_err(), "more than a day");
}

use super::*;

fn builtin(name: &str) -> String {
    BUILTIN
        .iter()
        .find(|(f, _)| *f == format!("{name}.toml"))
        .map(|(_, t)| t.to_string())
        .unwrap()
}

#[test]
fn shipped_profiles_load() {
    let p = Profiles::builtin().unwrap();
    let names: Vec<_> = p.names().collect();
    for n in [
        "individual-auth",
        "individual-sign",
        "issuing-ca",
        "legal-entity-sign",
        "ocsp-signer",
        "root-ca",
        "tsa",
    ] {
        assert!(names.contains(&n), "{n} missing");
    }
    let tsa = p.get("tsa").unwrap();
    assert_eq!(tsa.extended_key_usage, vec![TIME_STAMPING]);
    assert!(tsa.extended_key_usage_critical);
    let sign = p.get("individual-sign").unwrap();
    assert_eq!(
        sign.key_usage,
        vec![KeyUsageBit::DigitalSignature, KeyUsageBit::NonRepudiation]
    );
    assert_eq!(sign.validity, Validity::Months(24));
    assert!(sign.required_fields().contains(&"pinfl"));
    let le = p.get("legal-entity-sign").unwrap();
    assert!(le.required_fields().contains(&"organization.tin"));
    assert!(
        le.subject
            .iter()
            .any(|a| a.oid.to_string() == "1.2.860.3.16.1.1")
    );
}

fn refused(name: &str, text: &str) -> PolicyError {
    parse(&format!("{name}.toml"), text).expect_err("profile accepted")
}

#[test]
fn thirty_month_end_entity_profile_is_refused() {
    let text = builtin("individual-sign").replace("24 months", "30 months");
    let e = refused("individual-sign", &text);
    assert_eq!(e.field, "validity");
    assert!(e.rule.contains("at most 24 months"), "{e}");
    assert_eq!(e.file, "individual-sign.toml");
    let text = builtin("individual-sign").replace("24 months", "731 days");
    assert_eq!(refused("individual-sign", &text).field, "validity");
    let text = builtin("individual-sign").replace("24 months", "730 days");
    parse("individual-sign.toml", &text).unwrap();
    let text = builtin("individual-sign").replace("24 months", "3 years");
    assert_eq!(refused("individual-sign", &text).field, "validity");
}

#[test]
fn each_rule_names_its_field() {
    let base = builtin("individual-auth");
    let cases = [
        (
            base.replace("\"digitalSignature\"]", "\"digitalSignatur\"]"),
            "key_usage",
        ),
        (
            base.replace("[\"digitalSignature\"]", "[\"keyCertSign\"]"),
            "key_usage",
        ),
        (
            base.replace("\"clientAuth\"", "\"clientAuthx\""),
            "extended_key_usage",
        ),
        (base.replace("\"ecdsa-p256\",", "\"rsa-1024\","), "keys"),
        (
            base.replace("oid = \"2.5.4.4\"", "oid = \"2.5.4.x\""),
            "subject[1].oid",
        ),
        (
            base.replace("oid = \"2.5.4.4\"", "oid = \"2.5.4.6\""),
            "subject[1].oid",
        ),
        (
            base.replace("{surname}\"", "{surnam}\""),
            "subject[1].value",
        ),
        (
            base.replace("name = \"individual-auth\"", "name = \"other\""),
            "name",
        ),
        (
            base.replace(
                "kind = \"end-entity\"",
                "kind = \"end-entity\"\npath_len = 1",
            ),
            "path_len",
        ),
        (
            base.replace("kind = \"end-entity\"", "kind = \"end-entity\"\ncolour = 1"),
            "colour",
        ),
        (
            base.replace("aia_ocsp = true", "aia_ocsp = true\nocsp_no_check = true"),
            "ocsp_no_check",
        ),
    ];
    for (text, field) in cases {
        let e = refused("individual-auth", &text);
        assert_eq!(e.field, field, "{e}");
    }
    // A TLS server without alternative names could not be found by clients.
    let server = builtin("tls-server").replace("subject_alt_names = [\"dns\", \"ip\"]\n", "");
    assert_eq!(refused("tls-server", &server).field, "subject_alt_names");
    let ca = builtin("root-ca").replace("\"keyCertSign\", ", "");
    assert_eq!(refused("root-ca", &ca).field, "key_usage");
}

#[test]
fn templates_fold_missing_optional_fields() {
    let t = Template::parse("{surname} {given_name} {patronymic}", END_ENTITY_FIELDS).unwrap();
    let mut f = BTreeMap::new();
    f.insert("surname".to_string(), "IVANOV".to_string());
    f.insert("given_name".to_string(), "IVAN".to_string());
    assert_eq!(t.render(&f).as_deref(), Some("IVANOV IVAN"));
    let t = Template::parse("PNOUZ-{pinfl}", END_ENTITY_FIELDS).unwrap();
    assert_eq!(t.render(&f), None);
    assert!(Template::parse("{pinfl", END_ENTITY_FIELDS).is_err());
    assert!(Template::parse("pinfl}", END_ENTITY_FIELDS).is_err());
    assert!(Template::parse("a}{pinfl}", END_ENTITY_FIELDS).is_err());
    assert!(Template::parse("{surname}}{pinfl}", END_ENTITY_FIELDS).is_err());
    assert!(Template::parse("{country}", END_ENTITY_FIELDS).is_err());
}

#[test]
fn validity_units() {
    assert_eq!("72 hours".parse::<Validity>(), Ok(Validity::Hours(72)));
    assert_eq!("1 year".parse::<Validity>(), Ok(Validity::Years(1)));
    assert!("0 days".parse::<Validity>().is_err());
    assert!("24".parse::<Validity>().is_err());
    assert!("2 fortnights".parse::<Validity>().is_err());
    assert!("60 years".parse::<Validity>().is_err());
}

#[test]
fn templates_read_back_what_they_rendered() {
    use crate::template::Template;
    let f = ["surname", "given_name", "patronymic", "pinfl"];
    let cn = Template::parse("{surname} {given_name} {patronymic}", &f).unwrap();
    let mut known = std::collections::BTreeMap::new();
    // Three unknowns: nothing can be said yet.
    assert_eq!(cn.extract("IVANOV IVAN IVANOVICH", &known), None);
    known.insert("surname".to_string(), "IVANOV".to_string());
    known.insert("given_name".to_string(), "IVAN".to_string());
    assert_eq!(
        cn.extract("IVANOV IVAN IVANOVICH", &known),
        Some(("patronymic".into(), "IVANOVICH".into()))
    );
    // A person without a patronymic: rendered without the trailing space.
    assert_eq!(
        cn.extract("IVANOV IVAN", &known),
        Some(("patronymic".into(), String::new()))
    );
    // A value that does not fit the template.
    assert_eq!(cn.extract("PETROV IVAN X", &known), None);
    let sn = Template::parse("PNOUZ-{pinfl}", &f).unwrap();
    assert_eq!(
        sn.extract("PNOUZ-31505851234562", &known),
        Some(("pinfl".into(), "31505851234562".into()))
    );
    assert_eq!(sn.extract("IDCUZ-31505851234562", &known), None);
    let fixed = Template::parse("UZ", &f).unwrap();
    assert_eq!(fixed.extract("UZ", &known), None, "no field to learn");
}

#[test]
fn a_time_stamping_profile_that_could_also_log_in_is_refused() {
    let tsa = builtin("tsa");
    // Another purpose beside timeStamping: one stolen key would forge both.
    let two = tsa.replace(
        "extended_key_usage = [\"timeStamping\"]",
        "extended_key_usage = [\"timeStamping\", \"clientAuth\"]",
    );
    let e = parse("tsa.toml", &two).unwrap_err().to_string();
    assert!(e.contains("extended_key_usage"), "{e}");
    // Not critical: a relying party that ignores the extension could take
    // the key for anything.
    let lax = tsa.replace("extended_key_usage_critical = true", "");
    let e = parse("tsa.toml", &lax).unwrap_err().to_string();
    assert!(e.contains("critical"), "{e}");
    // Critical with nothing to mark.
    let none = "extended_key_usage_critical = true\n".to_string()
        + &builtin("ocsp-signer")
            .replace("extended_key_usage = [\"OCSPSigning\"]\n", "")
            .replace("ocsp_no_check = true\n", "");
    let e = parse("ocsp-signer.toml", &none).unwrap_err().to_string();
    assert!(
        e.contains("nothing to mark") || e.contains("no extended key usage"),
        "{e}"
    );
}

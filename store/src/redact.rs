//! Passwords out of anything printed: error messages and log lines.
//!
//! Database URLs carry passwords, and so can any URL an operator configures
//! (an identity provider's keys, an external CA's OCSP responder). Messages
//! quote them in many places, some of them other crates' (an HTTP client's
//! error names the URL it failed on). Rather than trusting every one of
//! those places, the text is cleaned where it leaves the process, without
//! parsing the URL: a mistyped one (the case that prints it) does not parse.

/// `text` with the password of every `scheme://user:password@host` masked
/// (whatever the scheme, parsed or not) and the value of every
/// `password=` / `pass=` / `pwd=` parameter (URL query or key=value string).
pub fn redact(text: &str) -> String {
    let masked = mask_userinfo(text);
    mask_parameters(&masked)
}

fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the path, query, fragment or anything that
        // cannot be in a URL as printed.
        let end = tail
            .find(|c: char| {
                matches!(
                    c,
                    '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '`' | ',' | ';'
                ) || c.is_whitespace()
                    || c.is_control()
            })
            .unwrap_or(tail.len());
        // A password with a space or a comma in it ends the authority early
        // (the URL does not parse, and it is printed all the same): look on
        // to the next path or quote for the '@' that closes the user part.
        let mut wide = tail
            .find(['/', '?', '#', '"', '\'', '<', '>', '\n'])
            .unwrap_or(tail.len())
            .min(256);
        while !tail.is_char_boundary(wide) {
            wide -= 1;
        }
        let end = if !tail[..end].contains('@')
            && let Some(at) = tail[..wide].rfind('@')
            && tail[..at].contains(':')
        {
            tail[at..]
                .find(|c: char| {
                    matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>') || c.is_whitespace()
                })
                .map_or(tail.len(), |j| at + j)
        } else {
            end
        };
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn mask_parameters(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let lower = rest.to_ascii_lowercase();
        let hit = ["password=", "pass=", "pwd="]
            .iter()
            .filter_map(|k| {
                lower
                    .match_indices(k)
                    .find(|(i, _)| *i == 0 || !lower.as_bytes()[i - 1].is_ascii_alphanumeric())
                    .map(|(i, _)| (i, k.len()))
            })
            .min();
        let Some((i, len)) = hit else { break };
        let value_start = i + len;
        out.push_str(&rest[..value_start]);
        let tail = &rest[value_start..];
        let end = tail
            .find(|c: char| matches!(c, '&' | '"' | '\'' | ',' | ';') || c.is_whitespace())
            .unwrap_or(tail.len());
        if end > 0 {
            out.push_str("***");
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_masked_in_urls_that_parse_and_urls_that_do_not() {
        for (text, secret) in [
            ("postgres://muhr:Secret@db/muhr", "Secret"),
            ("postgress://muhr:S3cr3t@db/muhr", "S3cr3t"),
            (
                "unsupported database URL \"postgres://u:p%40ss@host:5432\"",
                "p%40ss",
            ),
            (
                "GET https://idp:hunter2@id.gov.uz/jwks: timed out",
                "hunter2",
            ),
            ("x://a:b:c@d", "b:c"),
            ("error sending request for url (http://u:Pa ss@h/)", "Pa"),
            (
                "host=db user=muhr password=Topsecret dbname=muhr",
                "Topsecret",
            ),
            (
                "postgres://db/muhr?user=muhr&password=Qwerty12&sslmode=require",
                "Qwerty12",
            ),
            ("PASSWORD=Loud", "Loud"),
            ("two: http://a:One@x and ftp://b:Two@y", "One"),
            ("two: http://a:One@x and ftp://b:Two@y", "Two"),
        ] {
            let r = redact(text);
            assert!(!r.contains(secret), "{text} -> {r}");
        }
        // Nothing else changes.
        for text in [
            "postgres://db/muhr",
            "https://user@host/path?x=1",
            "mailto:someone@example.uz",
            "no url here: a:b@c",
            "compass=north",
            "",
        ] {
            assert_eq!(redact(text), text);
        }
        assert_eq!(
            redact("postgres://muhr:pw@db/muhr"),
            "postgres://muhr:***@db/muhr"
        );
        // Any text at all, Uzbek and Cyrillic included, without a panic.
        let long = format!("x://{}", "ʻЖ:".repeat(200));
        for cut in 0..long.len() {
            if long.is_char_boundary(cut) {
                let _ = redact(&long[..cut]);
                let _ = redact(&format!("{}@h", &long[..cut]));
            }
        }
    }
}

//! Passwords out of anything printed: error messages and log lines.
//!
//! Database URLs carry passwords, and so can any URL an operator configures
//! (an identity provider's keys, an external CA's OCSP responder). Messages
//! quote them in many places, some of them other crates' (an HTTP client's
//! error names the URL it failed on). Rather than trusting every one of
//! those places, the text is cleaned where it leaves the process, without
//! parsing the URL: a mistyped one (the case that prints it) does not parse.

/// `text` with the password of every `user:password@host` masked (after a
/// scheme or not, the URL parsed or not, the password holding `/`, `#`,
/// `?` or spaces) and the value of every password-like key
/// (`password=`, `PGPASSWORD=`, `"password": "…"`, `pwd`, `pass`, `secret`).
/// It errs on the side of masking: a port before an `@` may go too.
pub fn redact(text: &str) -> String {
    let masked = mask_userinfo(text);
    mask_parameters(&masked)
}

const TOKEN_END: &[char] = &['"', '\'', '(', '<', '[', '{', ',', ';', '`', '='];

/// The largest char boundary at or below `i`.
fn floor(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    // Where the last mask ended (at an '@'): a further '@' in the same run
    // belongs to the password (`u:Sec@ret@db`), and is masked with it.
    let mut masked_to = None;
    for (at, _) in text.match_indices('@') {
        if at < copied {
            continue;
        }
        // The token before '@' runs back to white space or a delimiter
        // (either may be several bytes long: U+00A0, U+3000).
        let start = text[..at]
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace() || TOKEN_END.contains(c))
            .map_or(0, |(i, c)| i + c.len_utf8())
            .max(copied);
        if masked_to == Some(start) && !text[start..at].contains('/') {
            copied = at;
            masked_to = Some(at);
            continue;
        }
        let user_at = |token_start: usize| {
            let token = &text[token_start..at];
            let from = token
                .find("://")
                .map(|i| i + 3)
                .or_else(|| token.find(":/").map(|i| i + 2))
                .unwrap_or(0);
            token[from..].find(':').map(|c| token_start + from + c + 1)
        };
        let mut mask_from = user_at(start);
        if mask_from.is_none() {
            // A password with a space in it: the scheme is further back.
            let window = floor(text, at.saturating_sub(256)).max(copied);
            if let Some(scheme) = text[window..at].rfind("://") {
                let authority = window + scheme + 3;
                if !text[authority..at].contains(['/', '@']) {
                    mask_from = text[authority..at].find(':').map(|c| authority + c + 1);
                }
            }
        }
        if let Some(from) = mask_from.filter(|f| *f < at) {
            out.push_str(&text[copied..from]);
            out.push_str("***");
            copied = at;
            masked_to = Some(at);
        }
    }
    out.push_str(&text[copied..]);
    out
}

fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    matches!(k.as_str(), "pass" | "pwd" | "secret")
        || k.ends_with("password")
        || k.ends_with("passwd")
        || k.ends_with("_secret")
}

fn mask_parameters(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for (sep, c) in text.char_indices() {
        if c != '=' && c != ':' {
            continue;
        }
        // "scheme://" is no key-value pair.
        if c == ':' && text[sep..].starts_with("://") {
            continue;
        }
        // The key: back over spaces and a closing quote, then name characters.
        let mut end = sep;
        while end > 0 && bytes[end - 1] == b' ' {
            end -= 1;
        }
        if end > 0 && matches!(bytes[end - 1], b'"' | b'\'') {
            end -= 1;
        }
        let mut begin = end;
        while begin > 0
            && (bytes[begin - 1].is_ascii_alphanumeric()
                || matches!(bytes[begin - 1], b'_' | b'-' | b'.'))
        {
            begin -= 1;
        }
        if begin == end || !secret_key(&text[begin..end]) {
            continue;
        }
        // The value: after spaces and an opening quote, up to its end.
        let mut v = sep + 1;
        while v < bytes.len() && bytes[v] == b' ' {
            v += 1;
        }
        let quote = (v < bytes.len() && matches!(bytes[v], b'"' | b'\'')).then(|| bytes[v] as char);
        if quote.is_some() {
            v += 1;
        }
        let rest = &text[v..];
        let len = if let Some(q) = quote {
            rest.find(q).unwrap_or(rest.len())
        } else {
            rest.find(|c: char| {
                c.is_whitespace() || matches!(c, '&' | ',' | ';' | '}' | '"' | '\'')
            })
            .unwrap_or(rest.len())
        };
        if len > 0 {
            ranges.push((v, v + len));
        }
    }
    if ranges.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (a, b) in ranges {
        if a < copied {
            continue;
        }
        out.push_str(&text[copied..a]);
        out.push_str("***");
        copied = b;
    }
    out.push_str(&text[copied..]);
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
            ("postgress://muhr:Tr0ub4dor#3@db/muhr", "Tr0ub4dor"),
            ("postgres://muhr:ab/cd@db/muhr", "ab/cd"),
            ("postgres://muhr:p?w@db/muhr", "p?w"),
            ("postgres:/muhr:Typo@db", "Typo"),
            ("muhr:NoScheme@db:5432", "NoScheme"),
            ("PGPASSWORD=EnvSecret psql", "EnvSecret"),
            (
                r#"{"user": "muhr", "password": "JsonSecret"}"#,
                "JsonSecret",
            ),
            ("password = Spaced", "Spaced"),
            ("url=\"postgres://u:Quoted@h\"", "Quoted"),
            ("postgress://u:Sec@ret@db/muhr", "ret"),
            (r#"{"password": "it's-Secret"}"#, "s-Secret"),
            ("Ошибка:\u{a0}postgres://u:NbspPass@h", "NbspPass"),
            ("a\u{a0}b:Nbsp2@d", "Nbsp2"),
            ("\u{3000}x:Ideo@y\u{2003}z", "Ideo"),
        ] {
            let r = redact(text);
            assert!(!r.contains(secret), "{text} -> {r}");
        }
        // Random text from the characters that matter never panics.
        let alphabet = [
            "a", ":", "@", "/", "\u{a0}", "\u{3000}", "ʻ", "Ж", "=", "\"", "'", " ", "password",
            "://", "?", "#", "pwd", ":/",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut s = String::new();
            for _ in 0..(seed % 24) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push_str(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            let _ = redact(&s);
        }
        // Nothing else changes.
        for text in [
            "postgres://db/muhr",
            "https://user@host/path?x=1",
            "compass=north",
            "someone@example.uz wrote: see https://host/a@b",
            "",
        ] {
            assert_eq!(redact(text), text);
        }
        assert_eq!(
            redact("postgres://muhr:pw@db/muhr"),
            "postgres://muhr:***@db/muhr"
        );
        // Any text at all, Uzbek and Cyrillic included, without a panic.
        let long = format!("x://{}", "ʻЖ:\u{a0}@\u{3000}a=".repeat(60));
        for cut in 0..long.len() {
            if long.is_char_boundary(cut) {
                let _ = redact(&long[..cut]);
                let _ = redact(&format!("{}@h", &long[..cut]));
            }
        }
    }
}

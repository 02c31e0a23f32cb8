//! The portal's three languages: Uzbek in Latin script first (the state
//! language), then Russian and English. The texts are data (`messages/`),
//! compiled in and checked when loaded: every language has every key.

use std::collections::BTreeMap;

use axum::http::HeaderMap;

/// A language of the portal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// Oʻzbekcha (lotin).
    Uz,
    /// Русский.
    Ru,
    /// English.
    En,
}

/// The languages in the order the switcher shows them.
pub const ALL: [Lang; 3] = [Lang::Uz, Lang::Ru, Lang::En];

/// The cookie that remembers a choice made with the switcher.
pub const COOKIE: &str = "muhr_lang";

impl Lang {
    /// Its code (BCP 47).
    pub fn code(self) -> &'static str {
        match self {
            Lang::Uz => "uz",
            Lang::Ru => "ru",
            Lang::En => "en",
        }
    }

    /// From a code; `uz-Latn`, `ru-RU` and such count as their language.
    /// Uzbek in Cyrillic (`uz-Cyrl`) is not offered: Latin is the state script.
    pub fn from_code(code: &str) -> Option<Lang> {
        let c = code.trim().to_ascii_lowercase();
        let primary = c.split(['-', '_']).next().unwrap_or_default();
        match primary {
            "uz" => Some(Lang::Uz),
            "ru" => Some(Lang::Ru),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The language for a request: the switcher's cookie, else the
    /// browser's Accept-Language by its weights, else Uzbek.
    pub fn of(headers: &HeaderMap) -> Lang {
        if let Some(l) = crate::session::cookie(headers, COOKIE).and_then(|v| Lang::from_code(&v)) {
            return l;
        }
        let accept = headers
            .get(axum::http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mut best: Option<(f32, usize, Lang)> = None;
        for (i, item) in accept.split(',').enumerate().take(32) {
            let mut parts = item.split(';');
            let Some(lang) = parts.next().and_then(Lang::from_code) else {
                continue;
            };
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            if q <= 0.0 || !q.is_finite() {
                continue;
            }
            // Higher weight wins; among equals, the one listed first.
            if best.is_none_or(|(bq, bi, _)| q > bq || (q == bq && i < bi)) {
                best = Some((q, i, lang));
            }
        }
        best.map_or(Lang::Uz, |(_, _, l)| l)
    }

    /// A date (Unix seconds, shown in Tashkent's time, UTC+5) as people of
    /// this language write it.
    pub fn date(self, unix: i64) -> String {
        let (y, m, d) = civil(unix.saturating_add(5 * 3600).div_euclid(86_400));
        let m = m as usize - 1;
        match self {
            Lang::Uz => format!("{d}-{} {y}", UZ_MONTHS[m]),
            Lang::Ru => format!("{d} {} {y} г.", RU_MONTHS[m]),
            Lang::En => format!("{d} {} {y}", EN_MONTHS[m]),
        }
    }
}

const UZ_MONTHS: [&str; 12] = [
    "yanvar", "fevral", "mart", "aprel", "may", "iyun", "iyul", "avgust", "sentabr", "oktabr",
    "noyabr", "dekabr",
];
const RU_MONTHS: [&str; 12] = [
    "января",
    "февраля",
    "марта",
    "апреля",
    "мая",
    "июня",
    "июля",
    "августа",
    "сентября",
    "октября",
    "ноября",
    "декабря",
];
const EN_MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Every language's texts by key.
#[derive(Debug)]
pub struct Messages {
    by_lang: [BTreeMap<String, String>; 3],
}

impl Messages {
    /// Loads the compiled-in texts, refusing a language that lacks a key
    /// another has (a page would show a key instead of a sentence).
    pub fn load() -> Result<Self, String> {
        let parse = |name: &str, text: &str| -> Result<BTreeMap<String, String>, String> {
            toml::from_str(text).map_err(|e| format!("portal messages {name}: {e}"))
        };
        let by_lang = [
            parse("uz", include_str!("../messages/uz.toml"))?,
            parse("ru", include_str!("../messages/ru.toml"))?,
            parse("en", include_str!("../messages/en.toml"))?,
        ];
        for (i, l) in ALL.iter().enumerate() {
            for (j, other) in ALL.iter().enumerate() {
                if let Some(k) = by_lang[j].keys().find(|k| !by_lang[i].contains_key(*k)) {
                    return Err(format!(
                        "portal messages: {} has {k:?}, {} does not",
                        other.code(),
                        l.code()
                    ));
                }
            }
        }
        Ok(Self { by_lang })
    }

    /// All texts of one language.
    pub fn of(&self, lang: Lang) -> &BTreeMap<String, String> {
        &self.by_lang[lang as usize]
    }

    /// One text; the key itself if missing (never, once loaded).
    pub fn get<'a>(&'a self, lang: Lang, key: &'a str) -> &'a str {
        self.of(lang).get(key).map_or(key, String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::ACCEPT_LANGUAGE, v.parse().unwrap());
        h
    }

    #[test]
    fn every_language_has_every_text() {
        let m = Messages::load().unwrap();
        assert_eq!(m.of(Lang::Uz).len(), m.of(Lang::En).len());
        assert!(m.get(Lang::Uz, "refused_deceased").contains("vafot"));
        assert!(m.get(Lang::Ru, "login").contains("Войти"));
    }

    #[test]
    fn the_browser_chooses_by_weight_and_uzbek_is_the_default() {
        assert_eq!(Lang::of(&HeaderMap::new()), Lang::Uz);
        assert_eq!(Lang::of(&accept("de-DE,fr;q=0.8")), Lang::Uz);
        assert_eq!(Lang::of(&accept("ru-RU,ru;q=0.9,en;q=0.8")), Lang::Ru);
        assert_eq!(Lang::of(&accept("en;q=0.5,uz-Latn;q=0.9")), Lang::Uz);
        assert_eq!(Lang::of(&accept("fr,en-GB;q=0.7,ru;q=0.3")), Lang::En);
        assert_eq!(Lang::of(&accept("ru;q=0,en;q=0.1")), Lang::En);
        let mut h = accept("ru");
        h.insert(axum::http::header::COOKIE, "muhr_lang=en".parse().unwrap());
        assert_eq!(Lang::of(&h), Lang::En, "the switcher's choice wins");
    }

    #[test]
    fn dates_in_tashkent_across_the_calendar() {
        // 2024-02-29 (a leap day) 19:00 UTC is already 1 March in Tashkent.
        assert_eq!(Lang::En.date(1_709_233_200), "1 March 2024");
        assert_eq!(Lang::Uz.date(1_709_233_200 - 3600 * 6), "29-fevral 2024");
        assert_eq!(Lang::Ru.date(0), "1 января 1970 г.");
        // Before 1970 and far ahead.
        assert_eq!(Lang::En.date(-1_262_304_000), "1 January 1930");
        assert_eq!(Lang::Uz.date(4_102_444_800), "1-yanvar 2100");
    }
}

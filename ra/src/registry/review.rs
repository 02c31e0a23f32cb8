//! After a name change's grace period: the person's certificates that still
//! name them otherwise are revoked (`affiliationChanged`), against the
//! names of the newest change (a change reverted in the meantime revokes
//! nothing). Run by every node; a review is ended by one transaction that
//! deletes it, so two nodes never both act on it.

use der::Decode;
use muhr_store::{AuditEvent, StoreError};
use serde_json::json;
use x509_cert::Certificate;

use super::apply::RegistryEvents;
use muhr_store::notices::{NewNotice, NoticeKind};
use muhr_store::registry_events::NameReview;

/// RFC 5280: the subject's name or other information changed.
const AFFILIATION_CHANGED: i64 = 3;

/// Surname (2.5.4.4), name (2.5.4.41), givenName (2.5.4.42), commonName (2.5.4.3).
const SURNAME: &str = "2.5.4.4";
const NAME: &str = "2.5.4.41";
const GIVEN_NAME: &str = "2.5.4.42";
const COMMON_NAME: &str = "2.5.4.3";

/// A review's result.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reviewed {
    /// Reviews ended.
    pub reviews: usize,
    /// Certificates revoked.
    pub revoked: Vec<String>,
}

impl RegistryEvents {
    /// Ends the name reviews due at `now` (Unix seconds), at most `limit`.
    pub async fn review_names(&self, now: i64, limit: i64) -> Result<Reviewed, StoreError> {
        let mut done = Reviewed::default();
        for review in self.store().due_name_reviews(now, limit).await? {
            let mut stale = Vec::new();
            let summaries = self.store().certificates_of_person(&review.pinfl).await?;
            let bytes = self
                .store()
                .certificate_bytes_of_person(&review.pinfl)
                .await?;
            for s in summaries
                .iter()
                .filter(|s| s.status == "issued" && s.revocation != "revoked" && s.not_after >= now)
            {
                let Some((_, _, _, der)) = bytes.iter().find(|b| b.0 == s.serial && b.2) else {
                    continue;
                };
                if names_differ(der, &review) {
                    stale.push(s.serial.clone());
                }
            }
            let refs: Vec<&str> = stale.iter().map(String::as_str).collect();
            let event = AuditEvent {
                actor: "ra:registry".into(),
                action: "registry.name_review".into(),
                object: format!("registry-event/{}", review.event),
                details: json!({ "pinfl": review.pinfl, "revoked": stale, "reason": "affiliationChanged" }),
            };
            if let Some(revoked) = self
                .store()
                .finish_name_review(&review, &refs, AFFILIATION_CHANGED, &event, |serial| {
                    NewNotice {
                        key: format!("registry:{}:{serial}", review.event),
                        pinfl: review.pinfl.clone(),
                        serial: Some(serial.to_string()),
                        kind: NoticeKind::Revoked,
                        reason: Some("affiliationChanged".into()),
                        on_date: super::decide::utc_date(now),
                    }
                })
                .await?
            {
                done.reviews += 1;
                done.revoked.extend(revoked);
            }
        }
        Ok(done)
    }
}

impl RegistryEvents {
    /// Revokes (`cessationOfOperation`) the certificates of people whose
    /// death was recorded in the last `lookback` seconds and that are still
    /// valid or under way: an issuance checks for a death before it records
    /// its intent, and a death recorded in between would otherwise miss it.
    /// Every node runs it each minute.
    pub async fn sweep_deaths(&self, now: i64, lookback: i64) -> Result<Vec<String>, StoreError> {
        let live = self
            .store()
            .live_certificates_of_the_recently_dead(now - lookback, 1000)
            .await?;
        let mut revoked = Vec::new();
        for (serial, pinfl) in live {
            let event = AuditEvent {
                actor: "ra:registry".into(),
                action: "registry.death_sweep".into(),
                object: serial.clone(),
                details: json!({ "pinfl": pinfl, "reason": "cessationOfOperation" }),
            };
            let done = self
                .store()
                .revoke_noticed(&[serial.as_str()], CESSATION_OF_OPERATION, &event, |s| {
                    NewNotice {
                        key: format!("death-sweep:{s}"),
                        pinfl: pinfl.clone(),
                        serial: Some(s.to_string()),
                        kind: NoticeKind::Revoked,
                        reason: Some("cessationOfOperation".into()),
                        on_date: super::decide::utc_date(now),
                    }
                })
                .await?;
            if !done.is_empty() {
                tracing::warn!(%serial, "a certificate issued while its holder's death was being recorded: revoked");
            }
            revoked.extend(done);
        }
        Ok(revoked)
    }
}

/// RFC 5280: the subject no longer needs the certificate.
const CESSATION_OF_OPERATION: i64 = 5;

/// Whether a certificate names the person otherwise than `review`: any of
/// its surname, name, givenName or commonName attributes differs from the
/// new names once both are [`folded`] (a name written in capitals, with
/// another apostrophe, or in the other script is the same name). A
/// certificate that does not parse is left alone and logged.
pub fn names_differ(der: &[u8], review: &NameReview) -> bool {
    let cert = match Certificate::from_der(der) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "stored certificate does not parse; left to operators");
            return false;
        }
    };
    let full = folded(&format!(
        "{} {} {}",
        review.surname,
        review.given_name,
        review.patronymic.as_deref().unwrap_or("")
    ));
    let surname = folded(&review.surname);
    let given = folded(&review.given_name);
    for rdn in cert.tbs_certificate().subject().iter_rdn() {
        for atv in rdn.iter() {
            let Some(value) = muhr_pkix::dn_text::value_text(&atv.value) else {
                continue;
            };
            let value = folded(value);
            let expected = match atv.oid.to_string().as_str() {
                SURNAME => &surname,
                NAME | GIVEN_NAME => &given,
                COMMON_NAME => &full,
                _ => continue,
            };
            if &value != expected {
                return true;
            }
        }
    }
    false
}

/// A name's skeleton for comparison: Unicode NFC, lower case, Cyrillic
/// (Uzbek and Russian letters) written in the Uzbek Latin alphabet,
/// apostrophes of every form (ʻ ʼ ‘ ’ ` ') dropped, `ye` read as `e` (Е is
/// written both ways), spaces and hyphens collapsed. Two spellings of one
/// name meet; a changed letter still shows.
pub fn folded(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let mut out = String::with_capacity(name.len());
    for c in name.nfc().flat_map(char::to_lowercase) {
        let latin: &str = match c {
            'а' => "a",
            'б' => "b",
            'в' => "v",
            'г' | 'ғ' => "g",
            'д' => "d",
            'е' | 'э' => "e",
            'ё' => "yo",
            'ж' => "j",
            'з' => "z",
            'и' | 'ы' => "i",
            'й' => "y",
            'к' => "k",
            'қ' => "q",
            'л' => "l",
            'м' => "m",
            'н' => "n",
            'о' | 'ў' => "o",
            'п' => "p",
            'р' => "r",
            'с' => "s",
            'т' => "t",
            'у' => "u",
            'ф' => "f",
            'х' => "x",
            'ҳ' => "h",
            'ц' => "ts",
            'ч' => "ch",
            'ш' | 'щ' => "sh",
            'ю' => "yu",
            'я' => "ya",
            'ъ' | 'ь' | 'ʻ' | 'ʼ' | '‘' | '’' | '`' | '\'' | 'ʹ' => "",
            '-' => " ",
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push_str(latin);
    }
    out.replace("ye", "e")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::folded;

    #[test]
    fn one_name_in_every_spelling_folds_to_one_skeleton() {
        for same in [
            ["Oʻrinboyev", "O'rinboyev", "ORINBOYEV"],
            ["Gʻayrat", "G‘ayrat", "Ғайрат"],
            ["Ўринбоев", "Oʻrinboev", "o`rinboyev"],
            ["Иванов", "Ivanov", "IVANOV"],
            ["Raʼno", "Раъно", "RA'NO"],
            ["Abdullayevna", "Абдуллаевна", "Abdullaevna"],
        ] {
            let f = folded(same[0]);
            for s in &same[1..] {
                assert_eq!(folded(s), f, "{s} and {}", same[0]);
            }
        }
    }

    #[test]
    fn a_changed_name_still_differs() {
        for [a, b] in [
            ["Karimova", "Karimov"],
            ["Иванова", "Ivanov"],
            ["Abdurahmonova-Oʻrinova", "Abdurahmonov"],
            ["Dilnoza", "Dilafruz"],
        ] {
            assert_ne!(folded(a), folded(b), "{a} and {b}");
        }
    }
}

//! A distinguished name as RFC 4514 text, for the `subject` column and logs.
//!
//! `x509-cert` renders names the same way, but finds each attribute's short
//! name by scanning the whole OID database every time: 3% of issuance CPU at
//! personalization rates. Here each attribute type is looked up once per
//! process; values are escaped by the same RFC 4514 rules, so the text is
//! identical (a unit test holds the two to that).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{OnceLock, RwLock};

use const_oid::ObjectIdentifier;
use der::asn1::{Ia5StringRef, PrintableStringRef, TeletexStringRef, Utf8StringRef};
use der::{Tag, Tagged};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::name::Name;

type Names = RwLock<HashMap<ObjectIdentifier, Option<String>>>;

fn names() -> &'static Names {
    static NAMES: OnceLock<Names> = OnceLock::new();
    NAMES.get_or_init(Default::default)
}

/// The upper-cased shortest name the OID database knows for `oid`.
fn short_name(oid: &ObjectIdentifier) -> Option<String> {
    if let Some(known) = names().read().unwrap_or_else(|p| p.into_inner()).get(oid) {
        return known.clone();
    }
    let name = const_oid::db::DB
        .find_names_for_oid(*oid)
        .min_by_key(|n| n.len())
        .map(|n| n.to_ascii_uppercase());
    names()
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(*oid, name.clone());
    name
}

fn string_value(atv: &AttributeTypeAndValue) -> Option<&str> {
    value_text(&atv.value)
}

/// An attribute value's text, for the string types names use.
pub fn value_text(v: &der::Any) -> Option<&str> {
    match v.tag() {
        Tag::PrintableString => PrintableStringRef::try_from(v).ok().map(|s| s.as_str()),
        Tag::Utf8String => Utf8StringRef::try_from(v).ok().map(|s| s.as_str()),
        Tag::Ia5String => Ia5StringRef::try_from(v).ok().map(|s| s.as_str()),
        Tag::TeletexString => TeletexStringRef::try_from(v).ok().map(|s| s.as_str()),
        _ => None,
    }
}

fn write_atv(out: &mut String, atv: &AttributeTypeAndValue) {
    let (Some(value), Some(key)) = (string_value(atv), short_name(&atv.oid)) else {
        // Unknown types and non-string values: `#` and the DER, as the crate does.
        let _ = write!(out, "{atv}");
        return;
    };
    out.push_str(&key);
    out.push('=');
    let last = value.chars().count().saturating_sub(1);
    for (n, (i, c)) in value.char_indices().enumerate() {
        match c {
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || n == last => out.push_str("\\ "),
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\x00'..='\x1f' | '\x7f' => {
                let _ = write!(out, "\\{:02x}", c as u8);
            }
            _ => out.push(c),
        }
    }
}

/// RFC 4514: the last RDN first, RDNs joined by `,`, attributes in one RDN by `+`.
pub fn to_string(name: &Name) -> String {
    let mut out = String::with_capacity(128);
    let rdns: Vec<_> = name.iter_rdn().collect();
    for (i, rdn) in rdns.into_iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, atv) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            write_atv(&mut out, atv);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn same_text_as_x509_cert() {
        for dn in [
            "CN=Toshmatov Sardor,SN=Toshmatov,GIVENNAME=Sardor,C=UZ",
            "CN=\\#hash \\+ plus\\, comma,O=Muhr \\\"dev\\\",C=UZ",
            "CN=\\ leading and trailing\\ ,UID=42+SERIALNUMBER=31505851234567",
            "CN=O'zbekiston Respublikasi,L=Toshkent;ST=x\\<y\\>z\\\\",
            "1.2.860.3.16.1.2=#130e3331353035383531323334353637,CN=tin",
        ] {
            let name = Name::from_str(dn).expect(dn);
            assert_eq!(to_string(&name), name.to_string(), "{dn}");
        }
        assert_eq!(to_string(&Name::default()), "");
    }
}

//! The districts (SOATO codes) personalization offices sit in. Data, not code:
//! boundaries change, so the list is a file an operator replaces.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::PolicyError;

/// Compiled in, so the binary runs from any directory.
pub const BUILTIN: &str = include_str!("../districts/uzbekistan.toml");

/// The district list in force: seven-digit SOATO code to district name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Districts {
    names: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    districts: BTreeMap<String, String>,
}

impl Districts {
    /// The list shipped in `policies/districts/uzbekistan.toml`.
    pub fn builtin() -> Result<Self, PolicyError> {
        Self::parse("districts/uzbekistan.toml", BUILTIN)
    }

    /// An operator's list, instead of the built-in one; checked as
    /// [`parse`](Self::parse) checks.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            file: name.clone(),
            field: "-".into(),
            rule: format!("cannot read: {e}"),
        })?;
        Self::parse(&name, &text)
    }

    /// Every code is a seven-digit SOATO district code with a non-empty name.
    pub fn parse(file: &str, text: &str) -> Result<Self, PolicyError> {
        let err = |field: &str, rule: String| PolicyError {
            file: file.to_string(),
            field: field.to_string(),
            rule,
        };
        let f: File =
            toml::from_str(text).map_err(|e| err("districts", e.message().to_string()))?;
        for (code, name) in &f.districts {
            if code.len() != 7 || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(
                    &format!("districts.{code}"),
                    "a district is a seven-digit SOATO code".into(),
                ));
            }
            if name.trim().is_empty() {
                return Err(err(
                    &format!("districts.{code}"),
                    "the name is empty".into(),
                ));
            }
        }
        if f.districts.is_empty() {
            return Err(err("districts", "lists no district".into()));
        }
        Ok(Self { names: f.districts })
    }

    /// The name of the district with this SOATO code; `None` when the code is
    /// not on the list.
    pub fn name(&self, code: &str) -> Option<&str> {
        self.names.get(code).map(String::as_str)
    }

    /// Every code on the list, in ascending order.
    pub fn codes(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_lists_tashkent() {
        let d = Districts::builtin().unwrap();
        assert_eq!(d.name("1726269"), Some("Chilonzor"));
        assert!(d.codes().filter(|c| c.starts_with("1726")).count() >= 11);
        assert_eq!(d.name("1726000"), None);
    }

    #[test]
    fn refuses_bad_codes() {
        let e = Districts::parse("f", "[districts]\n\"17262\" = \"x\"\n").unwrap_err();
        assert_eq!(e.field, "districts.17262");
        let e = Districts::parse("f", "[districts]\n\"1726269\" = \" \"\n").unwrap_err();
        assert!(e.rule.contains("empty"));
        assert!(Districts::parse("f", "[districts]\n").is_err());
    }
}

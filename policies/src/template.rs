//! Subject attribute values are templates over the request's fields:
//! `"PNOUZ-{pinfl}"`, `"{surname} {given_name} {patronymic}"`, `"UZ"`.
//! A missing optional field renders as nothing and white space is folded, so a
//! person without a patronymic gets `IVANOV IVAN`, not `IVANOV IVAN `.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
}

/// A subject attribute's value: fixed text and `{field}` names of request fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Refuses a field not in `allowed`, an unclosed `{` and an empty value.
    pub fn parse(s: &str, allowed: &[&str]) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                let text = &rest[..open];
                // A stray '}' before a field is the same typo as one after
                // the last: refused, never written into certificates.
                if text.contains('}') {
                    return Err(format!("{s:?}: '}}' without '{{'"));
                }
                parts.push(Part::Text(text.to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("{s:?}: unclosed '{{'"))?
                + open;
            let name = &rest[open + 1..close];
            if !allowed.contains(&name) {
                return Err(format!(
                    "{s:?}: unknown field {{{name}}} (known: {})",
                    allowed.join(", ")
                ));
            }
            parts.push(Part::Field(name.to_string()));
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("{s:?}: '}}' without '{{'"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        if parts.is_empty() {
            return Err("an attribute value cannot be empty".into());
        }
        Ok(Self { parts })
    }

    /// The fields the template names, in order; a field named twice comes twice.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(f) => Some(f.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The reverse of [`render`](Self::render): given a rendered `value` and
    /// the fields already `known`, the one field still unknown and its value.
    /// `None` when no field or more than one is unknown, or the value does
    /// not fit the template. An empty remainder means the field was absent.
    /// Relying parties learn a person's identity from a certificate this
    /// way, from the profile's own data rather than a list in code.
    pub fn extract(
        &self,
        value: &str,
        known: &BTreeMap<String, String>,
    ) -> Option<(String, String)> {
        let mut unknown = self
            .parts
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p, Part::Field(f) if !known.contains_key(f)));
        let (at, field) = match (unknown.next(), unknown.next()) {
            (Some((i, Part::Field(f))), None) => (i, f.clone()),
            _ => return None,
        };
        let text = |parts: &[Part]| {
            let mut s = String::new();
            for p in parts {
                match p {
                    Part::Text(t) => s.push_str(t),
                    Part::Field(f) => s.push_str(known.get(f).map_or("", String::as_str)),
                }
            }
            s.split_whitespace().collect::<Vec<_>>().join(" ")
        };
        let (before, after) = (text(&self.parts[..at]), text(&self.parts[at + 1..]));
        let rest = value.strip_prefix(before.as_str())?;
        let middle = rest.strip_suffix(after.as_str())?;
        Some((field, middle.trim().to_string()))
    }

    /// Renders the value; `None` when the template names fields and none is present.
    pub fn render(&self, fields: &BTreeMap<String, String>) -> Option<String> {
        let mut out = String::new();
        let mut named = 0;
        let mut present = 0;
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field(f) => {
                    named += 1;
                    if let Some(v) = fields.get(f).filter(|v| !v.trim().is_empty()) {
                        present += 1;
                        out.push_str(v);
                    }
                }
            }
        }
        if named > 0 && present == 0 {
            return None;
        }
        let folded = out.split_whitespace().collect::<Vec<_>>().join(" ");
        (!folded.is_empty()).then_some(folded)
    }
}

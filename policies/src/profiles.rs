//! The loaded set of profiles, built-in and the operator's, each validated
//! before anything may use it.

use super::*;

/// The validated set of profiles in force.
#[derive(Debug, Clone)]
pub struct Profiles {
    by_name: BTreeMap<String, Profile>,
}

impl Profiles {
    /// The profiles shipped in `policies/profiles`.
    pub fn builtin() -> Result<Self, PolicyError> {
        Self::from_files(BUILTIN.iter().map(|(f, t)| (f.to_string(), t.to_string())))
    }

    /// Every `*.toml` file of `dir`, instead of the built-in set.
    pub fn load_dir(dir: &Path) -> Result<Self, PolicyError> {
        let io = |e: std::io::Error| PolicyError {
            file: dir.display().to_string(),
            field: "(directory)".into(),
            rule: e.to_string(),
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().and_then(|e| e.to_str()) == Some("toml") {
                let text = std::fs::read_to_string(&path).map_err(io)?;
                files.push((path.display().to_string(), text));
            }
        }
        files.sort();
        Self::from_files(files)
    }

    fn from_files(files: impl IntoIterator<Item = (String, String)>) -> Result<Self, PolicyError> {
        let mut by_name = BTreeMap::new();
        for (file, text) in files {
            let p = parse(&file, &text)?;
            by_name.insert(p.name.clone(), p);
        }
        Ok(Self { by_name })
    }

    /// The profile called `name`; `None` when there is none.
    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.by_name.get(name)
    }

    /// Every profile's name, in alphabetical order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

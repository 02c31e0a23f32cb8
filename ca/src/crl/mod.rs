//! CRLs (RFC 5280 section 5) of each CA, in three kinds of scope:
//!
//! - the **whole** CRL of a CA lists every revoked or suspended, unexpired
//!   certificate it issued;
//! - a **shard** CRL lists only the certificates whose CRL distribution point
//!   names that shard (see [`shard`]), so a relying party downloads 1/N of the
//!   list; it carries an Issuing Distribution Point naming its scope;
//! - a **delta** CRL of either scope lists what changed since the complete CRL
//!   it extends (Delta CRL Indicator), including removeFromCRL for restored
//!   certificates; complete CRLs and certificates point to it with Freshest CRL.
//!
//! Complete CRLs of all scopes are made in one pass over the revoked
//! certificates ([`complete`]); deltas are cheap and follow every change
//! ([`delta`]). One CRL number sequence per CA serves every scope and kind, so
//! numbers increase within each scope as RFC 5280 5.2.3 asks.

pub mod complete;
pub mod delta;
mod entries;
pub mod idp;
pub mod shard;
mod sign;
pub mod updater;

pub use complete::generate;

/// What a CRL covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Every certificate of the CA.
    Whole,
    /// The certificates assigned to one shard at issuance.
    Shard(u32),
}

impl Scope {
    /// The `crls.shard` / `certificates.crl_shard` value.
    pub fn shard(self) -> Option<i64> {
        match self {
            Scope::Whole => None,
            Scope::Shard(n) => Some(i64::from(n)),
        }
    }

    /// The inverse of [`Scope::shard`]; None for a stored value no scope has
    /// (negative or past `u32`).
    pub fn from_shard(shard: Option<i64>) -> Option<Scope> {
        match shard {
            None => Some(Scope::Whole),
            Some(n) => u32::try_from(n).ok().map(Scope::Shard),
        }
    }
}

/// Every scope `ca` has CRLs for: the whole CA, then each shard any of its
/// certificates was ever assigned to.
pub async fn scopes(
    store: &muhr_store::Store,
    ca: &crate::Authority,
) -> Result<Vec<Scope>, crate::IssueError> {
    let shards = u32::try_from(store.crl_shard_count(&ca.name).await?).unwrap_or(0);
    Ok(std::iter::once(Scope::Whole)
        .chain((0..shards).map(Scope::Shard))
        .collect())
}

/// A CRL's name, which is also its file name without `.crl` and what `{crl}`
/// becomes in the CRL URL template: `issuing`, `issuing-7`, `issuing-delta`,
/// `issuing-7-delta`.
pub fn name(ca: &str, scope: Scope, delta: bool) -> String {
    let mut s = ca.to_string();
    if let Scope::Shard(n) = scope {
        s.push_str(&format!("-{n}"));
    }
    if delta {
        s.push_str("-delta");
    }
    s
}

/// The inverse of [`name`]: `(ca, scope, delta)`.
pub fn parse_name(name: &str) -> Option<(&str, Scope, bool)> {
    let (rest, delta) = match name.strip_suffix("-delta") {
        Some(r) => (r, true),
        None => (name, false),
    };
    if let Some((ca, n)) = rest.rsplit_once('-')
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
        && (n == "0" || !n.starts_with('0'))
    {
        return Some((ca, Scope::Shard(n.parse().ok()?), delta));
    }
    Some((rest, Scope::Whole, delta))
}

/// The URL of a CRL, from the CA's CRL URL template.
pub fn url(template: &str, ca: &str, scope: Scope, delta: bool) -> String {
    template.replace("{crl}", &name(ca, scope, delta))
}

/// Runs `make` (which signs CRLs under the next CRL number) again when
/// another process (a node's updater, an operator's `muhr crl`) stored that
/// number first, at most five times.
pub(crate) async fn again_if_number_taken<F, Fut>(
    ca: &str,
    mut make: F,
) -> Result<Vec<muhr_store::StoredCrl>, crate::IssueError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<muhr_store::StoredCrl>, crate::IssueError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match make().await {
            Err(crate::IssueError::Store(muhr_store::StoreError::Conflict(why))) if attempt < 5 => {
                tracing::info!(%ca, %why, "CRL number taken by another process; signing again");
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (scope, delta, text) in [
            (Scope::Whole, false, "issuing"),
            (Scope::Whole, true, "issuing-delta"),
            (Scope::Shard(0), false, "issuing-0"),
            (Scope::Shard(13), true, "issuing-13-delta"),
        ] {
            assert_eq!(name("issuing", scope, delta), text);
            assert_eq!(parse_name(text), Some(("issuing", scope, delta)));
        }
        // Leading zeros would give one CRL two names.
        assert_eq!(
            parse_name("issuing-07"),
            Some(("issuing-07", Scope::Whole, false))
        );
        assert_eq!(
            url("http://h/crl/{crl}.crl", "root", Scope::Whole, true),
            "http://h/crl/root-delta.crl"
        );
    }
}

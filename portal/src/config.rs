//! `[portal]`: where the identity system sends citizens back, and how long
//! a login lasts. The provider itself is `[citizens.oidc]`.

use serde::Deserialize;

/// `[portal]`. Absent, `/portal/` is not served (404).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalConfig {
    /// The callback URL registered at the identity provider, exactly:
    /// `https://HOST/portal/callback` (plain `http` only on this machine).
    /// Its scheme decides whether cookies are `Secure`.
    pub redirect_uri: String,
    /// How long a session lasts after the login, whatever the citizen does
    /// (no sliding renewal: a stolen cookie is worth this long at most).
    #[serde(default = "default_session_minutes")]
    pub session_minutes: u64,
    /// How long the identity system's login page may take, from the
    /// redirect to the callback.
    #[serde(default = "default_login_minutes")]
    pub login_minutes: u64,
}

fn default_session_minutes() -> u64 {
    30
}
fn default_login_minutes() -> u64 {
    10
}

impl PortalConfig {
    /// Checks the section; the error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        let u =
            url::Url::parse(&self.redirect_uri).map_err(|e| format!("portal.redirect_uri: {e}"))?;
        if !muhr_ra::citizen::oidc::loopback_or_https(&self.redirect_uri) {
            return Err("portal.redirect_uri: must be https (plain http only to localhost)".into());
        }
        if u.path() != "/portal/callback" || u.query().is_some() || u.fragment().is_some() {
            return Err(
                "portal.redirect_uri: must be this server's /portal/callback, without query".into(),
            );
        }
        if !(5..=720).contains(&self.session_minutes) {
            return Err("portal.session_minutes: between 5 and 720".into());
        }
        if !(1..=60).contains(&self.login_minutes) {
            return Err("portal.login_minutes: between 1 and 60".into());
        }
        Ok(())
    }

    /// Cookies are `Secure` (and the session cookie `__Host-`) unless the
    /// portal is reached over plain http on this machine, where a browser
    /// would not send a Secure cookie back.
    pub fn secure(&self) -> bool {
        self.redirect_uri.starts_with("https://")
    }
}

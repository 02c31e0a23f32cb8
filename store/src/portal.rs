//! The citizen portal's logins under way and sessions. Both are keyed by
//! the SHA-256 of a secret the browser holds, so reading this table opens
//! nothing; both are taken or checked against the database on every node,
//! so a logout on one node ends the session on all.

use sqlx::Row;

use crate::{Result, Store, now_secs};

/// A login under way, as the authorization request left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingLogin {
    /// SHA-256 (hex) of the pre-login cookie's value.
    pub browser_hash: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE code verifier (RFC 7636).
    pub verifier: String,
    /// The page language when the login started.
    pub return_lang: String,
}

/// A live session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The login's ID token and nonce, sealed under a key only the cookie
    /// gives (base64 of nonce and ciphertext).
    pub sealed: String,
    /// The person's PINFL, for ending all their sessions.
    pub pinfl: String,
    /// The CSRF token of this session.
    pub csrf: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
}

impl Store {
    /// Records a login under way; `state_hash` is the SHA-256 (hex) of the
    /// authorization request's `state`. Logins older than their expiry are
    /// swept here.
    pub async fn begin_portal_login(
        &self,
        state_hash: &str,
        login: &PendingLogin,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query("DELETE FROM portal_logins WHERE expires_at < $1")
            .bind(now_secs())
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO portal_logins (state_hash, browser_hash, nonce, verifier, return_lang, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(state_hash)
        .bind(&login.browser_hash)
        .bind(&login.nonce)
        .bind(&login.verifier)
        .bind(&login.return_lang)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes the login under way with this state, once: a second callback
    /// with the same state finds nothing. An expired one is taken and not
    /// returned.
    pub async fn take_portal_login(&self, state_hash: &str) -> Result<Option<PendingLogin>> {
        let row = sqlx::query(
            "DELETE FROM portal_logins WHERE state_hash = $1 \
             RETURNING browser_hash, nonce, verifier, return_lang, expires_at",
        )
        .bind(state_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        if r.try_get::<i64, _>("expires_at")? < now_secs() {
            return Ok(None);
        }
        Ok(Some(PendingLogin {
            browser_hash: r.try_get("browser_hash")?,
            nonce: r.try_get("nonce")?,
            verifier: r.try_get("verifier")?,
            return_lang: r.try_get("return_lang")?,
        }))
    }

    /// Opens a session; `id_hash` is the SHA-256 (hex) of the cookie's value.
    pub async fn open_portal_session(&self, id_hash: &str, s: &Session) -> Result<()> {
        sqlx::query("DELETE FROM portal_sessions WHERE expires_at < $1")
            .bind(now_secs() - 86_400)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO portal_sessions (id_hash, pinfl, sealed, csrf, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id_hash)
        .bind(&s.pinfl)
        .bind(&s.sealed)
        .bind(&s.csrf)
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session with this id hash if it is live now: not ended, not expired.
    pub async fn portal_session(&self, id_hash: &str) -> Result<Option<Session>> {
        let row = sqlx::query(
            "SELECT pinfl, sealed, csrf, created_at, expires_at FROM portal_sessions \
             WHERE id_hash = $1 AND ended_at IS NULL AND expires_at > $2",
        )
        .bind(id_hash)
        .bind(now_secs())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Session {
                pinfl: r.try_get("pinfl")?,
                sealed: r.try_get("sealed")?,
                csrf: r.try_get("csrf")?,
                created_at: r.try_get("created_at")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Ends one session (logout). True when it was live.
    pub async fn end_portal_session(&self, id_hash: &str) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE portal_sessions SET ended_at = $2 WHERE id_hash = $1 AND ended_at IS NULL",
        )
        .bind(id_hash)
        .bind(now_secs())
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Ends every live session of a person (an operator's act, or the
    /// person's death recorded); returns how many.
    pub async fn end_portal_sessions_of(&self, pinfl: &str) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE portal_sessions SET ended_at = $2 WHERE pinfl = $1 AND ended_at IS NULL",
        )
        .bind(pinfl)
        .bind(now_secs())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}

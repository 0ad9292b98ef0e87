//! Browser sessions of signed-in users (the Admin UI): server-side rows found by the
//! SHA-256 of the token in the session cookie (64 hex digits from UUIDv4s: 244 random
//! bits; the token itself is never stored). A session ends at its `expires_at`
//! (`api.sessions.lifetime_seconds` after sign-in), when unused for
//! `api.sessions.idle_timeout_seconds` (its last use is written at most once per
//! minute or quarter of that time, so it may end that much sooner), when its user signs
//! out (one session or all), is disabled or removed, and when the user's password is no
//! longer the one it was opened with — even a password set while the sign-in that
//! opened it was under way, or by a node that knows nothing of sessions.
//!
//! The CSRF token of a session is derived from its token ([`csrf_of`]): only a page
//! that was given it by the API (same origin) can send it back, so a forged
//! cross-site request, which carries the cookie at most, never has it.

use chrono::{DateTime, Duration, Utc};
use mairust_entities::{user, web_session};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use sha2::{Digest, Sha256};

use crate::config::SessionConfig;
use crate::tokens::{hex, random_hex, same};

/// Hex digits of a session token.
const TOKEN_HEX: usize = 64;

/// A new session: the only time its token is known.
pub struct NewSession {
    pub token: String,
    pub record: web_session::Model,
}

/// A live session and its (enabled) user.
#[derive(Debug, Clone)]
pub struct Active {
    pub session: web_session::Model,
    pub user: user::Model,
}

fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// What a session keeps of the password it was opened with.
fn credential_of(user: &user::Model) -> String {
    hex(&Sha256::digest(user.password_hash.as_bytes()))
}

/// The CSRF token of the session whose token is `token`.
pub fn csrf_of(token: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"mairust-csrf\n");
    hasher.update(token.as_bytes());
    hex(&hasher.finalize())
}

/// Whether `given` is the CSRF token of `token`, compared in constant time.
pub fn csrf_matches(token: &str, given: &str) -> bool {
    same(&csrf_of(token), given)
}

/// Whether `token` could be a session token at all (checked before any query).
pub fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_HEX && token.bytes().all(|b| b.is_ascii_hexdigit())
}

fn seconds(n: u64) -> Duration {
    Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX / 1000))
}

/// Removes every session that ended (past its lifetime or idle too long).
pub async fn purge_ended(
    db: &impl ConnectionTrait,
    config: &SessionConfig,
    now: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let idle_since = now - seconds(config.idle_timeout_seconds);
    Ok(web_session::Entity::delete_many()
        .filter(
            sea_orm::Condition::any()
                .add(web_session::Column::ExpiresAt.lte(now.fixed_offset()))
                .add(web_session::Column::LastSeenAt.lte(idle_since.fixed_offset())),
        )
        .exec(db)
        .await?
        .rows_affected)
}

/// Opens a session for `user` (as read by the verified sign-in: its password hash is
/// the one checked); the user's oldest sessions beyond `max_per_user` end.
pub async fn create(
    db: &impl ConnectionTrait,
    config: &SessionConfig,
    user: &user::Model,
    remote: &str,
    user_agent: &str,
) -> Result<NewSession, DbErr> {
    let user_id = user.id;
    let now = Utc::now();
    purge_ended(db, config, now).await?;
    let token = random_hex(TOKEN_HEX);
    let user_agent: String = user_agent.chars().take(256).collect();
    let remote: String = remote.chars().take(64).collect();
    let record = web_session::ActiveModel {
        token_hash: Set(token_hash(&token)),
        user_id: Set(user_id),
        created_at: Set(now.fixed_offset()),
        last_seen_at: Set(now.fixed_offset()),
        expires_at: Set((now + seconds(config.lifetime_seconds)).fixed_offset()),
        remote: Set(remote),
        user_agent: Set(user_agent),
        credential: Set(credential_of(user)),
        ..Default::default()
    }
    .insert(db)
    .await?;
    let older: Vec<i64> = web_session::Entity::find()
        .select_only()
        .column(web_session::Column::Id)
        .filter(web_session::Column::UserId.eq(user_id))
        .order_by_desc(web_session::Column::Id)
        .offset(u64::from(config.max_per_user))
        // SQLite takes OFFSET only with a LIMIT; each sign-in trims, so few are past it.
        .limit(1000)
        .into_tuple()
        .all(db)
        .await?;
    if !older.is_empty() {
        web_session::Entity::delete_many()
            .filter(web_session::Column::Id.is_in(older))
            .exec(db)
            .await?;
    }
    Ok(NewSession { token, record })
}

/// The live session `token` names, with its enabled user; its last use is written at
/// most once a minute (or once per quarter of the idle timeout when that is shorter).
pub async fn find(
    db: &impl ConnectionTrait,
    config: &SessionConfig,
    token: &str,
) -> Result<Option<Active>, DbErr> {
    if !well_formed(token) {
        return Ok(None);
    }
    let now = Utc::now();
    let idle_since = now - seconds(config.idle_timeout_seconds);
    let found = web_session::Entity::find()
        .filter(web_session::Column::TokenHash.eq(token_hash(token)))
        .filter(web_session::Column::ExpiresAt.gt(now.fixed_offset()))
        .filter(web_session::Column::LastSeenAt.gt(idle_since.fixed_offset()))
        .one(db)
        .await?;
    let Some(session) = found else {
        return Ok(None);
    };
    let Some(user) = user::Entity::find_by_id(session.user_id)
        .filter(user::Column::Disabled.eq(false))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    if credential_of(&user) != session.credential {
        end(db, session.id).await?;
        return Ok(None);
    }
    let touch_after = seconds(60.min(config.idle_timeout_seconds / 4));
    if now - session.last_seen_at.to_utc() >= touch_after {
        web_session::Entity::update_many()
            .col_expr(
                web_session::Column::LastSeenAt,
                Expr::value(now.fixed_offset()),
            )
            .filter(web_session::Column::Id.eq(session.id))
            .exec(db)
            .await?;
    }
    Ok(Some(Active { session, user }))
}

/// Ends the session whose cookie holds `token`, if there is one (a new sign-in from a
/// browser that held one).
pub async fn end_token(db: &impl ConnectionTrait, token: &str) -> Result<(), DbErr> {
    if well_formed(token) {
        web_session::Entity::delete_many()
            .filter(web_session::Column::TokenHash.eq(token_hash(token)))
            .exec(db)
            .await?;
    }
    Ok(())
}

/// Ends one session; whether it was there.
pub async fn end(db: &impl ConnectionTrait, session_id: i64) -> Result<bool, DbErr> {
    Ok(web_session::Entity::delete_by_id(session_id)
        .exec(db)
        .await?
        .rows_affected
        > 0)
}

/// Ends every session of a user (sign out everywhere, password change, disable);
/// how many there were.
pub async fn end_all_of(db: &impl ConnectionTrait, user_id: i64) -> Result<u64, DbErr> {
    Ok(web_session::Entity::delete_many()
        .filter(web_session::Column::UserId.eq(user_id))
        .exec(db)
        .await?
        .rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_is_bound_to_the_token() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        assert!(csrf_matches(&a, &csrf_of(&a)));
        assert!(!csrf_matches(&a, &csrf_of(&b)));
        assert!(!csrf_matches(&a, ""));
        assert!(!csrf_matches(&a, &csrf_of(&a)[..63]));
        assert_ne!(
            csrf_of(&a),
            token_hash(&a),
            "the CSRF token is not the stored hash"
        );
    }

    #[test]
    fn tokens_are_checked_before_any_query() {
        assert!(well_formed(&"0f".repeat(32)));
        assert!(!well_formed(&"0f".repeat(31)));
        assert!(!well_formed(&"zz".repeat(32)));
        assert!(!well_formed(""));
        assert!(well_formed(&random_hex(TOKEN_HEX)));
    }
}

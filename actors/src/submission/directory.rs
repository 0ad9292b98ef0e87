//! The recipient directory: who is local, who may log in, who may send as whom.
//!
//! Everything the submission pipeline and an SMTP session ask about accounts goes
//! through [`Directory`], so a session can be driven without a database (an in-memory
//! directory in tests) and aliases or an external directory (LDAP) can come in later
//! behind the same questions. The server answers them from its database
//! ([`DatabaseConnection`] implements the trait).

use futures::future::BoxFuture;
use mairust_entities::user;
use sea_orm::{DatabaseConnection, DbErr};

use crate::accounts::{self, RecipientLookup};
use crate::proto::Address;

/// Questions about this server's accounts. Each answer may come from a database, so
/// each may fail: callers answer a failure with a temporary error, never a refusal.
pub trait Directory: Send + Sync {
    /// Where mail for `address` goes: a local user's INBOX, nowhere (a local domain
    /// without such an enabled user), or another server (not one of our domains).
    fn recipient<'a>(
        &'a self,
        address: &'a Address,
    ) -> BoxFuture<'a, Result<RecipientLookup, DbErr>>;

    /// The account whose address is `key` ([`Address::key`], or a login name in
    /// lowercase), disabled or not.
    fn user<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<user::Model>, DbErr>>;

    /// Whether `domain` is one of this server's domains.
    fn is_local_domain<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<bool, DbErr>>;
}

impl Directory for DatabaseConnection {
    fn recipient<'a>(
        &'a self,
        address: &'a Address,
    ) -> BoxFuture<'a, Result<RecipientLookup, DbErr>> {
        Box::pin(accounts::lookup_recipient(self, address))
    }

    fn user<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<user::Model>, DbErr>> {
        Box::pin(accounts::find_user(self, key))
    }

    fn is_local_domain<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<bool, DbErr>> {
        Box::pin(async move { Ok(accounts::find_domain(self, domain).await?.is_some()) })
    }
}

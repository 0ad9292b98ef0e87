//! Accounts (SPEC M8): domains, users with argon2id password hashes, mailboxes.
//! Plain query functions over a connection, shared by the CLI, SMTP and (later) the API.

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use chrono::Utc;
use mairust_entities::{domain, mailbox, user};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, Set, TransactionTrait,
};

use crate::proto::Address;

/// Mailboxes every new user gets (Junk: mail that failed the sender checks, see
/// `sender_auth`).
pub const DEFAULT_MAILBOXES: [&str; 3] = ["INBOX", "Sent", "Junk"];

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("domain `{0}` already exists")]
    DomainExists(String),
    #[error("domain `{0}` does not exist (add it with `mairust domain add {0}`)")]
    NoSuchDomain(String),
    #[error("user `{0}` already exists")]
    UserExists(String),
    #[error("user `{0}` does not exist")]
    NoSuchUser(String),
    #[error("mailbox `{0}` already exists")]
    MailboxExists(String),
    #[error("mailbox `{0}` does not exist")]
    NoSuchMailbox(String),
    #[error("mailbox `{0}` comes with every user and cannot be removed")]
    DefaultMailbox(String),
    #[error("`{0}` is not a valid {1}")]
    Invalid(String, &'static str),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

pub fn normalize_domain(name: &str) -> Result<String, AccountError> {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    match Address::parse(&format!("x@{name}")) {
        Some(a)
            if (!a.domain.starts_with('[') && a.domain.contains('.'))
                || a.domain == "localhost" =>
        {
            Ok(a.domain)
        }
        _ => Err(AccountError::Invalid(name, "domain name")),
    }
}

pub fn parse_address(address: &str) -> Result<Address, AccountError> {
    Address::parse(address.trim()).ok_or_else(|| AccountError::Invalid(address.into(), "address"))
}

pub async fn add_domain(
    db: &DatabaseConnection,
    name: &str,
) -> Result<domain::Model, AccountError> {
    let name = normalize_domain(name)?;
    if find_domain(db, &name).await?.is_some() {
        return Err(AccountError::DomainExists(name));
    }
    Ok(domain::ActiveModel {
        name: Set(name),
        created_at: Set(Utc::now().into()),
        ..Default::default()
    }
    .insert(db)
    .await?)
}

pub async fn find_domain<C: ConnectionTrait>(
    db: &C,
    name: &str,
) -> Result<Option<domain::Model>, DbErr> {
    domain_query(name).one(db).await
}

pub async fn list_domains(db: &DatabaseConnection) -> Result<Vec<domain::Model>, DbErr> {
    domain::Entity::find()
        .order_by_asc(domain::Column::Name)
        .all(db)
        .await
}

/// Removes a domain and, by cascade, its users and their mailboxes.
pub async fn remove_domain(db: &DatabaseConnection, name: &str) -> Result<(), AccountError> {
    let name = normalize_domain(name)?;
    let d = find_domain(db, &name)
        .await?
        .ok_or(AccountError::NoSuchDomain(name))?;
    domain::Entity::delete_by_id(d.id).exec(db).await?;
    Ok(())
}

pub fn hash_password(password: &str) -> Result<String, AccountError> {
    let hash: PasswordHash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| AccountError::Hash(e.to_string()))?;
    Ok(hash.to_string())
}

/// Constant-time check of a password against a stored PHC string. CPU-heavy: call it
/// from a blocking thread.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|hash: PasswordHash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Adds a user with `password`, hashed here on the caller's thread (CLI, tests).
pub async fn add_user(
    db: &DatabaseConnection,
    address: &str,
    password: &str,
) -> Result<user::Model, AccountError> {
    if password.is_empty() {
        return Err(AccountError::Invalid("(empty)".into(), "password"));
    }
    add_user_hashed(db, address, hash_password(password)?, false).await
}

/// Adds a user whose password the caller hashed ([`hash_password`], through the
/// node's `limits::PasswordGate` on a server).
/// `admin`: the user manages the server when signed in to the Admin UI.
pub async fn add_user_hashed(
    db: &DatabaseConnection,
    address: &str,
    hash: String,
    admin: bool,
) -> Result<user::Model, AccountError> {
    let addr = parse_address(address)?;
    let key = addr.key();
    // Reads, then writes: on SQLite a deferred transaction that another connection
    // writes under between the two fails at once (SQLITE_BUSY_SNAPSHOT, no busy wait),
    // as `mairust user add` did beside a running server. Immediate takes the write lock
    // first, waiting its turn (PostgreSQL ignores the mode).
    let txn = db
        .begin_with_options(sea_orm::TransactionOptions {
            sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
            ..Default::default()
        })
        .await?;
    let d = find_domain(&txn, &addr.domain)
        .await?
        .ok_or_else(|| AccountError::NoSuchDomain(addr.domain.clone()))?;
    if find_user(&txn, &key).await?.is_some() {
        return Err(AccountError::UserExists(key));
    }
    let now = Utc::now();
    let u = user::ActiveModel {
        domain_id: Set(d.id),
        address: Set(key),
        password_hash: Set(hash),
        disabled: Set(false),
        admin: Set(admin),
        created_at: Set(now.into()),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    for name in DEFAULT_MAILBOXES {
        mailbox::ActiveModel {
            user_id: Set(u.id),
            name: Set(name.into()),
            created_at: Set(now.into()),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
    }
    txn.commit().await?;
    Ok(u)
}

pub async fn find_user<C: ConnectionTrait>(
    db: &C,
    address: &str,
) -> Result<Option<user::Model>, DbErr> {
    user::Entity::find()
        .filter(user::Column::Address.eq(address.to_lowercase()))
        .one(db)
        .await
}

pub async fn list_users(
    db: &DatabaseConnection,
    domain_name: Option<&str>,
) -> Result<Vec<user::Model>, AccountError> {
    let mut q = user::Entity::find().order_by_asc(user::Column::Address);
    if let Some(name) = domain_name {
        let name = normalize_domain(name)?;
        let d = find_domain(db, &name)
            .await?
            .ok_or(AccountError::NoSuchDomain(name))?;
        q = q.filter(user::Column::DomainId.eq(d.id));
    }
    Ok(q.all(db).await?)
}

/// What [`update_user`] changes; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct UserChange {
    /// A new password's hash ([`hash_password`]).
    pub password_hash: Option<String>,
    /// A disabled user cannot log in and receives no mail (550 5.1.1).
    pub disabled: Option<bool>,
    /// The admin role (the Admin UI).
    pub admin: Option<bool>,
}

/// The user `address` names, with its key (the lower-cased address), or `NoSuchUser`.
async fn existing_user(
    db: &DatabaseConnection,
    address: &str,
) -> Result<(String, user::Model), AccountError> {
    let key = parse_address(address)?.key();
    match find_user(db, &key).await? {
        Some(u) => Ok((key, u)),
        None => Err(AccountError::NoSuchUser(key)),
    }
}

/// Sets a user's password, disabled flag and/or admin role. A new password or a
/// disabled user ends the user's browser sessions (in the same transaction).
pub async fn update_user(
    db: &DatabaseConnection,
    address: &str,
    change: UserChange,
) -> Result<user::Model, AccountError> {
    let end_sessions = change.password_hash.is_some() || change.disabled == Some(true);
    let (_, u) = existing_user(db, address).await?;
    let txn = db.begin().await?;
    let mut active: user::ActiveModel = u.into();
    if let Some(hash) = change.password_hash {
        active.password_hash = Set(hash);
    }
    if let Some(disabled) = change.disabled {
        active.disabled = Set(disabled);
    }
    if let Some(admin) = change.admin {
        active.admin = Set(admin);
    }
    let u = active.update(&txn).await?;
    if end_sessions {
        crate::websessions::end_all_of(&txn, u.id).await?;
    }
    txn.commit().await?;
    Ok(u)
}

pub async fn remove_user(db: &DatabaseConnection, address: &str) -> Result<(), AccountError> {
    let (_, u) = existing_user(db, address).await?;
    user::Entity::delete_by_id(u.id).exec(db).await?;
    Ok(())
}

/// A user's mailboxes, INBOX first.
pub async fn list_mailboxes(
    db: &DatabaseConnection,
    address: &str,
) -> Result<Vec<mailbox::Model>, AccountError> {
    let (_, u) = existing_user(db, address).await?;
    Ok(mailbox::Entity::find()
        .filter(mailbox::Column::UserId.eq(u.id))
        .order_by_asc(mailbox::Column::Id)
        .all(db)
        .await?)
}

/// A custom mailbox name: 1 to 255 characters, no control characters, no `/` at the
/// ends, and not one of the default names.
fn check_mailbox_name(name: &str) -> Result<(), AccountError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.chars().any(char::is_control)
        && name.trim() == name
        && !name.starts_with('/')
        && !name.ends_with('/');
    if ok {
        Ok(())
    } else {
        Err(AccountError::Invalid(name.into(), "mailbox name"))
    }
}

/// Adds a custom mailbox to a user.
pub async fn add_mailbox(
    db: &DatabaseConnection,
    address: &str,
    name: &str,
) -> Result<mailbox::Model, AccountError> {
    check_mailbox_name(name)?;
    let (key, u) = existing_user(db, address).await?;
    let exists = mailbox::Entity::find()
        .filter(mailbox::Column::UserId.eq(u.id))
        .filter(mailbox::Column::Name.eq(name))
        .one(db)
        .await?
        .is_some();
    if exists {
        return Err(AccountError::MailboxExists(format!("{key}/{name}")));
    }
    Ok(mailbox::ActiveModel {
        user_id: Set(u.id),
        name: Set(name.to_string()),
        created_at: Set(Utc::now().into()),
        ..Default::default()
    }
    .insert(db)
    .await?)
}

/// Removes a custom mailbox and its message entries; INBOX and Sent stay.
pub async fn remove_mailbox(
    db: &DatabaseConnection,
    address: &str,
    name: &str,
) -> Result<(), AccountError> {
    if DEFAULT_MAILBOXES.contains(&name) {
        return Err(AccountError::DefaultMailbox(name.into()));
    }
    let (key, u) = existing_user(db, address).await?;
    let removed = mailbox::Entity::delete_many()
        .filter(mailbox::Column::UserId.eq(u.id))
        .filter(mailbox::Column::Name.eq(name))
        .exec(db)
        .await?
        .rows_affected;
    if removed == 0 {
        return Err(AccountError::NoSuchMailbox(format!("{key}/{name}")));
    }
    Ok(())
}

/// A recipient resolved at RCPT time: whose INBOX the message goes into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRecipient {
    pub address: String,
    pub user_id: i64,
    pub inbox_id: i64,
}

/// How a RCPT address relates to this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientLookup {
    Local(LocalRecipient),
    /// A local domain without such (enabled) user: 550 5.1.1.
    UnknownUser,
    /// Not one of our domains: relaying.
    Remote,
}

/// A user row as a recipient lookup reads it: id, disabled, INBOX id (none without one).
pub struct RecipientRow {
    pub user_id: i64,
    pub disabled: bool,
    pub inbox_id: Option<i64>,
}

impl RecipientRow {
    /// Where mail for the user `key` of this row goes.
    pub fn lookup(self, key: String) -> RecipientLookup {
        match (self.disabled, self.inbox_id) {
            (false, Some(inbox_id)) => RecipientLookup::Local(LocalRecipient {
                address: key,
                user_id: self.user_id,
                inbox_id,
            }),
            _ => RecipientLookup::UnknownUser,
        }
    }
}

/// The one query for the common case (a local user): the user `key` and their INBOX,
/// as columns `user_id`, `disabled`, `inbox_id`.
pub fn recipient_query(key: &str) -> sea_orm::sea_query::SelectStatement {
    use sea_orm::sea_query::{Alias, Expr, ExprTrait, JoinType, Query};
    let (users, boxes) = (Alias::new("users"), Alias::new("mailboxes"));
    Query::select()
        .expr_as(
            Expr::col((users.clone(), Alias::new("id"))),
            Alias::new("user_id"),
        )
        .expr_as(
            Expr::col((users.clone(), Alias::new("disabled"))),
            Alias::new("disabled"),
        )
        .expr_as(
            Expr::col((boxes.clone(), Alias::new("id"))),
            Alias::new("inbox_id"),
        )
        .from(users.clone())
        .join(
            JoinType::LeftJoin,
            boxes.clone(),
            Expr::col((boxes.clone(), Alias::new("user_id")))
                .equals((users.clone(), Alias::new("id")))
                .and(Expr::col((boxes, Alias::new("name"))).eq("INBOX")),
        )
        .and_where(Expr::col((users, Alias::new("address"))).eq(key))
        .to_owned()
}

/// The id of the user's mailbox `name`, if it has one.
pub async fn mailbox_id<C: ConnectionTrait>(
    db: &C,
    user_id: i64,
    name: &str,
) -> Result<Option<i64>, DbErr> {
    Ok(mailbox::Entity::find()
        .filter(mailbox::Column::UserId.eq(user_id))
        .filter(mailbox::Column::Name.eq(name))
        .one(db)
        .await?
        .map(|b| b.id))
}

/// The query [`find_domain`] runs.
pub fn domain_query(name: &str) -> sea_orm::Select<domain::Entity> {
    domain::Entity::find().filter(domain::Column::Name.eq(name.to_ascii_lowercase()))
}

/// One round trip for the common case (a local user): the user and their INBOX; a
/// second one (the domain) for an address that is no user's.
pub async fn lookup_recipient(
    db: &DatabaseConnection,
    address: &Address,
) -> Result<RecipientLookup, DbErr> {
    let key = address.key();
    if let Some(row) = db.query_one(&recipient_query(&key)).await? {
        let row = RecipientRow {
            user_id: row.try_get("", "user_id")?,
            disabled: row.try_get("", "disabled")?,
            inbox_id: row.try_get("", "inbox_id")?,
        };
        return Ok(row.lookup(key));
    }
    if find_domain(db, &address.domain).await?.is_some() {
        Ok(RecipientLookup::UnknownUser)
    } else {
        Ok(RecipientLookup::Remote)
    }
}

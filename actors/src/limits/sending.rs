//! Send limits (issue: an authenticated account could send without limit): messages
//! and recipients per hour of each account, and of all accounts of a domain together,
//! counted in the database (`send_counters`) so every node sees the same count. Each
//! submission is charged in one transaction, with a conditional upsert per scope: the
//! count only grows while it stays within the limit, so two nodes charging at once can
//! never pass it together. A user may have limits of their own (`send_limit_overrides`,
//! set through the API). Counting is by fixed hour windows (UTC).

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait, Value,
};

use crate::config::SendLimitsConfig;
use crate::metrics::metrics;

/// A limit the submission would pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.text())]
pub struct Exceeded {
    /// `account` or `domain`.
    pub scope: &'static str,
    /// `messages` or `recipients`.
    pub kind: &'static str,
    pub limit: u64,
    pub subject: String,
    /// One message with more recipients than the hourly limit: no later hour takes it.
    pub permanent: bool,
}

impl Exceeded {
    fn text(&self) -> String {
        if self.permanent {
            format!(
                "a message to more than {} recipients is over the sending limit of {} per hour",
                self.limit, self.subject
            )
        } else {
            format!(
                "the sending limit of {} {} per hour for {} is reached; try again later",
                self.limit, self.kind, self.subject
            )
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChargeError {
    #[error(transparent)]
    Exceeded(Exceeded),
    #[error("send counters: {0}")]
    Db(#[from] DbErr),
}

/// An account's limits: its own where set, else the configured ones (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub messages_per_hour: u64,
    pub recipients_per_hour: u64,
}

pub struct SendLimits {
    db: DatabaseConnection,
    config: SendLimitsConfig,
}

impl SendLimits {
    pub fn new(config: &SendLimitsConfig, db: DatabaseConnection) -> SendLimits {
        SendLimits {
            db,
            config: config.clone(),
        }
    }

    /// Charges one message of `recipients` recipients to `account` (lower case) and
    /// its domain, or says which limit it would pass (nothing is charged then). The
    /// [`Charge`] gives it back ([`SendLimits::refund`]) when the message is not kept.
    pub async fn charge(&self, account: &str, recipients: u64) -> Result<Charge, ChargeError> {
        let own = limits_of(&self.db, account).await?;
        let account_limits = own.unwrap_or(Limits {
            messages_per_hour: self.config.messages_per_hour,
            recipients_per_hour: self.config.recipients_per_hour,
        });
        let domain = account.rsplit_once('@').map_or("", |(_, d)| d);
        let scopes = [
            ("account", account, account_limits),
            (
                "domain",
                domain,
                Limits {
                    messages_per_hour: self.config.domain_messages_per_hour,
                    recipients_per_hour: self.config.domain_recipients_per_hour,
                },
            ),
        ];
        let window = window(Utc::now());
        let limited: Vec<_> = scopes
            .into_iter()
            .filter(|(_, _, l)| l.messages_per_hour > 0 || l.recipients_per_hour > 0)
            .collect();
        let charge = Charge {
            account: account.to_string(),
            domain: domain.to_string(),
            window,
            recipients,
            scopes: limited.iter().map(|(scope, _, _)| *scope).collect(),
        };
        if limited.is_empty() {
            return Ok(charge);
        }
        let txn = self.db.begin().await?;
        for (scope, subject, limits) in limited {
            if let Err(e) = charge_one(&txn, scope, subject, window, recipients, limits).await {
                txn.rollback().await.ok();
                if let ChargeError::Exceeded(x) = &e {
                    metrics().send_limit_hit(x.scope, x.kind);
                }
                return Err(e);
            }
        }
        txn.commit().await?;
        Ok(charge)
    }

    /// Gives back a charge whose message was not kept (it failed after the charge:
    /// signing, storage). Failures are logged: the allowance then stays spent.
    pub async fn refund(&self, charge: &Charge) {
        let backend = self.db.get_database_backend();
        let p = placeholders(backend, 4);
        for scope in &charge.scopes {
            let subject = if *scope == "account" {
                &charge.account
            } else {
                &charge.domain
            };
            let sql = format!(
                "UPDATE send_counters SET messages = messages - 1, recipients = recipients - {} \
                 WHERE scope = {} AND subject = {} AND window_start = {} AND messages > 0",
                p[0], p[1], p[2], p[3]
            );
            let values: Vec<Value> = vec![
                i64::try_from(charge.recipients).unwrap_or(i64::MAX).into(),
                (*scope).into(),
                subject.as_str().into(),
                charge.window.into(),
            ];
            if let Err(e) = self
                .db
                .execute_raw(Statement::from_sql_and_values(backend, sql, values))
                .await
            {
                tracing::warn!(component = "smtp", event = "send_refund_failed", error = %e, "a send charge could not be given back");
            }
        }
    }
}

/// What [`SendLimits::charge`] counted, to give back if the message is not kept.
#[derive(Debug, Clone)]
pub struct Charge {
    account: String,
    domain: String,
    window: i64,
    recipients: u64,
    scopes: Vec<&'static str>,
}

/// The hour window of `now`.
fn window(now: DateTime<Utc>) -> i64 {
    now.timestamp().div_euclid(3600)
}

fn placeholders(backend: DbBackend, n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| match backend {
            DbBackend::Postgres => format!("${i}"),
            _ => "?".to_string(),
        })
        .collect()
}

async fn charge_one(
    db: &impl ConnectionTrait,
    scope: &'static str,
    subject: &str,
    window: i64,
    recipients: u64,
    limits: Limits,
) -> Result<(), ChargeError> {
    let exceeded = |kind, limit, permanent| {
        ChargeError::Exceeded(Exceeded {
            scope,
            kind,
            limit,
            subject: subject.to_string(),
            permanent,
        })
    };
    let cap = |limit: u64| {
        if limit == 0 {
            i64::MAX
        } else {
            i64::try_from(limit).unwrap_or(i64::MAX)
        }
    };
    let (max_messages, max_recipients) = (
        cap(limits.messages_per_hour),
        cap(limits.recipients_per_hour),
    );
    let recipients = i64::try_from(recipients).unwrap_or(i64::MAX);
    if recipients > max_recipients {
        return Err(exceeded("recipients", limits.recipients_per_hour, true));
    }
    let backend = db.get_database_backend();
    let p = placeholders(backend, 6);
    let sql = format!(
        "INSERT INTO send_counters (scope, subject, window_start, messages, recipients) \
         VALUES ({}, {}, {}, 1, {}) \
         ON CONFLICT (scope, subject, window_start) DO UPDATE \
         SET messages = send_counters.messages + 1, \
             recipients = send_counters.recipients + excluded.recipients \
         WHERE send_counters.messages + 1 <= {} \
           AND send_counters.recipients + excluded.recipients <= {} \
         RETURNING messages",
        p[0], p[1], p[2], p[3], p[4], p[5]
    );
    let values: Vec<Value> = vec![
        scope.into(),
        subject.into(),
        window.into(),
        recipients.into(),
        max_messages.into(),
        max_recipients.into(),
    ];
    let charged = db
        .query_one_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    if charged.is_some() {
        return Ok(());
    }
    // Not charged: which limit stood in the way.
    let p = placeholders(backend, 3);
    let sql = format!(
        "SELECT messages FROM send_counters WHERE scope = {} AND subject = {} AND window_start = {}",
        p[0], p[1], p[2]
    );
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [scope.into(), subject.into(), window.into()],
        ))
        .await?;
    let messages: i64 = match row {
        Some(row) => row.try_get_by_index(0)?,
        None => 0,
    };
    if messages + 1 > max_messages {
        Err(exceeded("messages", limits.messages_per_hour, false))
    } else {
        Err(exceeded("recipients", limits.recipients_per_hour, false))
    }
}

/// The limits of the user `account` (lower case) has of its own, if any.
pub async fn limits_of(db: &impl ConnectionTrait, account: &str) -> Result<Option<Limits>, DbErr> {
    let backend = db.get_database_backend();
    let p = placeholders(backend, 1);
    let sql = format!(
        "SELECT o.messages_per_hour, o.recipients_per_hour FROM send_limit_overrides o \
         JOIN users u ON u.id = o.user_id WHERE u.address = {}",
        p[0]
    );
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [account.into()],
        ))
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let messages: Option<i64> = row.try_get_by_index(0)?;
    let recipients: Option<i64> = row.try_get_by_index(1)?;
    Ok(Some(Limits {
        messages_per_hour: messages.unwrap_or(0).max(0) as u64,
        recipients_per_hour: recipients.unwrap_or(0).max(0) as u64,
    }))
}

/// Gives the user `user_id` limits of its own (0: none); `None` returns it to the
/// configured ones.
pub async fn set_limits_of(
    db: &impl ConnectionTrait,
    user_id: i64,
    limits: Option<Limits>,
) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let p = placeholders(backend, 3);
    let statement = match limits {
        None => Statement::from_sql_and_values(
            backend,
            format!("DELETE FROM send_limit_overrides WHERE user_id = {}", p[0]),
            [user_id.into()],
        ),
        Some(l) => Statement::from_sql_and_values(
            backend,
            format!(
                "INSERT INTO send_limit_overrides (user_id, messages_per_hour, recipients_per_hour) \
                 VALUES ({}, {}, {}) ON CONFLICT (user_id) DO UPDATE SET \
                 messages_per_hour = excluded.messages_per_hour, \
                 recipients_per_hour = excluded.recipients_per_hour",
                p[0], p[1], p[2]
            ),
            [
                user_id.into(),
                i64::try_from(l.messages_per_hour)
                    .unwrap_or(i64::MAX)
                    .into(),
                i64::try_from(l.recipients_per_hour)
                    .unwrap_or(i64::MAX)
                    .into(),
            ],
        ),
    };
    db.execute_raw(statement).await?;
    Ok(())
}

/// Removes the counters of windows before the last hour; returns how many.
pub async fn purge_counters(db: &DatabaseConnection, now: DateTime<Utc>) -> Result<u64, DbErr> {
    let backend = db.get_database_backend();
    let p = placeholders(backend, 1);
    let done = db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            format!("DELETE FROM send_counters WHERE window_start < {}", p[0]),
            [(window(now) - 1).into()],
        ))
        .await?;
    Ok(done.rows_affected())
}

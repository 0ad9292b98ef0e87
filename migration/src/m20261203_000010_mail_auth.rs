//! Checks of mail: `messages.authentication` holds what SPF, DKIM, DMARC and ARC found
//! for mail from other servers, `messages.spam` what rspamd said (both JSON; null when
//! not checked, and on rows a node one version older writes during a rolling upgrade),
//! and every user gets the Junk mailbox that quarantined mail and spam go to (new users
//! get it with INBOX and Sent).
//!
//! Down: the entries of every mailbox named Junk (also one a user made before this
//! migration) move to their owner's INBOX before those mailboxes are removed, so no
//! message is lost with its mailbox; then the columns go.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Messages {
    Table,
    Authentication,
    Spam,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Mailboxes {
    Table,
    UserId,
    Name,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Messages::Table)
                    .add_column(text_null(Messages::Authentication))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Messages::Table)
                    .add_column(text_null(Messages::Spam))
                    .to_owned(),
            )
            .await?;
        // One statement: users an older node adds meanwhile either get theirs here or
        // are added after (and get Junk from the new binary's user creation).
        let has_junk = Query::select()
            .expr(Expr::val(1))
            .from(Mailboxes::Table)
            .and_where(
                Expr::col((Mailboxes::Table, Mailboxes::UserId)).equals((Users::Table, Users::Id)),
            )
            .and_where(Expr::col((Mailboxes::Table, Mailboxes::Name)).eq("Junk"))
            .to_owned();
        // The time as the entities write it (text on SQLite, timestamptz on PostgreSQL).
        let now = chrono::Utc::now().fixed_offset();
        let users = Query::select()
            .column((Users::Table, Users::Id))
            .expr(Expr::val("Junk"))
            .expr(Expr::val(now))
            .from(Users::Table)
            .and_where(Expr::exists(has_junk).not())
            .to_owned();
        let insert = Query::insert()
            .into_table(Mailboxes::Table)
            .columns([Mailboxes::UserId, Mailboxes::Name, Mailboxes::CreatedAt])
            .select_from(users)
            .map_err(|e| DbErr::Migration(e.to_string()))?
            .to_owned();
        manager.exec_stmt(insert).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "UPDATE mailbox_messages SET mailbox_id = \
               (SELECT i.id FROM mailboxes i, mailboxes j \
                 WHERE j.id = mailbox_messages.mailbox_id AND i.user_id = j.user_id AND i.name = 'INBOX') \
             WHERE mailbox_id IN (SELECT id FROM mailboxes WHERE name = 'Junk') \
               AND EXISTS (SELECT 1 FROM mailboxes i, mailboxes j \
                 WHERE j.id = mailbox_messages.mailbox_id AND i.user_id = j.user_id AND i.name = 'INBOX')",
        )
        .await?;
        db.execute_unprepared(
            "DELETE FROM mailboxes WHERE name = 'Junk' \
             AND NOT EXISTS (SELECT 1 FROM mailbox_messages mm WHERE mm.mailbox_id = mailboxes.id)",
        )
        .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Messages::Table)
                    .drop_column(Messages::Spam)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Messages::Table)
                    .drop_column(Messages::Authentication)
                    .to_owned(),
            )
            .await
    }
}

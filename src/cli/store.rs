//! `mairust db adopt-store`: the operator's override when `serve` refuses an object
//! store that is not the one the database expects (storage::identity). It ties the
//! configured store to the database with a new identity, after saying how many of the
//! newest messages have their body there. Nothing is deleted; `mairust db check --fix`
//! deals with the bodies that are really gone.

use anyhow::Context;
use clap::Args;
use mairust_actors::config::Config;
use mairust_actors::storage::BodyStore;
use mairust_actors::storage::identity;

#[derive(Args)]
pub struct AdoptArgs {
    /// Tie the store even when a large share of the newest messages have no body in it.
    #[arg(long)]
    accept_missing: bool,
}

pub async fn adopt(config: &Config, args: AdoptArgs) -> anyhow::Result<()> {
    let db = super::open_existing(config).await?;
    let store = BodyStore::open(&config.storage)
        .context("opening the object store (create or mount it first)")?;
    let expected = identity::database_identity(&db).await?;
    let found = store
        .read_marker()
        .await
        .context("reading the store's marker")?;
    let (missing, sampled) = identity::sample_recent_bodies(&db, &store).await?;
    println!("object store:  {}", store.describe());
    println!(
        "database says: {}",
        expected.as_deref().unwrap_or("(no identity yet)")
    );
    println!(
        "store says:    {}",
        found.as_deref().unwrap_or("(no marker)")
    );
    println!(
        "newest messages with their body here: {} of {sampled}",
        sampled - missing
    );
    if missing > 0 && missing * 4 >= sampled && !args.accept_missing {
        anyhow::bail!(
            "{missing} of the newest {sampled} messages have no body in {}: this looks like the wrong store; \
             pass --accept-missing to tie it anyway (then `mairust db check` lists every missing body)",
            store.describe()
        );
    }
    let store_id = uuid::Uuid::new_v4().to_string();
    identity::tie(&db, &store, &store_id).await?;
    let audit = super::audit_log(config, &db);
    super::audit(
        &audit,
        "storage.adopt",
        format!("{} as {store_id}", store.describe()),
    )
    .await;
    println!("tied {} to this database as {store_id}", store.describe());
    if missing > 0 {
        println!("run `mairust db check` to see the messages whose body is missing");
    }
    Ok(())
}

//! Janitor: periodic housekeeping that no request waits for. Today it prunes audit-log
//! entries older than `audit.retention_days` (SPEC O5), at start and then hourly; every
//! node may run it, the delete is idempotent.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::audit::AuditLog;

const INTERVAL: Duration = Duration::from_secs(3600);

pub struct Janitor {
    audit: Arc<AuditLog>,
    retention_days: u32,
}

impl Janitor {
    pub fn new(audit: Arc<AuditLog>, retention_days: u32) -> Self {
        Janitor {
            audit,
            retention_days,
        }
    }

    fn prune(&self, ctx: &mut Context<Self>) {
        let (audit, days) = (self.audit.clone(), self.retention_days);
        ctx.spawn(
            async move {
                match audit.prune(days).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(component = "supervisor", event = "audit_pruned", removed = n, retention_days = days, "old audit entries pruned")
                    }
                    Err(e) => {
                        tracing::warn!(component = "supervisor", error = %e, "audit pruning failed; next try in an hour")
                    }
                }
            }
            .into_actor(self),
        );
    }
}

impl Actor for Janitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.prune(ctx);
        ctx.run_interval(INTERVAL, |act, ctx| act.prune(ctx));
    }
}

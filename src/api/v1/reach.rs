//! What a key limited to some domains reaches (SPEC S4): the subqueries that narrow a
//! list to its domains, and the domain an address or a queue entry belongs to. Objects
//! out of reach are answered as missing (404) by each route, with that route's own
//! message, so a limited key learns nothing about other domains.

use std::collections::BTreeSet;

use mairust_actors::accounts;
use mairust_entities::{domain, user};
use sea_orm::sea_query::{Expr, ExprTrait, Query, SelectStatement};
use sea_orm::{ColumnTrait, EntityName};

/// `SELECT id FROM domains WHERE name IN (…)`: the ids of `domains`.
pub fn domain_ids(domains: &BTreeSet<String>) -> SelectStatement {
    Query::select()
        .column(domain::Column::Id)
        .from(domain::Entity.table_ref())
        .and_where(domain::Column::Name.is_in(domains.iter().cloned()))
        .to_owned()
}

/// `SELECT id FROM users WHERE domain_id IN (…)`: the users of `domains`.
pub fn user_ids(domains: &BTreeSet<String>) -> SelectStatement {
    Query::select()
        .column(user::Column::Id)
        .from(user::Entity.table_ref())
        .and_where(Expr::col(user::Column::DomainId).in_subquery(domain_ids(domains)))
        .to_owned()
}

/// The (lower-case) domain of an address; `None` when it is not one (the route then
/// gives its own answer to a malformed address, which reveals nothing).
pub fn address_domain(address: &str) -> Option<String> {
    accounts::parse_address(address).ok().map(|a| a.domain)
}

//! Where a recipient domain's mail goes: a configured route, the smarthost, or the
//! domain's MX hosts (RFC 5321 §5.1) found through a [`Resolver`] that tests replace.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures::future::BoxFuture;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

use super::reply::{self, EnhancedStatus, RemoteReply};
use crate::config::DeliveryConfig;

/// Why no host could be found, with the status the queue records for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Try again later (DNS timeout, SERVFAIL ...).
    #[error("{0} {1}")]
    Temporary(EnhancedStatus, String),
    /// The domain cannot receive mail (does not exist, null MX): bounce.
    #[error("{0} {1}")]
    Permanent(EnhancedStatus, String),
}

impl RouteError {
    /// The reply recorded for the recipients of this destination.
    pub fn reply(&self) -> RemoteReply {
        match self {
            RouteError::Temporary(status, text) => reply::no_route(false, *status, text),
            RouteError::Permanent(status, text) => reply::no_route(true, *status, text),
        }
    }

    /// The same reason, to be tried again later.
    fn temporary(self) -> RouteError {
        match self {
            RouteError::Temporary(status, text) | RouteError::Permanent(status, text) => {
                RouteError::Temporary(status, text)
            }
        }
    }
}

/// DNS as the queue needs it.
pub trait Resolver: Send + Sync {
    /// MX records as (preference, exchange); empty when the domain exists but has none.
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<(u16, String)>, RouteError>>;
    /// Addresses of a host; empty when it has none.
    fn ips<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, RouteError>>;
}

/// The real resolver: hickory with the system configuration or `delivery.dns`.
pub struct HickoryResolver(TokioResolver);

impl HickoryResolver {
    pub fn new(nameservers: &[SocketAddr]) -> Result<Self, String> {
        tokio_resolver(nameservers).map(HickoryResolver)
    }
}

/// A hickory resolver on `nameservers` (`delivery.dns.nameservers`), or the system's
/// configuration when there are none: MX lookups of delivery and the sender checks of
/// inbound mail (`sender_auth`) ask the same servers, which tests replace.
pub fn tokio_resolver(nameservers: &[SocketAddr]) -> Result<TokioResolver, String> {
    let builder = if nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| format!("system DNS configuration: {e}"))?
    } else {
        let servers = nameservers
            .iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], servers),
            TokioRuntimeProvider::default(),
        )
    };
    builder.build().map_err(|e| format!("DNS resolver: {e}"))
}

fn dns_error(what: &str, name: &str, e: hickory_resolver::net::NetError) -> RouteError {
    if e.is_nx_domain() {
        RouteError::Permanent(
            EnhancedStatus::BAD_DESTINATION_SYSTEM,
            format!("{what} {name} does not exist"),
        )
    } else {
        RouteError::Temporary(
            EnhancedStatus::ROUTING_SERVER_FAILURE,
            format!("{what} lookup for {name} failed: {e}"),
        )
    }
}

/// A fully qualified query name, so no search domain is appended.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

impl Resolver for HickoryResolver {
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<(u16, String)>, RouteError>> {
        Box::pin(async move {
            match self.0.mx_lookup(fqdn(domain)).await {
                Ok(lookup) => Ok(lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                        _ => None,
                    })
                    .collect()),
                Err(e) if e.is_no_records_found() && !e.is_nx_domain() => Ok(Vec::new()),
                Err(e) => Err(dns_error("domain", domain, e)),
            }
        })
    }

    fn ips<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, RouteError>> {
        Box::pin(async move {
            match self.0.lookup_ip(fqdn(host)).await {
                Ok(lookup) => Ok(lookup.iter().collect()),
                Err(e) if e.is_no_records_found() && !e.is_nx_domain() => Ok(Vec::new()),
                Err(e) => Err(dns_error("host", host, e)),
            }
        })
    }
}

/// Used when no resolver could be built: every MX lookup is a temporary failure, so
/// mail waits in the queue instead of bouncing.
pub struct NoResolver(pub String);

impl NoResolver {
    fn error(&self) -> RouteError {
        RouteError::Temporary(EnhancedStatus::ROUTING_SERVER_FAILURE, self.0.clone())
    }
}

impl Resolver for NoResolver {
    fn mx<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<(u16, String)>, RouteError>> {
        Box::pin(async move { Err(self.error()) })
    }

    fn ips<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, RouteError>> {
        Box::pin(async move { Err(self.error()) })
    }
}

/// One host to try: its name (for logs, history and TLS) and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub name: String,
    pub addr: SocketAddr,
}

/// Next hops for recipient domains.
pub struct Router {
    routes: BTreeMap<String, String>,
    smarthost: Option<String>,
    mx_port: u16,
    resolver: Arc<dyn Resolver>,
}

impl Router {
    pub fn new(config: &DeliveryConfig, resolver: Arc<dyn Resolver>) -> Self {
        Router {
            routes: config
                .routes
                .iter()
                .map(|(d, t)| (d.trim_end_matches('.').to_ascii_lowercase(), t.clone()))
                .collect(),
            smarthost: config.smarthost.clone(),
            mx_port: config.mx_port,
            resolver,
        }
    }

    /// Recipients with the same destination share connections: a fixed `host:port`
    /// (route or smarthost) or `mx:DOMAIN`.
    pub fn destination(&self, domain: &str) -> String {
        match self.routes.get(domain).or(self.smarthost.as_ref()) {
            Some(target) => target.clone(),
            None => format!("mx:{domain}"),
        }
    }

    /// The hosts to try for a destination, in order.
    pub async fn hops(&self, destination: &str) -> Result<Vec<Hop>, RouteError> {
        if let Some(domain) = destination.strip_prefix("mx:") {
            return self.mx_hops(domain).await;
        }
        let (host, port) = destination
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .ok_or_else(|| {
                RouteError::Permanent(
                    EnhancedStatus::MISCONFIGURED,
                    format!("bad route {destination}"),
                )
            })?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.host_hops(host, port).await
    }

    async fn host_hops(&self, host: &str, port: u16) -> Result<Vec<Hop>, RouteError> {
        let ips = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => self.resolver.ips(host).await?,
        };
        Ok(ips
            .into_iter()
            .map(|ip| Hop {
                name: host.to_string(),
                addr: SocketAddr::new(ip, port),
            })
            .collect())
    }

    async fn mx_hops(&self, domain: &str) -> Result<Vec<Hop>, RouteError> {
        let mut mx = self.resolver.mx(domain).await?;
        // RFC 7505: a single MX of "." means the domain accepts no mail.
        if mx.len() == 1 && (mx[0].1 == "." || mx[0].1.is_empty()) {
            return Err(RouteError::Permanent(
                EnhancedStatus::NULL_MX,
                format!("{domain} accepts no mail (null MX)"),
            ));
        }
        if mx.is_empty() {
            // RFC 5321 §5.1: no MX, the domain itself is the host.
            let hops = self.host_hops(domain, self.mx_port).await?;
            if hops.is_empty() {
                return Err(RouteError::Permanent(
                    EnhancedStatus::BAD_DESTINATION_SYSTEM,
                    format!("{domain} has no MX and no address"),
                ));
            }
            return Ok(hops);
        }
        mx.sort_by_key(|(preference, _)| *preference);
        let mut hops = Vec::new();
        let mut last_error = None;
        for (_, exchange) in mx {
            let name = exchange.trim_end_matches('.');
            match self.host_hops(name, self.mx_port).await {
                Ok(h) => hops.extend(h),
                Err(e) => last_error = Some(e),
            }
        }
        if hops.is_empty() {
            return Err(match last_error {
                Some(e) => e.temporary(),
                None => RouteError::Temporary(
                    EnhancedStatus::UNABLE_TO_ROUTE,
                    format!("no address for any MX host of {domain}"),
                ),
            });
        }
        Ok(hops)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A resolver answering from tables, as tests replace DNS.
    #[derive(Default)]
    struct StaticResolver {
        mx: HashMap<String, Result<Vec<(u16, String)>, RouteError>>,
        ips: HashMap<String, Vec<IpAddr>>,
    }

    impl Resolver for StaticResolver {
        fn mx<'a>(
            &'a self,
            domain: &'a str,
        ) -> BoxFuture<'a, Result<Vec<(u16, String)>, RouteError>> {
            Box::pin(async move {
                self.mx.get(domain).cloned().unwrap_or_else(|| {
                    Err(RouteError::Permanent(
                        EnhancedStatus::BAD_DESTINATION_SYSTEM,
                        format!("{domain} does not exist"),
                    ))
                })
            })
        }

        fn ips<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, RouteError>> {
            Box::pin(async move { Ok(self.ips.get(host).cloned().unwrap_or_default()) })
        }
    }

    fn router(resolver: StaticResolver, routes: &[(&str, &str)]) -> Router {
        let config = DeliveryConfig {
            routes: routes
                .iter()
                .map(|(d, t)| (d.to_string(), t.to_string()))
                .collect(),
            ..Default::default()
        };
        Router::new(&config, Arc::new(resolver))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn mx_hosts_in_preference_order() {
        let mut r = StaticResolver::default();
        r.mx.insert(
            "a.test".into(),
            Ok(vec![
                (20, "backup.a.test.".into()),
                (10, "mx.a.test.".into()),
            ]),
        );
        r.ips.insert("mx.a.test".into(), vec![ip("192.0.2.1")]);
        r.ips.insert("backup.a.test".into(), vec![ip("192.0.2.2")]);
        let hops = router(r, &[]).hops("mx:a.test").await.unwrap();
        let names: Vec<_> = hops
            .iter()
            .map(|h| (h.name.as_str(), h.addr.to_string()))
            .collect();
        assert_eq!(
            names,
            [
                ("mx.a.test", "192.0.2.1:25".to_string()),
                ("backup.a.test", "192.0.2.2:25".to_string())
            ]
        );
    }

    #[tokio::test]
    async fn no_mx_falls_back_to_the_domain_address() {
        let mut r = StaticResolver::default();
        r.mx.insert("b.test".into(), Ok(vec![]));
        r.ips.insert("b.test".into(), vec![ip("192.0.2.3")]);
        let hops = router(r, &[]).hops("mx:b.test").await.unwrap();
        assert_eq!(hops[0].addr, "192.0.2.3:25".parse().unwrap());
    }

    #[tokio::test]
    async fn null_mx_and_missing_domain_are_permanent() {
        let mut r = StaticResolver::default();
        r.mx.insert("null.test".into(), Ok(vec![(0, ".".into())]));
        let router = router(r, &[]);
        assert!(matches!(
            router.hops("mx:null.test").await,
            Err(RouteError::Permanent(status, m))
                if status == EnhancedStatus::NULL_MX && m.contains("null MX")
        ));
        assert!(matches!(
            router.hops("mx:nowhere.test").await,
            Err(RouteError::Permanent(..))
        ));
    }

    #[tokio::test]
    async fn mx_hosts_without_addresses_are_temporary() {
        let mut r = StaticResolver::default();
        r.mx.insert("c.test".into(), Ok(vec![(10, "mx.c.test.".into())]));
        assert!(matches!(
            router(r, &[]).hops("mx:c.test").await,
            Err(RouteError::Temporary(..))
        ));
    }

    #[tokio::test]
    async fn routes_win_over_mx() {
        let r = router(StaticResolver::default(), &[("d.test", "127.0.0.1:2526")]);
        assert_eq!(r.destination("d.test"), "127.0.0.1:2526");
        assert_eq!(r.destination("e.test"), "mx:e.test");
        let hops = r.hops("127.0.0.1:2526").await.unwrap();
        assert_eq!(hops[0].addr, "127.0.0.1:2526".parse().unwrap());
    }
}

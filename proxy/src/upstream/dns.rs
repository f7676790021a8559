//! Name resolution for `STRICT_DNS` and `LOGICAL_DNS` clusters, refreshed every
//! `dns_refresh_rate`. Runs on the main (control) runtime, never on workers.

use std::net::SocketAddr;
use std::sync::Arc;

use super::cluster::{host_of, ClusterState, Host, HostAddr};
use crate::config::cluster::{Discovery, DnsFamily};
use crate::config::common::HostAddress;
use crate::drain::DrainWatch;

/// Resolves every endpoint of a DNS cluster once.
pub async fn resolve(cluster: &ClusterState) -> std::io::Result<Vec<Host>> {
    let mut hosts = Vec::new();
    for ep in &cluster.config.endpoints {
        match &ep.address {
            HostAddress::Ip(a) => hosts.push(host_of(ep, HostAddr::Tcp(*a), None)),
            HostAddress::Unix(p) => hosts.push(host_of(ep, HostAddr::Unix(p.clone()), None)),
            HostAddress::Name { host, port } => {
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), *port))
                    .await?
                    .collect();
                let mut addrs = filter_family(addrs, cluster.config.dns_family);
                addrs.dedup();
                if cluster.config.discovery == Discovery::LogicalDns {
                    addrs.truncate(1);
                }
                hosts.extend(
                    addrs
                        .into_iter()
                        .map(|a| host_of(ep, HostAddr::Tcp(a), Some(host.clone()))),
                );
            }
        }
    }
    Ok(hosts)
}

fn filter_family(addrs: Vec<SocketAddr>, family: DnsFamily) -> Vec<SocketAddr> {
    let (v4, v6): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|a| a.is_ipv4());
    match family {
        DnsFamily::V4Only => v4,
        DnsFamily::V6Only => v6,
        DnsFamily::Auto if !v6.is_empty() => v6,
        DnsFamily::Auto => v4,
        DnsFamily::V4Preferred if !v4.is_empty() => v4,
        DnsFamily::V4Preferred => v6,
        DnsFamily::All => v4.into_iter().chain(v6).collect(),
    }
}

/// Re-resolves the cluster every `dns_refresh_rate` until `stop` fires or the cluster
/// is retired.
pub async fn refresh_loop(cluster: Arc<ClusterState>, mut stop: DrainWatch) {
    let mut retired = cluster.retired.watch();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cluster.config.dns_refresh_rate) => update(&cluster).await,
            _ = stop.signaled() => return,
            _ = retired.signaled() => return,
        }
    }
}

/// One resolution round; a failure keeps the previous hosts (as Envoy does).
pub async fn update(cluster: &ClusterState) {
    match resolve(cluster).await {
        Ok(hosts) => {
            let n = hosts.len();
            if cluster.set_hosts(hosts) {
                tracing::debug!(cluster = %cluster.name, hosts = n, "DNS hosts changed");
            }
            cluster.stats.update_success.inc();
        }
        Err(e) => {
            tracing::warn!(cluster = %cluster.name, error = %e, "DNS resolution failed");
            cluster.stats.update_failure.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_filtering() {
        let v4: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        assert_eq!(filter_family(vec![v4, v6], DnsFamily::Auto), vec![v6]);
        assert_eq!(filter_family(vec![v4], DnsFamily::Auto), vec![v4]);
        assert_eq!(
            filter_family(vec![v4, v6], DnsFamily::V4Preferred),
            vec![v4]
        );
        assert_eq!(filter_family(vec![v4, v6], DnsFamily::All), vec![v4, v6]);
        assert!(filter_family(vec![v4], DnsFamily::V6Only).is_empty());
    }
}

//! Facts about this host's network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The host's first non-loopback address of the family chosen by
/// `--local-address-ip-version` (Envoy's `getLocalAddress`), or loopback if it has none.
pub fn local_address(v6: bool) -> IpAddr {
    let found = if_addrs::get_if_addrs()
        .ok()
        .into_iter()
        .flatten()
        .map(|i| i.ip())
        .find(|ip| !ip.is_loopback() && ip.is_ipv6() == v6);
    found.unwrap_or(if v6 {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn picks_the_requested_family() {
        assert!(super::local_address(false).is_ipv4());
        assert!(super::local_address(true).is_ipv6());
    }
}

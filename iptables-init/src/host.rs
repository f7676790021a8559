//! What the host contributes to the settings: whether IPv6 rules are made (the pod has
//! only IPv6 addresses, or `ISTIO_DUAL_STACK` is on, as Istio decides) and the DNS
//! servers from `/etc/resolv.conf`.

use std::net::IpAddr;

use crate::settings::Host;

/// The DNS servers of a resolv.conf text, IPv4 then IPv6, as written.
pub fn resolv_conf_servers(text: &str) -> (Vec<String>, Vec<String>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(server) = words.next() else { continue };
        match server.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => v4.push(server.to_owned()),
            Ok(IpAddr::V6(_)) => v6.push(server.to_owned()),
            Err(_) => {}
        }
    }
    (v4, v6)
}

/// IPv6 rules are made when the pod's addresses (loopback and link-local aside) are all
/// IPv6, or when dual stack is on.
pub fn wants_ipv6(addrs: &[IpAddr], dual_stack: bool) -> bool {
    let usable = |a: &&IpAddr| match a {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local(),
        IpAddr::V6(v6) => !v6.is_loopback() && (v6.segments()[0] & 0xffc0) != 0xfe80,
    };
    let usable: Vec<&IpAddr> = addrs.iter().filter(usable).collect();
    dual_stack || (!usable.is_empty() && usable.iter().all(|a| a.is_ipv6()))
}

/// Detects the host facts from this machine.
pub fn detect(env: &dyn Fn(&str) -> Option<String>) -> Host {
    let addrs: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|v| v.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default();
    let dual_stack = env("ISTIO_DUAL_STACK").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let (dns_v4, dns_v6) = std::fs::read_to_string("/etc/resolv.conf")
        .map(|t| resolv_conf_servers(&t))
        .unwrap_or_default();
    Host {
        ipv6: wants_ipv6(&addrs, dual_stack),
        dns_v4,
        dns_v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_servers_keep_their_spelling() {
        let text = "search svc.cluster.local\nnameserver 10.96.0.10\nnameserver ::127.0.0.53\n# nameserver 1.1.1.1\nnameserver bogus\noptions ndots:5\n";
        assert_eq!(
            resolv_conf_servers(text),
            (
                vec!["10.96.0.10".to_owned()],
                vec!["::127.0.0.53".to_owned()]
            )
        );
    }

    #[test]
    fn ipv6_only_when_the_pod_is_ipv6_or_dual_stack() {
        let v4: IpAddr = "10.1.2.3".parse().expect("ip");
        let v6: IpAddr = "fd00::3".parse().expect("ip");
        let ll: IpAddr = "fe80::1".parse().expect("ip");
        let lo: IpAddr = "::1".parse().expect("ip");
        assert!(!wants_ipv6(&[v4, ll, lo], false));
        assert!(!wants_ipv6(&[v4, v6], false));
        assert!(wants_ipv6(&[v6, ll, lo], false));
        assert!(wants_ipv6(&[v4], true));
        assert!(!wants_ipv6(&[lo], false));
    }
}

//! istio-iptables command lines: every case of `../shared/testdata/istio-iptables/cases.json`
//! (its flags and env give the effective config Istio's test used) and every line the
//! sidecar injector writes (`injector-istio-init-args.txt`).

use iptables_init::settings::{InboundMode, Ports, Ranges};
use iptables_init::{Host, Settings};
use serde_json::Value;
use tests::istio_iptables::{argv, case_settings, cases, parse, testdata};

fn join<T: ToString>(v: &[T]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The settings in the shape of Istio's `config.Config` fields the cases record.
fn as_istio(s: &Settings) -> Vec<(&'static str, Value)> {
    let ports = |p: &Ports| match p {
        Ports::None => String::new(),
        Ports::All => "*".into(),
        Ports::List(v) => join(v),
    };
    let ranges = |r: &Ranges| match r {
        Ranges::None => String::new(),
        Ranges::All => "*".into(),
        Ranges::List(v) => join(v),
    };
    vec![
        ("ProxyPort", s.proxy_port.to_string().into()),
        (
            "InboundCapturePort",
            s.inbound_capture_port.to_string().into(),
        ),
        (
            "InboundTunnelPort",
            s.inbound_tunnel_port.to_string().into(),
        ),
        ("ProxyUID", join(&s.proxy_uids).into()),
        ("ProxyGID", join(&s.proxy_gids).into()),
        ("InboundTProxyMark", s.tproxy_mark.clone().into()),
        (
            "InboundTProxyRouteTable",
            s.tproxy_route_table.clone().into(),
        ),
        ("OwnerGroupsInclude", s.owner_groups_include.clone().into()),
        ("OwnerGroupsExclude", s.owner_groups_exclude.clone().into()),
        (
            "HostIPv4LoopbackCidr",
            s.host_ipv4_loopback_cidr.to_string().into(),
        ),
        ("InboundPortsInclude", ports(&s.inbound_ports).into()),
        ("InboundPortsExclude", join(&s.inbound_ports_exclude).into()),
        ("OutboundIPRangesInclude", ranges(&s.outbound_ranges).into()),
        (
            "OutboundIPRangesExclude",
            join(&s.outbound_ranges_exclude).into(),
        ),
        ("OutboundPortsInclude", join(&s.outbound_ports).into()),
        (
            "OutboundPortsExclude",
            join(&s.outbound_ports_exclude).into(),
        ),
        (
            "InboundInterceptionMode",
            match s.inbound_mode {
                InboundMode::Tproxy => "TPROXY",
                InboundMode::Redirect => "",
            }
            .into(),
        ),
        (
            "RerouteVirtualInterfaces",
            join(&s.kube_virt_interfaces).into(),
        ),
        ("ExcludeInterfaces", join(&s.exclude_interfaces).into()),
        ("RedirectDNS", s.redirect_dns.into()),
        ("CaptureAllDNS", s.capture_all_dns.into()),
        ("DropInvalid", s.drop_invalid.into()),
        ("EnableIPv6", s.host.ipv6.into()),
    ]
}

#[test]
fn every_case_gives_istios_effective_config() {
    let cases = cases();
    assert_eq!(cases.len(), 14);
    for case in &cases {
        let name = case["name"].as_str().expect("name");
        let want = &case["effective_config"];
        let s = case_settings(case);
        for (field, got) in as_istio(&s) {
            assert_eq!(got, want[field], "{name}: {field}");
        }
    }
}

#[test]
fn every_injector_command_line_parses() {
    let text = std::fs::read_to_string(testdata("injector-istio-init-args.txt")).expect("args");
    let mut seen = 0;
    for line in text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
    {
        let s = parse(&argv(line), &|_| None, Host::default());
        assert_eq!(
            (s.proxy_port, s.inbound_capture_port),
            (15001, 15006),
            "{line}"
        );
        assert!(s.inbound_ports_exclude.contains(&15090), "{line}");
        seen += 1;
    }
    assert_eq!(seen, 18, "every command line in the file");
}

use super::*;
use crate::config::load::{decode, parse_text, UnknownFields};
use crate::config::route::{Action, ClusterTarget};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

fn table(yaml: &str) -> RouteTable {
    let v = parse_text(yaml, "test").unwrap();
    let (rc, _): (RouteConfiguration, _) = decode(
        v,
        "envoy.config.route.v3.RouteConfiguration",
        UnknownFields::Reject,
    )
    .unwrap();
    RouteTable::try_from(&rc).unwrap()
}

fn pick<'a>(
    t: &'a RouteTable,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<&'a str> {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let req = RequestView {
        host,
        path,
        method: &Method::GET,
        scheme: "http",
        headers: &h,
    };
    t.route(&req).map(|(_, r)| r.name.as_str())
}

const VHOSTS: &str = r#"
virtual_hosts:
- name: exact
  domains: ["api.example.com", "api.example.com:8080"]
  routes: [{name: exact, match: {prefix: /}, direct_response: {status: 200}}]
- name: long-suffix
  domains: ["*.api.example.com"]
  routes: [{name: long-suffix, match: {prefix: /}, direct_response: {status: 200}}]
- name: suffix
  domains: ["*.example.com"]
  routes: [{name: suffix, match: {prefix: /}, direct_response: {status: 200}}]
- name: prefix
  domains: ["api.*"]
  routes: [{name: prefix, match: {prefix: /}, direct_response: {status: 200}}]
- name: any
  domains: ["*"]
  routes: [{name: any, match: {prefix: /}, direct_response: {status: 200}}]
"#;

#[test]
fn domain_precedence_exact_suffix_prefix_default() {
    let t = table(VHOSTS);
    assert_eq!(pick(&t, "api.example.com", "/", &[]), Some("exact"));
    assert_eq!(pick(&t, "api.example.com:8080", "/", &[]), Some("exact"));
    assert_eq!(
        pick(&t, "v1.api.example.com", "/", &[]),
        Some("long-suffix")
    );
    assert_eq!(pick(&t, "www.example.com", "/", &[]), Some("suffix"));
    assert_eq!(pick(&t, "api.other.org", "/", &[]), Some("prefix"));
    assert_eq!(
        pick(&t, "example.com", "/", &[]),
        Some("any"),
        "wildcard needs a character"
    );
    assert_eq!(pick(&t, "api.example.com:9090", "/", &[]), Some("prefix"));
}

#[test]
fn duplicate_domains_are_rejected() {
    let v = parse_text(
        "virtual_hosts: [{name: a, domains: [x]}, {name: b, domains: [x]}]",
        "t",
    )
    .unwrap();
    let (rc, _): (RouteConfiguration, _) = decode(
        v,
        "envoy.config.route.v3.RouteConfiguration",
        UnknownFields::Reject,
    )
    .unwrap();
    let e = RouteTable::try_from(&rc).unwrap_err();
    assert!(e.to_string().contains("domain 'x'"), "{e}");
}

#[test]
fn ignore_port_in_host_matching() {
    let t = table("ignore_port_in_host_matching: true\nvirtual_hosts: [{name: a, domains: [x.com], routes: [{name: a, match: {prefix: /}, direct_response: {status: 200}}]}]");
    assert_eq!(pick(&t, "x.com:81", "/", &[]), Some("a"));
    assert_eq!(strip_port("[::1]:80"), "[::1]");
    assert_eq!(strip_port("[::1]"), "[::1]");
}

const ROUTES: &str = r#"
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - {name: exact, match: {path: /exact}, direct_response: {status: 200}}
  - {name: ci, match: {path: /CI, case_sensitive: false}, direct_response: {status: 200}}
  - {name: regex, match: {safe_regex: {regex: "/re/[0-9]+"}}, direct_response: {status: 200}}
  - {name: sep, match: {path_separated_prefix: /sep}, direct_response: {status: 200}}
  - name: hdr-exact
    match: {prefix: /h, headers: [{name: x-a, string_match: {exact: one}}]}
    direct_response: {status: 200}
  - name: hdr-range
    match: {prefix: /h, headers: [{name: x-n, range_match: {start: 10, end: 20}}]}
    direct_response: {status: 200}
  - name: hdr-absent
    match: {prefix: /h, headers: [{name: x-b, present_match: false}]}
    direct_response: {status: 200}
  - name: hdr-invert
    match: {prefix: /h, headers: [{name: x-b, string_match: {prefix: no}, invert_match: true}]}
    direct_response: {status: 200}
  - name: query
    match: {prefix: /q, query_parameters: [{name: debug, string_match: {exact: "1"}}]}
    direct_response: {status: 200}
  - name: query-present
    match: {prefix: /q, query_parameters: [{name: trace, present_match: true}]}
    direct_response: {status: 200}
  - {name: grpc, match: {prefix: /g, grpc: {}}, direct_response: {status: 200}}
  - name: authority
    match: {prefix: /a, headers: [{name: ":authority", string_match: {suffix: ".internal"}}]}
    direct_response: {status: 200}
  - {name: fallback, match: {prefix: /}, route: {cluster: c}}
"#;

#[test]
fn match_kinds() {
    let t = table(ROUTES);
    let p = |path: &str, h: &[(&str, &str)]| pick(&t, "host", path, h);
    assert_eq!(p("/exact", &[]), Some("exact"));
    assert_eq!(
        p("/exact?x=1", &[]),
        Some("exact"),
        "path match ignores the query"
    );
    assert_eq!(p("/exact/", &[]), Some("fallback"));
    assert_eq!(p("/ci", &[]), Some("ci"));
    assert_eq!(p("/re/42", &[]), Some("regex"));
    assert_eq!(p("/re/4x", &[]), Some("fallback"));
    assert_eq!(p("/sep", &[]), Some("sep"));
    assert_eq!(p("/sep/x", &[]), Some("sep"));
    assert_eq!(p("/separate", &[]), Some("fallback"));
    assert_eq!(p("/h", &[("x-a", "one")]), Some("hdr-exact"));
    assert_eq!(p("/h", &[("x-n", "15"), ("x-b", "yes")]), Some("hdr-range"));
    assert_eq!(
        p("/h", &[("x-n", "20"), ("x-b", "yes")]),
        Some("hdr-invert")
    );
    assert_eq!(p("/h", &[]), Some("hdr-absent"));
    assert_eq!(p("/h", &[("x-b", "nope")]), Some("fallback"));
    assert_eq!(p("/q?debug=1", &[]), Some("query"));
    assert_eq!(p("/q?debug=2&trace", &[]), Some("query-present"));
    assert_eq!(p("/q", &[]), Some("fallback"));
    assert_eq!(
        p("/g", &[("content-type", "application/grpc+proto")]),
        Some("grpc")
    );
    assert_eq!(p("/g", &[("content-type", "text/plain")]), Some("fallback"));
    assert_eq!(pick(&t, "svc.internal", "/a", &[]), Some("authority"));
}

#[test]
fn first_match_wins_and_actions_convert() {
    let t = table(ROUTES);
    let (_, r) = t
        .route(&RequestView {
            host: "h",
            path: "/zzz",
            method: &Method::GET,
            scheme: "http",
            headers: &HeaderMap::new(),
        })
        .unwrap();
    match &r.action {
        Action::Forward(f) => {
            assert!(matches!(&f.target, ClusterTarget::Named(c) if &**c == "c"));
            assert_eq!(f.timeout, Some(std::time::Duration::from_secs(15)));
        }
        other => panic!("unexpected action {other:?}"),
    }
}

#[test]
fn multiple_header_values_are_joined() {
    let t = table(
        r#"
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - name: joined
    match: {prefix: /, headers: [{name: x-m, string_match: {exact: "a,b"}}]}
    direct_response: {status: 200}
"#,
    );
    assert_eq!(
        pick(&t, "h", "/", &[("x-m", "a"), ("x-m", "b")]),
        Some("joined")
    );
}

/// `x-envoy-expected-rq-timeout-ms` under a route's own timeouts is made with the config,
/// after the virtual host's retry policy is inherited.
#[test]
fn expected_timeout_header_is_made_with_the_config() {
    let t = table(
        r#"
virtual_hosts:
- name: v
  domains: ["*"]
  retry_policy: {retry_on: 5xx, per_try_timeout: 2s}
  routes:
  - {name: inherits, match: {prefix: /a}, route: {cluster: c, timeout: 10s}}
  - {name: dropped, match: {prefix: /b}, route: {cluster: c, timeout: 10s, retry_policy: {retry_on: 5xx, per_try_timeout: 20s}}}
  - {name: none, match: {prefix: /c}, route: {cluster: c, timeout: 0s, retry_policy: {retry_on: 5xx}}}
"#,
    );
    let header = |path: &str| {
        let h = HeaderMap::new();
        let req = RequestView {
            host: "x",
            path,
            method: &Method::GET,
            scheme: "http",
            headers: &h,
        };
        let (_, r) = t.route(&req).expect("routed");
        let Action::Forward(f) = &r.action else {
            panic!("forwarded");
        };
        f.expected_timeout_header
            .as_ref()
            .map(|v| v.to_str().expect("ascii").to_string())
    };
    assert_eq!(header("/a").as_deref(), Some("2000"));
    // A per-try timeout not below the route timeout is dropped.
    assert_eq!(header("/b").as_deref(), Some("10000"));
    assert_eq!(header("/c"), None);
}

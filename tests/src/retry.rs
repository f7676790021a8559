//! The retry scenario shared by the retry tests and their differential twin: connection
//! managers (`edge` for external clients, `internal` for internal ones) whose routes
//! carry different retry policies in front of a scripted flaky upstream
//! (`/flaky/KEY/N/HOW`), and a cluster with one refusing host.

use std::net::SocketAddr;

use crate::upstream::closed_port;

const CONFIG: &str = r#"
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: edge
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    per_connection_buffer_limit_bytes: 65536
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: edge
          route_config: &routes
            virtual_hosts:
            - name: main
              domains: ["*"]
              include_request_attempt_count: true
              include_attempt_count_in_response: true
              retry_policy: {retry_on: "connect-failure", num_retries: 2}
              routes:
              - match: {prefix: /flaky/five}
                route:
                  cluster: a
                  retry_policy: {retry_on: "5xx", num_retries: 3, retry_back_off: {base_interval: 0.001s}}
              - match: {prefix: /flaky/gw}
                route:
                  cluster: a
                  retry_policy: {retry_on: "gateway-error", num_retries: 3, retry_back_off: {base_interval: 0.001s}}
              - match: {prefix: /flaky/codes}
                route:
                  cluster: a
                  retry_policy: {retry_on: "retriable-status-codes", retriable_status_codes: [418], retry_back_off: {base_interval: 0.001s}}
              - match: {prefix: /flaky/pertry}
                route:
                  cluster: a
                  timeout: 5s
                  retry_policy: {retry_on: "5xx", num_retries: 2, per_try_timeout: 0.1s, retry_back_off: {base_interval: 0.001s}}
              - match: {prefix: /flaky/idle}
                route:
                  cluster: a
                  timeout: 5s
                  retry_policy: {retry_on: "reset", num_retries: 2, per_try_idle_timeout: 0.1s, retry_back_off: {base_interval: 0.001s}}
              - match: {prefix: /flaky/bothidle}
                route:
                  cluster: a
                  timeout: 5s
                  retry_policy: {retry_on: "5xx", num_retries: 1, per_try_timeout: 0.1s, per_try_idle_timeout: 0.3s, retry_back_off: {base_interval: 0.001s}}
              - match: {prefix: /flaky/none}
                route: {cluster: a}
              - match: {prefix: /two}
                route:
                  cluster: two
                  retry_policy:
                    retry_on: "connect-failure"
                    num_retries: 3
                    retry_back_off: {base_interval: 0.001s}
                    retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts, typed_config: {"@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}}]
                    host_selection_retry_max_attempts: 5
          http_filters: &filters
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  # The same routes for internal clients: 127.0.0.1 is an internal address here, so the
  # x-envoy-* retry headers are honoured (on `edge` they are stripped, as Envoy does).
  - name: internal
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    per_connection_buffer_limit_bytes: 65536
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: internal
          use_remote_address: true
          internal_address_config: {cidr_ranges: [{address_prefix: 127.0.0.1, prefix_len: 32}]}
          route_config: *routes
          http_filters: *filters
  clusters:
  - name: a
    load_assignment: {cluster_name: a, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{a}}}}}}]}]}
  - name: two
    connect_timeout: 1s
    load_assignment: {cluster_name: two, endpoints: [{lb_endpoints: [
      {endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{closed}}}}}},
      {endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{a}}}}}}]}]}
"#;

/// The config with cluster `a` at `upstream` (and `two` = a refusing port + `upstream`).
pub fn config(upstream: SocketAddr) -> String {
    crate::render(
        CONFIG,
        &[
            ("a", upstream.port().to_string()),
            ("closed", closed_port().port().to_string()),
        ],
    )
}

//! Filesystem xDS (`path_config_source`): LDS and CDS from files holding a
//! `DiscoveryResponse`, reloaded when replaced; a bad file keeps the last good config.

use std::path::Path;
use std::time::Duration;

use tests::client::get;
use tests::proxy::Proxy;
use tests::upstream::HttpUpstream;

fn cds(addr: std::net::SocketAddr) -> String {
    format!(
        r#"
version_info: "1"
resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: web
  connect_timeout: 1s
  load_assignment:
    cluster_name: web
    endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}}}]}}]
"#,
        addr.ip(),
        addr.port()
    )
}

fn lds(version: &str, tag: &str) -> String {
    format!(
        r#"
version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: ingress
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: ingress
        http_filters: [{{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]
        route_config:
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:
            - match: {{prefix: /}}
              route: {{cluster: web}}
              response_headers_to_add: [{{header: {{key: x-route, value: {tag}}}}}]
"#
    )
}

/// Replaces a file atomically (write beside it, then rename), as Envoy expects.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

async fn route_tag(addr: std::net::SocketAddr) -> String {
    get(addr, "x", "/")
        .await
        .header("x-route")
        .unwrap_or("-")
        .to_string()
}

async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_and_clusters_from_watched_files() {
    let a = HttpUpstream::start("a").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (cds_path, lds_path) = (dir.path().join("cds.yaml"), dir.path().join("lds.yaml"));
    replace(&cds_path, &cds(a.addr));
    replace(&lds_path, &lds("1", "v1"));
    let yaml = format!(
        r#"
node: {{id: files, cluster: test}}
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}
dynamic_resources:
  cds_config: {{path_config_source: {{path: {}}}, resource_api_version: V3}}
  lds_config: {{path_config_source: {{path: {}}}, resource_api_version: V3}}
"#,
        cds_path.display(),
        lds_path.display()
    );
    let proxy = tokio::task::spawn_blocking(move || Proxy::start(&yaml))
        .await
        .expect("starts");
    let addr = proxy.addr("ingress");
    assert_eq!(route_tag(addr).await, "v1");

    replace(&lds_path, &lds("2", "v2"));
    eventually("the new listener file applied", async || {
        route_tag(addr).await == "v2"
    })
    .await;
    // The listener kept its address.
    assert_eq!(proxy.addr("ingress"), addr);

    // A file that does not validate is rejected; the last good config keeps serving.
    replace(
        &lds_path,
        &lds("3", "v3").replace("cluster: web", "cluster: web, timeout: -1s"),
    );
    eventually("the bad file rejected", async || {
        proxy.stat("listener_manager.lds.update_rejected") == 1
    })
    .await;
    assert_eq!(route_tag(addr).await, "v2");

    // Removing the cluster from its file: the route now answers 503 (no cluster).
    replace(&cds_path, "version_info: \"2\"\nresources: []\n");
    eventually("the cluster removed", async || {
        get(addr, "x", "/").await.status == 503
    })
    .await;
    tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .expect("stops");
}

//! xDS resources (protobuf `Any`) -> Remora's validated config types. Every error names
//! the resource (type and name) and the field, and becomes the NACK's message.

use std::hash::{Hash, Hasher};

use envoy_types::pb::envoy::config::cluster::v3 as cluster_pb;
use envoy_types::pb::envoy::config::endpoint::v3 as endpoint_pb;
use envoy_types::pb::envoy::config::listener::v3 as listener_pb;
use envoy_types::pb::envoy::config::route::v3 as route_pb;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use xds_client::ResourceType;

use crate::config::cluster::{self, Cluster};
use crate::config::common::HostAddress;
use crate::config::listener::Listener;
use crate::config::route::RouteTable;
use crate::config::ConfigError;
use crate::upstream::cluster::{host_of, HostAddr};
use crate::upstream::host::Assignment;

use super::wire;

/// A resource that failed to decode or validate: `<Type> '<name>': <field>: <reason>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} '{name}': {error}")]
pub struct Invalid {
    pub kind: &'static str,
    pub name: String,
    pub error: ConfigError,
}

/// A decoded resource: its name, a hash of its encoding (to skip unchanged resources) and
/// the converted value.
#[derive(Debug)]
pub struct Decoded<T> {
    pub name: String,
    pub hash: u64,
    pub value: T,
}

fn kind(ty: ResourceType) -> &'static str {
    match ty {
        ResourceType::Listener => "Listener",
        ResourceType::RouteConfiguration => "RouteConfiguration",
        ResourceType::Cluster => "Cluster",
        ResourceType::ClusterLoadAssignment => "ClusterLoadAssignment",
        ResourceType::Secret => "Secret",
    }
}

/// A hash of a resource's encoding; equal encodings mean an unchanged resource.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn decode<P: Message + Default, T>(
    ty: ResourceType,
    any: &Any,
    index: usize,
    name_of: impl Fn(&P) -> &str,
    convert: impl FnOnce(&P) -> Result<T, ConfigError>,
) -> Result<Decoded<T>, Invalid> {
    decode_with(ty, any, index, |b| Ok(P::decode(b)?), name_of, convert)
}

/// [`decode`], with the protobuf decoding done by `parse`.
fn decode_with<'a, P, T>(
    ty: ResourceType,
    any: &'a Any,
    index: usize,
    parse: impl FnOnce(&'a [u8]) -> Result<P, wire::Malformed>,
    name_of: impl Fn(&P) -> &str,
    convert: impl FnOnce(&P) -> Result<T, ConfigError>,
) -> Result<Decoded<T>, Invalid> {
    let invalid = |name: String, error| Invalid {
        kind: kind(ty),
        name,
        error,
    };
    if any.type_url != ty.type_url() {
        return Err(invalid(
            format!("#{index}"),
            ConfigError::new(
                "type_url",
                format!("'{}' in a {} response", any.type_url, ty.short_name()),
            ),
        ));
    }
    let proto = parse(any.value.as_slice()).map_err(|e| {
        invalid(
            format!("#{index}"),
            ConfigError::new("", format!("cannot decode: {e}")),
        )
    })?;
    let name = name_of(&proto).to_owned();
    if name.is_empty() {
        return Err(invalid(
            format!("#{index}"),
            ConfigError::new("name", "must not be empty"),
        ));
    }
    let value = convert(&proto).map_err(|e| invalid(name.clone(), e))?;
    Ok(Decoded {
        name,
        hash: hash(&any.value),
        value,
    })
}

pub fn cluster(any: &Any, index: usize) -> Result<Decoded<Cluster>, Invalid> {
    decode::<cluster_pb::Cluster, _>(
        ResourceType::Cluster,
        any,
        index,
        |c| &c.name,
        |c| Cluster::try_from(c),
    )
}

pub fn listener(any: &Any, index: usize) -> Result<Decoded<Listener>, Invalid> {
    decode::<listener_pb::Listener, _>(
        ResourceType::Listener,
        any,
        index,
        |l| &l.name,
        |l| Listener::try_from(l),
    )
}

/// `RouteConfiguration.virtual_hosts`
const VIRTUAL_HOSTS: u64 = 2;

/// A route configuration, its virtual hosts decoded and converted one at a time: a
/// mesh-sized configuration never has all of them decoded at once.
pub fn route(any: &Any, index: usize) -> Result<Decoded<RouteTable>, Invalid> {
    decode_with(
        ResourceType::RouteConfiguration,
        any,
        index,
        |bytes| {
            let (hosts, rest) = wire::split_field(bytes, VIRTUAL_HOSTS)?;
            Ok((
                route_pb::RouteConfiguration::decode(rest.as_slice())?,
                hosts,
            ))
        },
        |(r, _)| &r.name,
        |(r, hosts)| {
            let hosts = hosts.iter().map(|b| {
                route_pb::VirtualHost::decode(*b)
                    .map_err(|e| ConfigError::new("", format!("cannot decode: {e}")))
            });
            RouteTable::build(r, hosts)
        },
    )
}

/// A `ClusterLoadAssignment` as the hosts it lists, with their priority, locality and
/// reported health. EDS hosts are addresses, never names to resolve.
pub fn endpoints(any: &Any, index: usize) -> Result<Decoded<Assignment>, Invalid> {
    decode::<endpoint_pb::ClusterLoadAssignment, _>(
        ResourceType::ClusterLoadAssignment,
        any,
        index,
        |c| &c.cluster_name,
        |cla| {
            let la = cluster::load_assignment(cla)?;
            let hosts = la
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let addr = match &e.address {
                        HostAddress::Ip(a) => HostAddr::Tcp(*a),
                        HostAddress::Unix(p) => HostAddr::Unix(p.clone()),
                        HostAddress::Name { host, .. } => {
                            return Err(ConfigError::new(
                                format!("endpoints.lb_endpoints[{i}].endpoint.address.socket_address.address"),
                                format!("'{host}' is not an IP address (EDS endpoints are not resolved)"),
                            ))
                        }
                    };
                    Ok(host_of(e, addr, None))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Assignment {
                hosts,
                overprovisioning_factor: la.overprovisioning_factor,
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any<M: Message>(ty: ResourceType, m: &M) -> Any {
        Any {
            type_url: ty.type_url().into(),
            value: m.encode_to_vec(),
        }
    }

    #[test]
    fn errors_name_the_resource_and_the_field() {
        let c = cluster_pb::Cluster {
            name: "web".into(),
            connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: -1,
                nanos: 0,
            }),
            ..Default::default()
        };
        let e = cluster(&any(ResourceType::Cluster, &c), 0).expect_err("invalid");
        assert_eq!(e.name, "web");
        assert!(
            e.to_string().starts_with("Cluster 'web': connect_timeout:"),
            "{e}"
        );

        let garbage = Any {
            type_url: ResourceType::Listener.type_url().into(),
            value: vec![0xff, 0xff, 0xff],
        };
        let e = listener(&garbage, 3).expect_err("garbage");
        assert!(
            e.to_string().starts_with("Listener '#3': cannot decode"),
            "{e}"
        );

        let wrong = any(ResourceType::Cluster, &c);
        let e = listener(&wrong, 0).expect_err("mistyped");
        assert!(e.to_string().contains("type_url"), "{e}");
    }

    #[test]
    fn route_configurations_convert_host_by_host_with_errors_naming_the_host() {
        let vh = |name: &str, domain: Option<&str>| route_pb::VirtualHost {
            name: name.into(),
            domains: domain.map(String::from).into_iter().collect(),
            ..Default::default()
        };
        let mut rc = route_pb::RouteConfiguration {
            name: "r".into(),
            virtual_hosts: vec![vh("a", Some("a.example")), vh("b", Some("B.example"))],
            ignore_port_in_host_matching: true,
            ..Default::default()
        };
        let ok = route(&any(ResourceType::RouteConfiguration, &rc), 0).expect("valid");
        assert_eq!(ok.name, "r");
        assert!(ok.value.ignore_port_in_host_matching);
        let hosts: Vec<_> = ok
            .value
            .virtual_hosts
            .iter()
            .map(|v| (v.name.as_str(), v.domains.clone()))
            .collect();
        assert_eq!(
            hosts,
            vec![
                ("a", vec!["a.example".to_string()]),
                ("b", vec!["b.example".to_string()])
            ]
        );

        rc.virtual_hosts.push(vh("c", None));
        let e = route(&any(ResourceType::RouteConfiguration, &rc), 0).expect_err("no domains");
        assert_eq!(
            e.to_string(),
            "RouteConfiguration 'r': virtual_hosts[2].domains: at least one domain is required"
        );

        // A virtual host whose own encoding is broken (field 2, 3 bytes of garbage).
        let mut bytes = route_pb::RouteConfiguration {
            name: "r".into(),
            ..Default::default()
        }
        .encode_to_vec();
        bytes.extend_from_slice(&[0x12, 0x03, 0xff, 0xff, 0xff]);
        let broken = Any {
            type_url: ResourceType::RouteConfiguration.type_url().into(),
            value: bytes,
        };
        let e = route(&broken, 0).expect_err("broken host");
        assert!(
            e.to_string()
                .starts_with("RouteConfiguration 'r': virtual_hosts[0]: cannot decode"),
            "{e}"
        );
    }

    #[test]
    fn endpoints_are_addresses_with_their_reported_health() {
        use envoy_types::pb::envoy::config::core::v3 as core;
        let ep = |ip: &str, health: core::HealthStatus| endpoint_pb::LbEndpoint {
            host_identifier: Some(endpoint_pb::lb_endpoint::HostIdentifier::Endpoint(
                endpoint_pb::Endpoint {
                    address: Some(core::Address {
                        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                            address: ip.into(),
                            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(
                                80,
                            )),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                },
            )),
            health_status: health as i32,
            ..Default::default()
        };
        let cla = endpoint_pb::ClusterLoadAssignment {
            cluster_name: "web".into(),
            endpoints: vec![endpoint_pb::LocalityLbEndpoints {
                lb_endpoints: vec![
                    ep("10.0.0.1", core::HealthStatus::Healthy),
                    ep("10.0.0.2", core::HealthStatus::Unhealthy),
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let d = endpoints(&any(ResourceType::ClusterLoadAssignment, &cla), 0).expect("valid");
        // Unhealthy hosts stay in the set (they count toward priority health and panic)
        // but are marked so.
        let health: Vec<_> = d.value.hosts.iter().map(|h| h.eds_health).collect();
        assert_eq!(
            health,
            vec![
                crate::config::cluster::EdsHealth::Healthy,
                crate::config::cluster::EdsHealth::Unhealthy
            ]
        );
        assert_eq!(d.value.overprovisioning_factor, 140);
        let mut named = cla.clone();
        named.endpoints[0].lb_endpoints = vec![ep("web.local", core::HealthStatus::Healthy)];
        let e = endpoints(&any(ResourceType::ClusterLoadAssignment, &named), 0)
            .expect_err("names are refused");
        assert!(e.to_string().contains("is not an IP address"), "{e}");
    }
}

//! Just enough of the protobuf wire format to take one repeated field out of an encoded
//! message, so that a large resource (a route configuration with thousands of virtual
//! hosts) is decoded and converted one element at a time instead of all at once.

/// Why an encoding cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    #[error("a field runs past the end of the message")]
    Truncated,
    #[error("unsupported wire type {0}")]
    WireType(u64),
    #[error(transparent)]
    Decode(#[from] prost::DecodeError),
}

/// The payloads of the length-delimited field `tag`, in order, and the encoding of the
/// message without that field (every other field, byte for byte).
pub fn split_field(bytes: &[u8], tag: u64) -> Result<(Vec<&[u8]>, Vec<u8>), Malformed> {
    let mut taken = Vec::new();
    let mut rest = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        let key = varint(bytes, &mut at)?;
        let end = match key & 7 {
            // varint
            0 => {
                varint(bytes, &mut at)?;
                at
            }
            // 64-bit
            1 => at.checked_add(8).ok_or_else(truncated)?,
            // length-delimited
            2 => {
                let len = usize::try_from(varint(bytes, &mut at)?).map_err(|_| truncated())?;
                at.checked_add(len).ok_or_else(truncated)?
            }
            // 32-bit
            5 => at.checked_add(4).ok_or_else(truncated)?,
            w => return Err(Malformed::WireType(w)),
        };
        if end > bytes.len() {
            return Err(truncated());
        }
        if key >> 3 == tag && key & 7 == 2 {
            taken.push(&bytes[at..end]);
        } else {
            rest.extend_from_slice(&bytes[start..end]);
        }
        at = end;
    }
    Ok((taken, rest))
}

fn truncated() -> Malformed {
    Malformed::Truncated
}

/// Reads the varint at `*at` and moves past it.
fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, Malformed> {
    let mut buf = bytes.get(*at..).ok_or_else(truncated)?;
    let before = buf.len();
    // A varint is a length delimiter's encoding; prost decodes it for us.
    let v = prost::decode_length_delimiter(&mut buf)?;
    *at += before - buf.len();
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;
    use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
    use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
    use prost::Message;

    #[test]
    fn takes_the_field_out_and_keeps_everything_else() {
        let vh = |n: &str| VirtualHost {
            name: n.into(),
            domains: vec![n.into()],
            ..Default::default()
        };
        let rc = RouteConfiguration {
            name: "r".into(),
            virtual_hosts: vec![vh("a"), vh("b")],
            validate_clusters: Some(BoolValue { value: true }),
            max_direct_response_body_size_bytes: Some(UInt32Value { value: 7 }),
            request_headers_to_remove: vec!["x".into()],
            request_headers_to_add: vec![HeaderValueOption::default()],
            most_specific_header_mutations_wins: true,
            ..Default::default()
        };
        let bytes = rc.encode_to_vec();
        let (hosts, rest) = split_field(&bytes, 2).expect("valid");
        let hosts: Vec<VirtualHost> = hosts
            .iter()
            .map(|b| VirtualHost::decode(*b).expect("host"))
            .collect();
        assert_eq!(hosts, rc.virtual_hosts);
        let rest = RouteConfiguration::decode(rest.as_slice()).expect("rest");
        assert_eq!(
            rest,
            RouteConfiguration {
                virtual_hosts: Vec::new(),
                ..rc
            }
        );
    }

    #[test]
    fn truncated_and_unknown_encodings_are_errors() {
        // A length beyond the end, a varint cut short, a group, a fixed64 cut short.
        for bad in [
            &[0x12, 0x05, 0x01][..],
            &[0x08, 0x80],
            &[0x0b],
            &[0x09, 0x01],
        ] {
            assert!(split_field(bad, 2).is_err(), "{bad:?}");
        }
        assert_eq!(
            split_field(&[], 2).expect("empty"),
            (Vec::new(), Vec::new())
        );
    }
}

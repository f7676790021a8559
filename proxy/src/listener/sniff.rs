//! Protocol sniffing on the first bytes of a connection (peeked, never consumed): the TLS
//! ClientHello (SNI and ALPN, read with rustls' acceptor) and the HTTP/1.x request line
//! or the HTTP/2 connection preface (read with httparse).

/// What the bytes so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<T> {
    /// Undecided: wait for more bytes.
    NeedMore,
    /// Not this protocol.
    No,
    Yes(T),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    pub server_name: Option<String>,
    pub alpn: Vec<String>,
}

/// The TLS record type of a handshake.
const HANDSHAKE: u8 = 0x16;

/// A TLS ClientHello, as the `tls_inspector` reads it.
pub fn tls(buf: &[u8]) -> Verdict<ClientHello> {
    match buf.first() {
        None => return Verdict::NeedMore,
        Some(&b) if b != HANDSHAKE => return Verdict::No,
        Some(_) => {}
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rd = buf;
    while !rd.is_empty() {
        if acceptor.read_tls(&mut rd).is_err() {
            return Verdict::No;
        }
    }
    match acceptor.accept() {
        Ok(None) => Verdict::NeedMore,
        Ok(Some(accepted)) => {
            let hello = accepted.client_hello();
            Verdict::Yes(ClientHello {
                server_name: hello.server_name().map(str::to_ascii_lowercase),
                alpn: hello
                    .alpn()
                    .map(|protos| {
                        protos
                            .map(|p| String::from_utf8_lossy(p).into_owned())
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        }
        // A whole ClientHello rustls will not negotiate with (say, without
        // signature_algorithms) is still TLS; its SNI and ALPN stay unknown.
        Err((rustls::Error::PeerIncompatible(_), _)) => Verdict::Yes(ClientHello::default()),
        Err(_) => Verdict::No,
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// HTTP/1.x or h2c, as the `http_inspector` reads it: the application protocol
/// (`http/1.1`, `http/1.0`, `h2c`).
pub fn http(buf: &[u8]) -> Verdict<&'static str> {
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Verdict::Yes("h2c")
        } else {
            Verdict::NeedMore
        };
    }
    let mut headers = [httparse::EMPTY_HEADER; 0];
    let mut req = httparse::Request::new(&mut headers);
    // The request line is all that matters: past it, httparse runs out of header slots
    // (TooManyHeaders) or finds the blank line; either way `version` is known.
    match req.parse(buf) {
        Ok(_) | Err(httparse::Error::TooManyHeaders) => match req.version {
            Some(1) => Verdict::Yes("http/1.1"),
            Some(0) => Verdict::Yes("http/1.0"),
            Some(_) => Verdict::No,
            None => Verdict::NeedMore,
        },
        Err(_) => Verdict::No,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello with SNI `api.example.com` and ALPN h2, http/1.1, built field by
    /// field: record header, handshake header, client_version, random, session id,
    /// cipher suites, compression, extensions (server_name, ALPN, supported_versions).
    fn client_hello(with_sigalgs: bool) -> Vec<u8> {
        let sni = b"api.example.com";
        let mut ext = Vec::new();
        // server_name
        let mut sn = Vec::new();
        sn.push(0u8);
        sn.extend((sni.len() as u16).to_be_bytes());
        sn.extend(sni);
        let mut sn_list = (sn.len() as u16).to_be_bytes().to_vec();
        sn_list.extend(sn);
        ext.extend(0u16.to_be_bytes());
        ext.extend((sn_list.len() as u16).to_be_bytes());
        ext.extend(sn_list);
        // ALPN
        let mut protos = Vec::new();
        for p in [&b"h2"[..], b"http/1.1"] {
            protos.push(p.len() as u8);
            protos.extend(p);
        }
        let mut alpn = (protos.len() as u16).to_be_bytes().to_vec();
        alpn.extend(protos);
        ext.extend(16u16.to_be_bytes());
        ext.extend((alpn.len() as u16).to_be_bytes());
        ext.extend(alpn);
        // supported_versions: TLS 1.3, 1.2
        ext.extend(43u16.to_be_bytes());
        ext.extend(5u16.to_be_bytes());
        ext.extend([4u8, 3, 4, 3, 3]);
        if with_sigalgs {
            // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256
            ext.extend(13u16.to_be_bytes());
            ext.extend(6u16.to_be_bytes());
            ext.extend([0u8, 4, 4, 3, 8, 4]);
        }
        let mut body = vec![3u8, 3];
        body.extend([7u8; 32]);
        body.push(0);
        body.extend(4u16.to_be_bytes());
        body.extend([0x13, 0x01, 0xc0, 0x2f]);
        body.extend([1u8, 0]);
        body.extend((ext.len() as u16).to_be_bytes());
        body.extend(ext);
        let mut hs = vec![1u8];
        hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        let mut rec = vec![HANDSHAKE, 3, 1];
        rec.extend((hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    #[test]
    fn tls_client_hello_gives_sni_and_alpn_once_complete() {
        let hello = client_hello(true);
        for cut in [1, 5, 20, hello.len() - 1] {
            assert_eq!(tls(&hello[..cut]), Verdict::NeedMore, "after {cut} bytes");
        }
        assert_eq!(
            tls(&hello),
            Verdict::Yes(ClientHello {
                server_name: Some("api.example.com".into()),
                alpn: vec!["h2".into(), "http/1.1".into()],
            })
        );
        assert_eq!(tls(b"GET / HTTP/1.1\r\n"), Verdict::No);
        assert_eq!(
            tls(&client_hello(false)),
            Verdict::Yes(ClientHello::default()),
            "a hello rustls would refuse is still TLS"
        );
        assert_eq!(tls(&[HANDSHAKE, 9, 9, 0, 4, 1, 2, 3, 4]), Verdict::No);
        assert_eq!(tls(b""), Verdict::NeedMore);
    }

    #[test]
    fn http_request_lines_and_the_h2_preface() {
        assert_eq!(
            http(b"GET /x HTTP/1.1\r\nHost: a\r\n"),
            Verdict::Yes("http/1.1")
        );
        assert_eq!(http(b"POST / HTTP/1.0\r\n\r\n"), Verdict::Yes("http/1.0"));
        assert_eq!(http(b"GET /x HT"), Verdict::NeedMore);
        assert_eq!(http(b"G"), Verdict::NeedMore);
        assert_eq!(
            http(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Verdict::Yes("h2c")
        );
        assert_eq!(http(b"PRI * HTTP/2"), Verdict::NeedMore);
        assert_eq!(http(b"\x16\x03\x01"), Verdict::No);
        assert_eq!(http(b"SSH-2.0-OpenSSH_9.6\r\n"), Verdict::No);
        assert_eq!(http(b"GET / FOO/1.1\r\n"), Verdict::No);
    }
}

//! A TLS 1.3 ClientHello built field by field, for tests of SNI-based routing where the
//! bytes only need to be a real hello (no handshake completes).

fn u16be(n: usize) -> [u8; 2] {
    u16::try_from(n).expect("fits in u16").to_be_bytes()
}

/// A ClientHello record offering `sni` and the ALPN protocols `alpn`.
pub fn client_hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
    let mut ext = Vec::new();
    let mut name = vec![0u8];
    name.extend(u16be(sni.len()));
    name.extend(sni.as_bytes());
    ext.extend(0u16.to_be_bytes());
    ext.extend(u16be(name.len() + 2));
    ext.extend(u16be(name.len()));
    ext.extend(name);
    if !alpn.is_empty() {
        let mut protos = Vec::new();
        for p in alpn {
            protos.push(u8::try_from(p.len()).expect("short protocol name"));
            protos.extend(p.as_bytes());
        }
        ext.extend(16u16.to_be_bytes());
        ext.extend(u16be(protos.len() + 2));
        ext.extend(u16be(protos.len()));
        ext.extend(protos);
    }
    // supported_versions (TLS 1.3, 1.2) and signature_algorithms.
    ext.extend([0, 43, 0, 5, 4, 3, 4, 3, 3]);
    ext.extend([0, 13, 0, 6, 0, 4, 4, 3, 8, 4]);
    let mut body = vec![3u8, 3];
    body.extend([7u8; 32]);
    body.push(0);
    body.extend([0, 4, 0x13, 0x01, 0xc0, 0x2f]);
    body.extend([1u8, 0]);
    body.extend(u16be(ext.len()));
    body.extend(ext);
    let len = u32::try_from(body.len()).expect("small").to_be_bytes();
    let mut hs = vec![1u8, len[1], len[2], len[3]];
    hs.extend(body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend(u16be(hs.len()));
    rec.extend(hs);
    rec
}

use super::*;

const LIMITS: Limits = Limits {
    bytes: 1024,
    count: 10,
};

fn parse_all(raw: &str) -> (Result<Option<Head>, Refused>, BytesMut) {
    let mut buf = BytesMut::from(raw);
    let r = parse(&mut buf, LIMITS, &mut Vec::new());
    (r, buf)
}

fn parsed(raw: &str) -> Head {
    match parse_all(raw).0 {
        Ok(Some(h)) => h,
        Ok(None) => panic!("incomplete: {raw:?}"),
        Err(e) => panic!("{e:?}: {raw:?}"),
    }
}

fn refused(raw: &str) -> Refused {
    match parse_all(raw).0 {
        Err(e) => e,
        Ok(_) => panic!("accepted: {raw:?}"),
    }
}

#[test]
fn a_get_is_parsed_into_parts_and_the_next_request_stays_buffered() {
    let (h, rest) =
        parse_all("GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-Two: 1\r\nx-two: 2\r\n\r\nGET /next");
    let h = h.expect("valid").expect("complete");
    assert_eq!(*h.req.method(), Method::GET);
    assert_eq!(*h.req.uri(), "/a?b=c");
    assert_eq!(h.req.version(), Version::HTTP_11);
    assert_eq!(h.req.headers()["host"], "x");
    assert_eq!(h.req.headers().get_all("x-two").iter().count(), 2);
    assert_eq!(h.body, Decoder::Done);
    assert!(!h.close && !h.expect_continue && !h.upgrade);
    assert_eq!(&rest[..], b"GET /next");
}

#[test]
fn an_incomplete_head_waits_and_a_large_one_is_refused() {
    assert!(matches!(
        parse_all("GET / HTTP/1.1\r\nhost: x\r\n").0,
        Ok(None)
    ));
    let big = format!("GET / HTTP/1.1\r\nx: {}\r\n", "a".repeat(2000));
    assert_eq!(refused(&big), Refused::TooLarge);
    let many: String = (0..11).map(|i| format!("x-{i}: v\r\n")).collect();
    assert_eq!(
        refused(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
        Refused::TooLarge
    );
}

#[test]
fn bodies_are_framed_by_chunks_or_one_length() {
    let h = parsed("POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\n");
    assert_eq!(h.body, Decoder::Length(5));
    let h = parsed("POST / HTTP/1.1\r\ncontent-length: 5, 5\r\n\r\n");
    assert_eq!(h.body, Decoder::Length(5));
    let h = parsed("POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    assert_eq!(h.body, Decoder::Done);
    let h = parsed("POST / HTTP/1.1\r\ntransfer-encoding: Chunked \r\n\r\n");
    assert_eq!(h.body, Decoder::Chunked(Chunk::Size));
    // Like CRLF, as in Envoy.
    let h = parsed("POST / HTTP/1.1\ncontent-length: 2\n\n");
    assert_eq!(h.body, Decoder::Length(2));
}

#[test]
fn codings_other_than_chunked_alone_are_not_implemented() {
    for raw in [
        "POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
        "POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
        "POST / HTTP/1.1\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
        "POST / HTTP/1.1\r\ntransfer-encoding: identity\r\n\r\n",
        "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
    ] {
        assert_eq!(refused(raw), Refused::Coding, "{raw:?}");
    }
}

#[test]
fn ambiguous_framing_is_refused() {
    for raw in [
        "POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        "POST / HTTP/1.1\r\ncontent-length: 1, 2\r\n\r\n",
        "POST / HTTP/1.1\r\ncontent-length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
        "POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nbad header\r\n\r\n",
        "GET  / HTTP/1.1\r\n\r\n",
    ] {
        assert!(
            matches!(refused(raw), Refused::Malformed(_)),
            "{raw:?} was not refused"
        );
    }
}

#[test]
fn connection_expect_and_upgrade_are_noted() {
    assert!(parsed("GET / HTTP/1.1\r\nconnection: keep-alive, Close\r\n\r\n").close);
    assert!(parsed("GET / HTTP/1.0\r\n\r\n").close);
    assert!(!parsed("GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").close);
    assert!(parsed("POST / HTTP/1.1\r\nexpect: 100-Continue\r\n\r\n").expect_continue);
    assert!(!parsed("POST / HTTP/1.0\r\nexpect: 100-continue\r\n\r\n").expect_continue);
    assert!(parsed("GET / HTTP/1.1\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n").upgrade);
    let h = parsed("CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n");
    assert!(h.upgrade);
    assert_eq!(
        h.req.uri().authority().map(|a| a.as_str()),
        Some("example.com:443")
    );
}

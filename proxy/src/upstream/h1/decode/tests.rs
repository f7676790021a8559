use super::*;
use crate::h1::BodyError;

fn parse(raw: &str) -> Result<Option<Head>, Error> {
    let mut buf = BytesMut::from(raw);
    head(&mut buf, false, &mut Vec::new())
}

fn parsed(raw: &str) -> Head {
    match parse(raw) {
        Ok(Some(h)) => h,
        Ok(None) => panic!("incomplete head: {raw:?}"),
        Err(e) => panic!("{e}: {raw:?}"),
    }
}

#[test]
fn a_head_is_parsed_into_parts() {
    let h = parsed("HTTP/1.1 201 Created\r\nContent-Length: 3\r\nX-A: 1\r\nx-a: 2\r\n\r\n");
    assert_eq!(h.parts.status, StatusCode::CREATED);
    assert_eq!(h.parts.version, Version::HTTP_11);
    let all: Vec<_> = h.parts.headers.get_all("x-a").iter().collect();
    let empty = parsed("HTTP/1.1 200 OK\r\nx-empty:\r\nx-blank:   \r\ncontent-length: 0\r\n\r\n");
    assert_eq!(empty.parts.headers["x-empty"], "");
    assert_eq!(empty.parts.headers["x-blank"], "");
    assert_eq!(all, ["1", "2"]);
    assert_eq!(h.body, Decoder::Length(3));
    assert!(h.keep_alive);
}

#[test]
fn an_incomplete_head_waits_and_a_huge_one_fails() {
    assert!(matches!(parse("HTTP/1.1 200 OK\r\nA: b\r\n"), Ok(None)));
    let huge = format!("HTTP/1.1 200 OK\r\nA: {}", "b".repeat(MAX_HEAD + 1));
    assert!(matches!(parse(&huge), Err(Error::HeadTooLarge)));
    let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
    let many = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
    assert!(matches!(parse(&many), Err(Error::HeadTooLarge)));
    assert!(matches!(
        parse("HTTP/1.1 2x0 OK\r\n\r\n"),
        Err(Error::Head(_))
    ));
}

#[test]
fn a_bare_lf_is_refused() {
    let bare_lf = "HTTP/1.1 200 OK\ncontent-length: 0\n\n";
    assert!(matches!(parse(bare_lf), Err(Error::Head("bare LF"))));
    let mut buf = BytesMut::from("0\r\nx-t: 1\n\r\n");
    let mut d = Decoder::Chunked(Chunk::Size);
    assert!(
        matches!(d.decode(&mut buf), Err(BodyError::Chunk)),
        "in trailers"
    );
}

#[test]
fn interim_responses_are_skipped_but_not_101() {
    let h = parsed("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    assert_eq!(h.parts.status, StatusCode::OK);
    assert_eq!(h.body, Decoder::Done);
    let h = parsed("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n");
    assert_eq!(h.parts.status, StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(h.body, Decoder::Done);
    assert!(!h.keep_alive);
}

#[test]
fn framing_follows_rfc_9112() {
    let h = parsed("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n");
    assert_eq!(h.body, Decoder::Chunked(Chunk::Size));
    assert!(h.keep_alive);
    // Chunked wins over a content-length, and the connection is not reused.
    let h = parsed("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n");
    assert_eq!(h.body, Decoder::Chunked(Chunk::Size));
    assert!(!h.keep_alive);
    let h = parsed("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n");
    assert_eq!(h.body, Decoder::Eof);
    let h = parsed("HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(h.body, Decoder::Eof);
    assert!(!h.keep_alive);
    let h = parsed("HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n");
    assert_eq!(h.body, Decoder::Done);
    let h = parsed("HTTP/1.1 200 OK\r\ncontent-length: 4, 4\r\n\r\n");
    assert_eq!(h.body, Decoder::Length(4));
    for bad in ["4, 5", "-1", "+4", "0x10", "", "99999999999999999999"] {
        let raw = format!("HTTP/1.1 200 OK\r\ncontent-length: {bad}\r\n\r\n");
        assert!(matches!(parse(&raw), Err(Error::Head(_))), "{bad:?}");
    }
    let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n");
    let h = head(&mut buf, true, &mut Vec::new())
        .expect("valid")
        .expect("complete");
    assert_eq!(h.body, Decoder::Done, "a response to HEAD has no body");
}

#[test]
fn keep_alive_follows_version_and_connection() {
    assert!(
        !parsed("HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n").keep_alive
    );
    assert!(!parsed("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n").keep_alive);
    let h = parsed("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n");
    assert!(h.keep_alive);
    assert_eq!(h.parts.version, Version::HTTP_10);
}

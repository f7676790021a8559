use super::*;

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

/// Everything the decoder yields from `wire` fed in pieces of `step` bytes.
fn body(mut d: Decoder, wire: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), Error> {
    let mut buf = BytesMut::new();
    let (mut data, mut trailers) = (Vec::new(), None);
    for piece in wire.chunks(step) {
        buf.extend_from_slice(piece);
        while let Some(frame) = d.decode(&mut buf)? {
            match frame.into_data() {
                Ok(b) => data.extend_from_slice(&b),
                Err(f) => trailers = f.into_trailers().ok(),
            }
        }
    }
    assert!(d.is_done(), "not done: {d:?}");
    assert!(buf.is_empty(), "left over: {buf:?}");
    Ok((data, trailers))
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
        matches!(d.decode(&mut buf), Err(Error::Chunk)),
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

#[test]
fn a_length_body_is_read_in_any_pieces() {
    for step in [1, 2, 5, 100] {
        let (data, trailers) = body(Decoder::Length(10), b"0123456789", step).expect("valid");
        assert_eq!(data, b"0123456789");
        assert!(trailers.is_none());
    }
}

#[test]
fn a_chunked_body_with_extensions_and_trailers() {
    let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\ngrpc-status: 0\r\nx-t: a\r\n\r\n";
    for step in [1, 3, 7, wire.len()] {
        let (data, trailers) = body(Decoder::Chunked(Chunk::Size), wire, step).expect("valid");
        assert_eq!(data, b"hello world");
        let t = trailers.expect("trailers");
        assert_eq!(t["grpc-status"], "0");
        assert_eq!(t["x-t"], "a");
    }
    let (data, trailers) =
        body(Decoder::Chunked(Chunk::Size), b"3\r\nabc\r\n0\r\n\r\n", 100).expect("valid");
    assert_eq!(data, b"abc");
    assert!(trailers.is_none());
}

#[test]
fn the_end_of_a_chunked_body_shows_with_its_last_data() {
    let mut d = Decoder::Chunked(Chunk::Size);
    let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\n\r\n"[..]);
    let frame = d.decode(&mut buf).expect("valid").expect("data");
    assert_eq!(frame.into_data().expect("data"), "abc");
    assert!(d.is_done());
    assert!(buf.is_empty());
}

#[test]
fn malformed_chunks_fail() {
    for wire in [
        &b"zz\r\n"[..],
        b"3\r\nabcX\r\n",
        b"3\r\nabc\r\n0\r\nbad header\r\n\r\n",
        // Stricter than httparse, as llhttp and Envoy are.
        b"2 \r\naa\r\n0\r\n\r\n",
        b"2;\r\naa\r\n0\r\n\r\n",
        b"2\naa\r\n0\r\n\r\n",
    ] {
        assert!(
            matches!(
                body(Decoder::Chunked(Chunk::Size), wire, 100),
                Err(Error::Chunk)
            ),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
    let (data, _) = body(
        Decoder::Chunked(Chunk::Size),
        b"2;a=b\r\naa\r\n0\r\n\r\n",
        1,
    )
    .expect("an extension");
    assert_eq!(data, b"aa");
    let long = format!("1;{}", "e".repeat(MAX_CHUNK_LINE + 1));
    let mut buf = BytesMut::from(long.as_str());
    let mut d = Decoder::Chunked(Chunk::Size);
    assert!(matches!(d.decode(&mut buf), Err(Error::Chunk)));
}

use super::*;

/// Everything the decoder yields from `wire` fed in pieces of `step` bytes.
fn body(
    mut d: Decoder,
    wire: &[u8],
    step: usize,
) -> Result<(Vec<u8>, Option<HeaderMap>), BodyError> {
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
                Err(BodyError::Chunk)
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
    assert!(matches!(d.decode(&mut buf), Err(BodyError::Chunk)));
}

use super::*;
use crate::http::body::{empty, full};

const ASKED: Asked = Asked {
    method_head: false,
    version: Version::HTTP_11,
    keep_alive: true,
};

fn encode(resp: http::Response<ProxyBody>, asked: Asked) -> (String, Encoded) {
    let (parts, body) = resp.into_parts();
    let mut out = Vec::new();
    let e = head(&parts, &body, asked, &mut out);
    (String::from_utf8(out).expect("ascii head"), e)
}

fn resp(status: u16, headers: &[(&str, &str)], body: ProxyBody) -> http::Response<ProxyBody> {
    let mut b = http::Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body).expect("response")
}

/// A body of unknown length.
fn streaming() -> ProxyBody {
    let frames = futures_util::stream::pending::<
        Result<hyper::body::Frame<bytes::Bytes>, crate::upstream::pool::BoxError>,
    >();
    ProxyBody::boxed(http_body_util::StreamBody::new(frames))
}

#[test]
fn a_declared_length_frames_the_body_and_a_date_is_added() {
    let (h, e) = encode(resp(200, &[("content-length", "5")], full("hello")), ASKED);
    assert!(
        h.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: "),
        "{h}"
    );
    assert!(h.ends_with(" GMT\r\n\r\n"), "{h}");
    assert_eq!(
        e,
        Encoded {
            framing: Framing::Length(5),
            keep_alive: true
        }
    );
    let (h, _) = encode(resp(200, &[("date", "then")], empty()), ASKED);
    assert_eq!(
        h,
        "HTTP/1.1 200 OK\r\ndate: then\r\ncontent-length: 0\r\n\r\n"
    );
}

#[test]
fn the_body_s_own_length_or_chunks_otherwise() {
    let (h, e) = encode(resp(404, &[("date", "d")], full("hello")), ASKED);
    assert_eq!(
        h,
        "HTTP/1.1 404 Not Found\r\ndate: d\r\ncontent-length: 5\r\n\r\n"
    );
    assert_eq!(e.framing, Framing::Length(5));
    let (h, e) = encode(resp(200, &[("date", "d")], streaming()), ASKED);
    assert_eq!(
        h,
        "HTTP/1.1 200 OK\r\ndate: d\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    assert_eq!(e.framing, Framing::Chunked);
    // An HTTP/1.0 client gets the body up to the connection's end.
    let old = Asked {
        version: Version::HTTP_10,
        ..ASKED
    };
    let (h, e) = encode(resp(200, &[("date", "d")], streaming()), old);
    assert_eq!(h, "HTTP/1.1 200 OK\r\ndate: d\r\nconnection: close\r\n\r\n");
    assert_eq!(
        e,
        Encoded {
            framing: Framing::Close,
            keep_alive: false
        }
    );
}

#[test]
fn bodiless_responses_keep_their_headers() {
    let head_req = Asked {
        method_head: true,
        ..ASKED
    };
    let (h, e) = encode(
        resp(200, &[("date", "d"), ("content-length", "9")], empty()),
        head_req,
    );
    assert_eq!(h, "HTTP/1.1 200 OK\r\ndate: d\r\ncontent-length: 9\r\n\r\n");
    assert_eq!(e.framing, Framing::None);
    let (h, e) = encode(resp(204, &[("date", "d")], empty()), ASKED);
    assert_eq!(h, "HTTP/1.1 204 No Content\r\ndate: d\r\n\r\n");
    assert_eq!(e.framing, Framing::None);
}

#[test]
fn closing_is_said_once() {
    let closing = Asked {
        keep_alive: false,
        ..ASKED
    };
    let (h, e) = encode(resp(200, &[("date", "d")], empty()), closing);
    assert_eq!(
        h,
        "HTTP/1.1 200 OK\r\ndate: d\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    assert!(!e.keep_alive);
    let (h, e) = encode(
        resp(200, &[("date", "d"), ("connection", "close")], empty()),
        ASKED,
    );
    assert_eq!(
        h,
        "HTTP/1.1 200 OK\r\ndate: d\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    );
    assert!(!e.keep_alive);
}

//! Encoding a request head, straight from `Parts`, and choosing its body's framing.

use http::header::HeaderMap;
use http::{Method, Uri};

use crate::h1::framing::{self, fields, Framing};

/// Appends the request head to `out` and says how its body is framed. A body with
/// neither a length nor chunked coding is sent chunked (`transfer-encoding` added).
pub(super) fn head(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body_empty: bool,
    out: &mut Vec<u8>,
) -> Framing {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let declared = fields(headers, out);
    let framing = framing::framing(&declared, body_empty);
    if framing == Framing::Chunked && declared.is_empty() {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    framing
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn encode(req: Request<()>, body_empty: bool) -> (String, Framing) {
        let mut out = Vec::new();
        let framing = head(req.method(), req.uri(), req.headers(), body_empty, &mut out);
        (String::from_utf8(out).expect("ascii head"), framing)
    }

    #[test]
    fn a_get_has_no_body() {
        let req = Request::get("/a?b=c")
            .header("host", "example")
            .header("x-two", "1")
            .header("x-two", "2")
            .body(())
            .expect("request");
        let (head, framing) = encode(req, true);
        assert_eq!(
            head,
            "GET /a?b=c HTTP/1.1\r\nhost: example\r\nx-two: 1\r\nx-two: 2\r\n\r\n"
        );
        assert_eq!(framing, Framing::None);
    }

    #[test]
    fn a_body_without_length_goes_chunked() {
        let req = Request::post("/").body(()).expect("request");
        let (head, framing) = encode(req, false);
        assert_eq!(
            head,
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(framing, Framing::Chunked);
        let req = Request::post("/")
            .header("content-length", "5")
            .body(())
            .expect("request");
        assert_eq!(encode(req, false).1, Framing::Length(5));
        let req = Request::post("/")
            .header("transfer-encoding", "gzip, chunked")
            .body(())
            .expect("request");
        let (head, framing) = encode(req, false);
        assert_eq!(framing, Framing::Chunked);
        assert_eq!(head.matches("transfer-encoding").count(), 1);
    }
}

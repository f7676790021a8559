//! A parsed head's header fields as a `HeaderMap` whose values share the head's bytes,
//! with the fields that frame a message noted on the way.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Where a header's name and value lie in the head: `(name start, name end, value
/// start, value end)`.
pub type Span = (usize, usize, usize, usize);

/// Notes where each of `headers` (parsed from `head`) lies in it, into `spans` (scratch
/// space a connection keeps, so nothing is allocated per message).
pub fn record(headers: &[httparse::Header<'_>], head: &[u8], spans: &mut Vec<Span>) {
    // Offsets are checked against the head when the map is built rather than trusted.
    let base = head.as_ptr() as usize;
    let at = |s: &[u8]| (s.as_ptr() as usize).wrapping_sub(base);
    spans.clear();
    spans.extend(headers.iter().map(|h| {
        let (name, value) = (at(h.name.as_bytes()), at(h.value));
        let name_end = name.wrapping_add(h.name.len());
        (name, name_end, value, value.wrapping_add(h.value.len()))
    }));
}

/// Which of the headers that frame a message (or change how it is handled) it has,
/// noted as its map is built, so that the usual message needs no lookups.
#[derive(Debug, Default, Clone, Copy)]
pub struct Present {
    pub coding: bool,
    pub length: bool,
    pub connection: bool,
    pub expect: bool,
    pub upgrade: bool,
    pub te: bool,
}

impl Present {
    fn note(&mut self, name: &HeaderName) {
        if *name == header::TRANSFER_ENCODING {
            self.coding = true;
        } else if *name == header::CONTENT_LENGTH {
            self.length = true;
        } else if *name == header::CONNECTION {
            self.connection = true;
        } else if *name == header::EXPECT {
            self.expect = true;
        } else if *name == header::UPGRADE {
            self.upgrade = true;
        } else if *name == header::TE {
            self.te = true;
        }
    }
}

/// The map of the fields at `spans` in `head`, with room for `room` more.
pub fn map(
    head: &Bytes,
    spans: &[Span],
    room: usize,
) -> Result<(HeaderMap, Present), &'static str> {
    let mut map = super::maps::take(spans.len() + room);
    let mut present = Present::default();
    for &(ns, ne, vs, ve) in spans {
        let name = head.get(ns..ne).ok_or("header name")?;
        let name = HeaderName::from_bytes(name).map_err(|_| "header name")?;
        present.note(&name);
        let value = match head.get(vs..ve) {
            Some([]) | None if vs == ve => HeaderValue::from_static(""),
            Some(_) => {
                HeaderValue::from_maybe_shared(head.slice(vs..ve)).map_err(|_| "header value")?
            }
            None => return Err("header value"),
        };
        map.append(name, value);
    }
    Ok((map, present))
}

//! Header maps a thread keeps for reuse. A map sized for a head and the fields the
//! proxy adds holds over a kilobyte of entries, more than the allocator caches per
//! thread, so making one for every request head and every response head and freeing
//! it again cost several hundred instructions each time. Maps come back once their
//! head is written (the request's by the upstream client, the response's by the
//! server) and go out again for the next head parsed on the same thread.

use std::cell::Cell;

use http::HeaderMap;

/// Maps a thread keeps at most.
const KEPT: usize = 64;
/// A map that grew past this many entries (a head with many fields) is not kept.
const KEPT_AT_MOST: usize = 96;

thread_local! {
    static MAPS: Cell<Vec<HeaderMap>> = const { Cell::new(Vec::new()) };
}

/// An empty map with room for `capacity` fields: one the thread kept, or a new one.
pub fn take(capacity: usize) -> HeaderMap {
    let mut kept = MAPS.take();
    let map = kept.pop();
    MAPS.set(kept);
    match map {
        Some(mut map) => {
            map.reserve(capacity);
            map
        }
        None => HeaderMap::with_capacity(capacity),
    }
}

/// Gives back a map whose head has been written: emptied, and kept if it is not too
/// large and the thread has room.
pub fn put(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > KEPT_AT_MOST {
        return;
    }
    map.clear();
    let mut kept = MAPS.take();
    if kept.len() < KEPT {
        kept.push(map);
    }
    MAPS.set(kept);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_given_back_comes_back_empty_with_its_room() {
        let mut map = take(12);
        let room = map.capacity();
        assert!(room >= 12);
        map.insert("x-one", http::HeaderValue::from_static("1"));
        map.append("x-one", http::HeaderValue::from_static("2"));
        put(map);
        let again = take(4);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), room);
    }

    #[test]
    fn large_and_empty_maps_are_not_kept() {
        MAPS.set(Vec::new());
        put(HeaderMap::new());
        put(HeaderMap::with_capacity(KEPT_AT_MOST * 2));
        assert_eq!(MAPS.take().len(), 0);
    }
}

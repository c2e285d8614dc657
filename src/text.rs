//! Bounded text: cutting strings that come from outside to a byte budget without splitting a
//! character.
//!
//! Peer data (addresses, header values, reply texts) is kept or echoed only up to a limit, and
//! Rust panics when a `String` is cut inside a UTF-8 sequence; this is the one place that knows
//! how to cut safely.

/// Cuts `s` to at most `max` bytes, backing off to the previous character boundary.
pub fn truncate_chars(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
}

/// `s` cut to at most `max` bytes (see [`truncate_chars`]).
pub fn bounded(mut s: String, max: usize) -> String {
    truncate_chars(&mut s, max);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_respects_char_boundaries() {
        assert_eq!(bounded("ééé".into(), 3), "é");
        assert_eq!(bounded("abc".into(), 10), "abc");
        assert_eq!(bounded("abc".into(), 0), "");
    }
}

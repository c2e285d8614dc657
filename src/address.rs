//! Addresses as the MTA hands them to us: envelope addresses with their angle brackets and client
//! addresses in Postfix's and Sendmail's spellings.
//!
//! Every check that reads a sender, a recipient or the client IP goes through these, so the rules
//! for stripping brackets and for `IPv6:`/IPv4-mapped forms live in one place. The text comes from
//! the peer: nothing here may panic on it, whatever bytes it holds.

use std::net::IpAddr;

/// Strips the angle brackets of an envelope address (`<a@b>` → `a@b`, `<>` → ``).
pub fn bare_address(addr: &str) -> &str {
    let a = addr.trim();
    let a = a.strip_prefix('<').unwrap_or(a);
    a.strip_suffix('>').unwrap_or(a)
}

/// Parses the CONNECT address: Sendmail's `IPv6:` prefix and IPv4-mapped IPv6 forms included.
pub fn parse_client_address(text: &str) -> Option<IpAddr> {
    let t = text.trim().trim_start_matches('[').trim_end_matches(']');
    // `get` rather than slicing: the fifth byte may sit inside a multi-byte character.
    let t = match t.get(..5) {
        Some(prefix) if prefix.eq_ignore_ascii_case("ipv6:") => &t[5..],
        _ => t,
    };
    match t.parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => Some(v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6))),
        v4 => Some(v4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_addresses() {
        assert_eq!(bare_address("<a@b.example>"), "a@b.example");
        assert_eq!(bare_address("<>"), "");
        assert_eq!(bare_address(" c@d "), "c@d");
    }

    #[test]
    fn client_address_forms() {
        assert_eq!(parse_client_address("192.0.2.1"), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(parse_client_address("IPv6:2001:db8::1"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(parse_client_address("ipv6:2001:DB8::1"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(parse_client_address("::ffff:192.0.2.7"), Some("192.0.2.7".parse().unwrap()));
        assert_eq!(parse_client_address("IPv6:::ffff:192.0.2.7"), Some("192.0.2.7".parse().unwrap()));
        assert_eq!(parse_client_address("[192.0.2.9]"), Some("192.0.2.9".parse().unwrap()));
        assert_eq!(parse_client_address("garbage"), None);
    }

    #[test]
    fn multi_byte_text_is_not_an_address_and_no_panic() {
        // The fifth byte falls inside a character: slicing there used to panic the session.
        assert_eq!(parse_client_address("ipvé:1.2.3.4"), None);
        assert_eq!(parse_client_address("ééé"), None);
        assert_eq!(parse_client_address("1234é"), None);
    }
}

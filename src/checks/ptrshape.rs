//! What a client's PTR name says about the host behind it: whether the name was built from the
//! address (a dynamic pool's `dsl-203-0-113-60.pool.isp.example`), and whether a host with several
//! PTR names spans unrelated domains.
//!
//! Greylisting keys a forward-confirmed client by its PTR name minus the first label, so that the
//! several outbound hosts of one provider pass as one. For a dynamic pool that would be wrong: one
//! infected home PC passing greylisting would open it for the whole pool. smtpf therefore falls
//! back to the IP address when the name contains the address (flag `ip_in_ptr`) or when the PTR
//! names do not share one domain (flag `ptr_multidomain`). The detection follows the encodings
//! libsnert recognises: the address or two of its adjacent octets in decimal, zero-padded decimal,
//! hexadecimal or octal, in either order, with or without punctuation between them; the last
//! octet at the start of the name or between punctuation; the third octet followed later by the
//! fourth. It errs towards "dynamic", whose only cost is a key per host instead of per domain.

use std::net::Ipv4Addr;

use crate::checks::greykey::domain_suffix;

/// Whether the IPv4 address `ip` can be read in the host name `name` (case and a trailing dot do
/// not matter).
pub fn ip_in_name(name: &str, ip: Ipv4Addr) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let name = name.as_bytes();
    if name.is_empty() {
        return false;
    }
    let o = ip.octets();
    let whole = u32::from(ip);
    let halves = [(whole >> 16) as u16, whole as u16];
    let found = |pattern: String| find_loose(name, pattern.as_bytes(), 0).is_some();
    // Adjacent octet pairs, forwards and backwards.
    let pairs = [(o[0], o[1]), (o[1], o[2]), (o[2], o[3]), (o[3], o[2]), (o[2], o[1]), (o[1], o[0])];

    // The whole address as one number, its 16-bit halves (only when over 255, so that a leading
    // zero octet cannot match any small number), and octet pairs: hexadecimal, zero-padded
    // decimal, octal.
    if found(format!("{whole:08x}")) || found(whole.to_string()) || found(format!("{whole:o}")) {
        return true;
    }
    for half in halves.into_iter().filter(|h| *h > 255) {
        if found(format!("{half:x}")) || found(half.to_string()) || found(format!("{half:o}")) {
            return true;
        }
    }
    for (a, b) in pairs {
        if found(format!("{a:02x}{b:02x}"))
            || found(format!("{a:03}{b:03}"))
            || found(format!("{a:03o}{b:03o}"))
            || found(format!("{a:02x}-{b:02x}"))
            || found(format!("{a}-{b}"))
            || found(format!("{a:03o}-{b:03o}"))
        {
            return true;
        }
    }

    // The name starts with the last octet: two hexadecimal digits, or up to three decimal ones.
    let last = o[3];
    let hex_lead = name.len() >= 2
        && name[0].is_ascii_hexdigit()
        && name[1].is_ascii_hexdigit()
        && name.get(2).is_none_or(|c| !c.is_ascii_hexdigit());
    if hex_lead && u8::from_str_radix(std::str::from_utf8(&name[..2]).unwrap_or(""), 16) == Ok(last) {
        return true;
    }
    let digits = name.iter().take(3).take_while(|c| c.is_ascii_digit()).count();
    if digits > 0 && std::str::from_utf8(&name[..digits]).ok().and_then(|d| d.parse::<u16>().ok()) == Some(u16::from(last)) {
        return true;
    }

    // The last octet between punctuation, zero-padded or not: `host-060.`, `host-60.`.
    if found(format!("-{last:03}.")) || found(format!("-{last}.")) {
        return true;
    }

    // The third octet, and the fourth somewhere after it: `241net98.net.example` for x.y.241.98.
    if let Some(at) = find_loose(name, o[2].to_string().as_bytes(), 0) {
        if find_loose(name, o[3].to_string().as_bytes(), at + 1).is_some() {
            return true;
        }
    }
    false
}

/// Whether a host's PTR names span unrelated domains: some name does not end with the domain
/// suffix of `name` (the one the MTA uses). One name, or a name without a dot, never does.
pub fn multi_domain(name: &str, all: &[String]) -> bool {
    if all.len() < 2 {
        return false;
    }
    let Some(suffix) = domain_suffix(name) else { return false };
    // Whole labels: `x.evilmail.example.com` is not in `mail.example.com`.
    let dotted = format!(".{suffix}");
    all.iter().any(|other| {
        let other = other.trim_end_matches('.').to_ascii_lowercase();
        other != suffix && !other.ends_with(&dotted)
    })
}

/// Finds `pattern` in `text` from `from` on, where punctuation in the text may sit between the
/// pattern's digits (`62-210` matches `62210`) and punctuation in the pattern matches any
/// punctuation in the text (`-60.` matches `-60-`). The first character must match as it is.
/// Returns where the match starts.
fn find_loose(text: &[u8], pattern: &[u8], from: usize) -> Option<usize> {
    let (&first, rest) = pattern.split_first()?;
    (from..text.len()).filter(|&i| text[i] == first).find(|&start| {
        let mut t = start + 1;
        let mut p = 0;
        while p < rest.len() && t < text.len() {
            let (tc, pc) = (text[t], rest[p]);
            if tc.is_ascii_punctuation() && pc.is_ascii_hexdigit() {
                t += 1;
                continue;
            }
            if tc.is_ascii_punctuation() && pc.is_ascii_punctuation() || tc == pc {
                t += 1;
                p += 1;
                continue;
            }
            break;
        }
        p == rest.len()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real-world shapes of PTR names: dynamic pools (the address is in the name, in one of its
    /// encodings) and fixed mail or name servers (it is not).
    #[test]
    fn dynamic_names_are_recognised_in_every_encoding() {
        let dynamic = [
            ("203.0.113.60", "dsl-203-0-113-60.pool.bigisp.net"),
            ("198.51.100.7", "c-198-51-100-7.hsd1.ca.comcast.net"),
            ("1.2.3.4", "adsl-001-002-003-004.example.com"),
            ("62.210.114.125", "125-114-adsl.example.com"),
            ("62.210.114.125", "210-62-adsl.example.com"),
            ("62.210.114.125", "adsl-62-210.example.com"),
            ("62.210.114.125", "adsl-62x210x114x125.example.com"),
            ("62.210.114.125", "adsl-62210114125.example.com"),
            ("62.210.114.125", "adsl-3ed2727d.example.com"),
            ("62.210.114.125", "adsl-3ED2727D.example.com"),
            ("62.210.114.125", "adsl-1053979261.example.com"),
            ("62.210.114.125", "adsl-7664471175.example.com"),
            ("194.117.241.98", "241net98.net.zeork.com.pl"),
            ("66.249.5.25", "19.mars.orderbox-dns.com."),
            ("213.60.241.217", "cm241217.red.mundo-r.com"),
            ("189.25.186.220", "18925186220.user.veloxzone.com.br"),
            ("201.232.130.81", "cable201-232-130-81.epm.net.co."),
            ("81.39.250.231", "231.red-81-39-250.dynamicip.rima-tde.net"),
            ("84.163.26.165", "p54a31aa5.dip0.t-ipconnect.de"),
            ("89.210.195.170", "ppp089210195170.dsl.hol.gr"),
            ("87.19.218.240", "host240-218-dynamic.19-87-r.retail.telecomitalia.it"),
            ("192.0.2.60", "host-060.pool.example.net"),
            ("198.51.100.200", "200.100.51.198.in-addr.example.net"),
        ];
        for (ip, name) in dynamic {
            assert!(ip_in_name(name, ip.parse().unwrap()), "{ip} {name} should look dynamic");
        }
        let fixed = [
            ("213.252.1.1", "ns1.ipandmore.de"),
            ("209.200.151.4", "ns6.easydns.com"),
            ("151.164.1.1", "ns1.swbell.net."),
            ("64.94.136.13", "dns3.nettica.com"),
            ("216.189.1.10", "ns101.hostigation.com"),
            ("216.66.33.163", "a368.g.akamai.net"),
            ("193.190.238.226", "smtp-out.west-vlaanderen.be"),
            ("83.98.0.245", "intthsv06.thuk.ioko365.com"),
            ("206.55.70.44", "mx3.sf-bay.org"),
            ("64.233.160.27", "mail-qk0-f27.google.example"),
            ("192.0.2.25", "mail.example.com"),
            ("192.0.2.25", ""),
        ];
        for (ip, name) in fixed {
            assert!(!ip_in_name(name, ip.parse().unwrap()), "{ip} {name} should not look dynamic");
        }
    }

    #[test]
    fn loose_matching_skips_punctuation_between_digits_only() {
        assert_eq!(find_loose(b"a-62-210.x", b"62210", 0), Some(2));
        assert_eq!(find_loose(b"a-60_x", b"-60.", 0), Some(1), "pattern punctuation matches any");
        assert_eq!(find_loose(b"eren.be", b"eebe", 0), None, "letters are not skipped");
        assert_eq!(find_loose(b"x62", b"62", 2), None, "starts at `from`");
        assert_eq!(find_loose(b"6", b"62", 0), None, "text ends first");
        assert_eq!(find_loose(b"abc", b"", 0), None);
    }

    #[test]
    fn several_ptr_names_in_one_domain_are_not_multi_domain() {
        let same = vec!["mx1.mail.example.com".to_string(), "mx1.out.mail.example.com".to_string()];
        assert!(!multi_domain("mx1.mail.example.com", &same));
        let unrelated = vec!["www.shop-one.example".to_string(), "www.shop-two.example".to_string()];
        assert!(multi_domain("www.shop-one.example", &unrelated));
        assert!(!multi_domain("www.shop-one.example", &unrelated[..1]), "one name");
        assert!(!multi_domain("localhost", &unrelated), "a dotless name has no suffix");
        let upper = vec!["A.Mail.Example.COM.".to_string(), "b.mail.example.com".to_string()];
        assert!(!multi_domain("a.mail.example.com", &upper));
        // A name that merely ends with the same letters is another domain.
        let lookalike = vec!["mx1.mail.example.com".to_string(), "x.evilmail.example.com".to_string()];
        assert!(multi_domain("mx1.mail.example.com", &lookalike));
        let apex = vec!["mx1.mail.example.com".to_string(), "mail.example.com".to_string()];
        assert!(!multi_domain("mx1.mail.example.com", &apex), "the suffix itself is in the domain");
    }
}

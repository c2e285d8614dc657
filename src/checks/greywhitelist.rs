//! postgrey's whitelist files as greylisting exemptions: `whitelist_clients` and
//! `whitelist_recipients`, in postgrey's own format, so a site coming from postgrey (or using the
//! community-maintained list Debian ships) keeps its exemptions.
//!
//! One entry per line; `#` starts a comment; surrounding white space is ignored.
//! - clients: `/regex/` (matched against the client's forward-confirmed host name, any case),
//!   an IPv4 address with or without `/bits`, a partial IPv4 address (`192.0.2` is a /24,
//!   `192.0` a /16), an IPv6 address with or without `/bits`, or a host or domain name (matches
//!   the name itself and every name under it).
//! - recipients: `/regex/` (matched against the address, any case), `user@domain` (also
//!   `user+detail@domain`), `user@` (any domain), or `domain` (the domain and its subdomains).
//!
//! Every entry remembers its file and line, so the log says which line exempted a message. Lines
//! that fit no form are reported (file:line and why) and skipped, as postgrey does.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use regex::Regex;

/// Where an entry was written, for the log line of an exemption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

#[derive(Debug)]
enum ClientRule {
    Name(String),
    Pattern(Regex),
    Net(IpNet),
}

#[derive(Debug)]
enum RecipientRule {
    Pattern(Regex),
    /// `user@domain` (lower case): that user, with or without `+detail`, at that domain.
    Address(String, String),
    /// `user@`: that user at any domain.
    User(String),
    /// `domain`: any user at the domain or under it.
    Domain(String),
}

/// The exemptions read from the configured files.
#[derive(Debug, Default)]
pub struct GreyWhitelist {
    clients: Vec<(ClientRule, Origin)>,
    recipients: Vec<(RecipientRule, Origin)>,
}

impl GreyWhitelist {
    /// Reads the files; an unreadable file is an error (a path in the config names a file that
    /// must be there), a malformed line a warning.
    pub fn load(clients: &[impl AsRef<Path>], recipients: &[impl AsRef<Path>]) -> Result<(GreyWhitelist, Vec<String>), String> {
        let mut list = GreyWhitelist::default();
        let mut warnings = Vec::new();
        for path in clients {
            let (text, name) = read(path.as_ref())?;
            warnings.extend(list.add_clients(&text, &name));
        }
        for path in recipients {
            let (text, name) = read(path.as_ref())?;
            warnings.extend(list.add_recipients(&text, &name));
        }
        Ok((list, warnings))
    }

    /// Whether nothing is listed (the check is then skipped).
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.recipients.is_empty()
    }

    /// Adds the entries of a `whitelist_clients` text; returns the warnings for skipped lines.
    pub fn add_clients(&mut self, text: &str, file: &str) -> Vec<String> {
        let mut warnings = Vec::new();
        for (n, entry) in entries(text) {
            let origin = Origin { file: file.to_string(), line: n };
            match client_rule(entry) {
                Ok(rule) => self.clients.push((rule, origin)),
                Err(why) => warnings.push(format!("{origin}: {why}; line skipped")),
            }
        }
        warnings
    }

    /// Adds the entries of a `whitelist_recipients` text; returns the warnings for skipped lines.
    pub fn add_recipients(&mut self, text: &str, file: &str) -> Vec<String> {
        let mut warnings = Vec::new();
        for (n, entry) in entries(text) {
            let origin = Origin { file: file.to_string(), line: n };
            match recipient_rule(entry) {
                Ok(rule) => self.recipients.push((rule, origin)),
                Err(why) => warnings.push(format!("{origin}: {why}; line skipped")),
            }
        }
        warnings
    }

    /// The first entry that exempts this client: by its verified name, or its address.
    pub fn client(&self, name: Option<&str>, ip: IpAddr) -> Option<&Origin> {
        let ip = ip.to_canonical();
        let name = name.map(|n| n.trim_end_matches('.').to_ascii_lowercase());
        self.clients
            .iter()
            .find(|(rule, _)| match rule {
                ClientRule::Net(net) => net.contains(&ip),
                ClientRule::Name(domain) => name.as_deref().is_some_and(|n| at_or_under(n, domain)),
                ClientRule::Pattern(re) => name.as_deref().is_some_and(|n| re.is_match(n)),
            })
            .map(|(_, origin)| origin)
    }

    /// The first entry that exempts this recipient (a bare address, without angle brackets).
    pub fn recipient(&self, address: &str) -> Option<&Origin> {
        let address = address.to_ascii_lowercase();
        let (local, domain) = address.rsplit_once('@').unwrap_or((address.as_str(), ""));
        let user = local.split_once('+').map(|(u, _)| u).unwrap_or(local);
        self.recipients
            .iter()
            .find(|(rule, _)| match rule {
                RecipientRule::Pattern(re) => re.is_match(&address),
                RecipientRule::Address(u, d) => user == u && domain == d,
                RecipientRule::User(u) => user == u,
                RecipientRule::Domain(d) => at_or_under(domain, d),
            })
            .map(|(_, origin)| origin)
    }
}

fn read(path: &Path) -> Result<(String, String), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {}", path.display(), crate::log::os_error(&e)))?;
    Ok((String::from_utf8_lossy(&bytes).into_owned(), path.display().to_string()))
}

/// The non-empty entries of a file with their line numbers, comments and white space removed.
fn entries(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let entry = line.split('#').next().unwrap_or("").trim();
        (!entry.is_empty()).then_some((i + 1, entry))
    })
}

/// `/regex/` as postgrey reads it: no white space inside, any case.
fn pattern(entry: &str) -> Option<Result<Regex, String>> {
    let inner = entry.strip_prefix('/')?.strip_suffix('/')?;
    if inner.is_empty() || inner.contains(char::is_whitespace) {
        return None;
    }
    Some(
        regex::RegexBuilder::new(inner)
            .case_insensitive(true)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("bad regular expression: {e}")),
    )
}

fn client_rule(entry: &str) -> Result<ClientRule, String> {
    if let Some(re) = pattern(entry) {
        return re.map(ClientRule::Pattern);
    }
    let is_dotted_numbers = |s: &str, parts: usize| {
        let fields: Vec<&str> = s.split('.').collect();
        fields.len() == parts && fields.iter().all(|f| !f.is_empty() && f.len() <= 3 && f.bytes().all(|b| b.is_ascii_digit()))
    };
    let (address, bits) = match entry.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (entry, None),
    };
    if is_dotted_numbers(address, 4) || address.contains(':') {
        let ip: IpAddr = address.parse().map_err(|_| format!("\"{entry}\" is not an IP address"))?;
        let full = if ip.is_ipv4() { 32 } else { 128 };
        let bits: u8 = match bits {
            Some(b) => b.parse().ok().filter(|b| *b <= full).ok_or_else(|| format!("\"{entry}\": bad prefix length"))?,
            None => full,
        };
        return IpNet::new(ip, bits).map(|n| ClientRule::Net(n.trunc())).map_err(|e| format!("\"{entry}\": {e}"));
    }
    for (parts, bits) in [(3, 24), (2, 16)] {
        if bits_free(entry) && is_dotted_numbers(entry, parts) {
            let padded = format!("{entry}{}", ".0".repeat(4 - parts));
            let ip: IpAddr = padded.parse().map_err(|_| format!("\"{entry}\" is not a partial IPv4 address"))?;
            return IpNet::new(ip, bits).map(|n| ClientRule::Net(n.trunc())).map_err(|e| format!("\"{entry}\": {e}"));
        }
    }
    if entry.contains(char::is_whitespace) || entry.contains('/') {
        return Err(format!("\"{entry}\" does not look like a host name"));
    }
    Ok(ClientRule::Name(entry.trim_end_matches('.').to_ascii_lowercase()))
}

fn bits_free(entry: &str) -> bool {
    !entry.contains('/')
}

fn recipient_rule(entry: &str) -> Result<RecipientRule, String> {
    if let Some(re) = pattern(entry) {
        return re.map(RecipientRule::Pattern);
    }
    if entry.contains(char::is_whitespace) {
        return Err(format!("\"{entry}\" does not look like an address"));
    }
    let entry = entry.to_ascii_lowercase();
    Ok(match entry.split_once('@') {
        Some((user, "")) => RecipientRule::User(user.to_string()),
        Some((user, domain)) => RecipientRule::Address(user.to_string(), domain.to_string()),
        None => RecipientRule::Domain(entry),
    })
}

/// `name` is `domain` or a name under it.
fn at_or_under(name: &str, domain: &str) -> bool {
    name == domain || name.strip_suffix(domain).is_some_and(|head| head.ends_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENTS: &str = "# postgrey_whitelist_clients\n\
        mail.bigbank.example\n\
        lists.example.org   # mailing lists\n\
        /^mx[0-9]+\\.pool\\.example\\.net$/\n\
        192.0.2.25\n\
        198.51.100.0/25\n\
        203.0.113\n\
        10.20\n\
        2001:db8:5::/48\n\
        bad entry here\n\
        /unclosed\n";

    #[test]
    fn client_forms_match_as_postgrey_reads_them() {
        let mut w = GreyWhitelist::default();
        let warnings = w.add_clients(CLIENTS, "wl");
        assert_eq!(
            warnings,
            vec![
                "wl:10: \"bad entry here\" does not look like a host name; line skipped".to_string(),
                "wl:11: \"/unclosed\" does not look like a host name; line skipped".to_string()
            ]
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let hit = |name: Option<&str>, addr: &str| w.client(name, ip(addr)).map(|o| o.line);
        assert_eq!(hit(Some("mail.bigbank.example"), "192.0.2.1"), Some(2));
        assert_eq!(hit(Some("out.mail.bigbank.example."), "192.0.2.1"), Some(2), "names under it");
        assert_eq!(hit(Some("notmail.bigbank.example"), "192.0.2.1"), None, "label boundary");
        assert_eq!(hit(Some("Lists.Example.ORG"), "192.0.2.1"), Some(3), "any case");
        assert_eq!(hit(Some("mx12.pool.example.net"), "192.0.2.1"), Some(4));
        assert_eq!(hit(Some("mx.pool.example.net"), "192.0.2.1"), None);
        assert_eq!(hit(None, "192.0.2.25"), Some(5));
        assert_eq!(hit(None, "192.0.2.26"), None);
        assert_eq!(hit(None, "198.51.100.127"), Some(6));
        assert_eq!(hit(None, "198.51.100.128"), None);
        assert_eq!(hit(None, "203.0.113.200"), Some(7), "a.b.c is a /24");
        assert_eq!(hit(None, "10.20.255.1"), Some(8), "a.b is a /16");
        assert_eq!(hit(None, "10.21.0.1"), None);
        assert_eq!(hit(None, "2001:db8:5:ffff::1"), Some(9));
        assert_eq!(hit(None, "::ffff:192.0.2.25"), Some(5), "IPv4-mapped is the IPv4 client");
        assert_eq!(hit(None, "2001:db8:6::1"), None);
    }

    #[test]
    fn recipient_forms_match_as_postgrey_reads_them() {
        let mut w = GreyWhitelist::default();
        let warnings = w.add_recipients("postmaster@\nabuse@example.net\nexample.org\n/^list-.*@example\\.com$/\n\nx y\n", "r");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let hit = |a: &str| w.recipient(a).map(|o| o.line);
        assert_eq!(hit("postmaster@anything.example"), Some(1));
        assert_eq!(hit("Postmaster+x@example.net"), Some(1));
        assert_eq!(hit("abuse@example.net"), Some(2));
        assert_eq!(hit("abuse+tag@example.net"), Some(2));
        assert_eq!(hit("abuse@example.com"), None);
        assert_eq!(hit("anyone@example.org"), Some(3));
        assert_eq!(hit("anyone@sub.example.org"), Some(3));
        assert_eq!(hit("anyone@badexample.org"), None);
        assert_eq!(hit("list-dev@example.com"), Some(4));
        assert_eq!(hit("dev@example.com"), None);
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_it() {
        let e = GreyWhitelist::load(&["/nonexistent/whitelist_clients"], &[] as &[&str]).unwrap_err();
        assert!(e.starts_with("/nonexistent/whitelist_clients: No such file or directory (2)"), "{e}");
    }
}

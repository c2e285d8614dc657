//! Manual pages written from the tables the daemon itself reads, so that they cannot drift from
//! the code: `smtpf-milter.toml(5)` from the config key table ([`crate::config::KEYS`]) and
//! `smtpf-milter-messages(7)` from the log and reply catalogs. `smtpf-milter(8)` comes from the
//! command-line definition (in the binary, through clap_mangen). `smtpf-milter manpages DIR`
//! writes all three; the Debian package ships them.

use crate::config::KEYS;
use crate::log::catalog;
use crate::reply::catalog as reply_catalog;

/// Text made safe for roff: backslashes escaped, and a line that would start with `.` or `'`
/// (a request) or a hyphen-minus that must stay one (option names, keys) written so.
pub fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    escaped
        .lines()
        .map(|l| if l.starts_with('.') || l.starts_with('\'') { format!("\\&{l}") } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `.TH` line and NAME section every page starts with.
fn header(name: &str, section: &str, version: &str, summary: &str) -> String {
    format!(
        ".TH {} {section} \"\" \"smtpf-milter {version}\" \"smtpf-milter\"\n.SH NAME\n{} \\- {}\n",
        name.to_uppercase().replace('-', "\\-"),
        roff(name),
        roff(summary)
    )
}

/// `smtpf-milter.toml(5)`: the config file, every key with its default and meaning.
pub fn config_page(version: &str) -> String {
    let mut s = header("smtpf-milter.toml", "5", version, "configuration file of the smtpf-milter mail filter");
    s.push_str(".SH SYNOPSIS\n/etc/smtpf\\-milter/smtpf\\-milter.toml\n.SH DESCRIPTION\n");
    s.push_str(&roff(
        "smtpf-milter reads one TOML file: the --config path, else /etc/smtpf-milter/smtpf-milter.toml \
         when it exists, else its embedded defaults. Keys are smtpf's option names (smtpf-milter \
         import-smtpf converts smtpf's own smtpf.cf). A key that is missing takes the default below; \
         an unknown key, a wrong type or a value out of range is refused with the key and the line \
         (smtpf-milter check-config says so without starting). smtpf options with no meaning in a \
         milter are accepted with one numbered warning each. SIGHUP re-reads the file; keys that say \
         \"Restart to change\" keep their old value until the daemon restarts, and a file that \
         does not validate is refused while the running configuration stays in force.",
    ));
    s.push_str("\n.SH KEYS\n");
    for k in KEYS {
        s.push_str(&format!(".TP\n.B {}\nDefault: {}\n.br\n{}\n", roff(k.name), roff(k.default), roff(k.meaning)));
    }
    s.push_str(".SH EXAMPLE\n.nf\n");
    s.push_str(&roff(
        "milter-socket = \"unix:/var/spool/postfix/smtpf-milter/milter.sock\"\n\
         access-map = \"/etc/smtpf-milter/access.cf\"\n\
         dns-bl = [\"zen.spamhaus.org\"]\n\
         grey-temp-fail-period = 600\n",
    ));
    s.push_str("\n.fi\n.SH FILES\n.TP\n/etc/smtpf\\-milter/smtpf\\-milter.toml\nthe configuration\n");
    s.push_str(".TP\n/var/lib/smtpf\\-milter/cache.sq3\nthe state file (greylisting and duplicate records)\n");
    s.push_str(".SH SEE ALSO\n.BR smtpf\\-milter (8),\n.BR smtpf\\-milter\\-messages (7)\n");
    s
}

/// `smtpf-milter-messages(7)`: every numbered log line and every numbered reply.
pub fn messages_page(version: &str) -> String {
    let mut s = header("smtpf-milter-messages", "7", version, "numbered log messages and replies of smtpf-milter");
    s.push_str(".SH DESCRIPTION\n");
    s.push_str(&roff(
        "Every line smtpf-milter logs and every SMTP reply it makes the MTA send carries a number, \
         smtpf's where smtpf has the same message. Log lines read \"SESSION-ID #NUMBER text\"; \
         replies end with \"#NUMBER SESSION-ID\", so a bounce a sender quotes leads to the log line. \
         smtpf-milter explain NUMBER prints an entry of either list.",
    ));
    s.push_str("\n.SH LOG MESSAGES\n");
    for m in catalog::ALL {
        s.push_str(&format!(".TP\n.B #{} ({})\n.nf\n{}\n.fi\n{}\n", m.num, m.level.word(), roff(m.format), roff(m.meaning)));
    }
    s.push_str(".SH REPLIES\n");
    for m in reply_catalog::ALL {
        s.push_str(&format!(
            ".TP\n.B #{}\n.nf\n{}\n.fi\n{}\n",
            m.num,
            roff(&format!("{} {} {}", m.code, m.ecode, m.format)),
            roff(m.meaning)
        ));
    }
    s.push_str(".SH SEE ALSO\n.BR smtpf\\-milter (8),\n.BR smtpf\\-milter.toml (5)\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roff_requests_and_escapes_cannot_leak_from_text() {
        assert_eq!(roff("a\\b"), "a\\eb");
        assert_eq!(roff(".SH x\n'br"), "\\&.SH x\n\\&'br");
        assert_eq!(roff("grey-key"), "grey\\-key");
    }

    #[test]
    fn every_key_and_every_number_is_in_its_page() {
        let config = config_page("1.0");
        assert!(config.starts_with(".TH SMTPF\\-MILTER.TOML 5"));
        for k in KEYS {
            assert!(config.contains(&format!(".B {}\nDefault: ", roff(k.name))), "{}", k.name);
        }
        let messages = messages_page("1.0");
        for m in catalog::ALL {
            assert!(messages.contains(&format!(".B #{} (", m.num)), "#{}", m.num);
        }
        for m in reply_catalog::ALL {
            assert!(messages.contains(&format!(".B #{}\n", m.num)), "#{}", m.num);
        }
    }
}

//! SPF (RFC 7208) of the MAIL FROM and HELO identities against the in-process test DNS server:
//! each of the seven results, the mechanisms and modifiers, macros, the RFC's limits, DNS
//! failures, and records written to hurt the receiver.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::dns::TestDns;
use smtpf_milter::checks::spf::{check_helo, check_mail, SpfResult};
use smtpf_milter::dns::Dns;

const TIMEOUT: Duration = Duration::from_secs(2);
const SHORT: Duration = Duration::from_millis(300);

fn dns_for(server: &TestDns) -> Dns {
    dns(server, TIMEOUT)
}

fn dns(server: &TestDns, timeout: Duration) -> Dns {
    Dns::new(&[server.addr()], timeout).expect("resolver for the test server")
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

const HELO: &str = "client.example.test";

/// MAIL FROM `user@<domain>` from `client`, with a plain HELO.
async fn mail(dns: &Dns, client: &str, domain: &str) -> SpfResult {
    check_mail(dns, ip(client), HELO, &format!("user@{domain}")).await
}

#[tokio::test]
async fn ip4_pass_and_fail() {
    let server = TestDns::builder().txt("ip4.test", "v=spf1 ip4:192.0.2.0/24 ip4:198.51.100.7 -all").start().await;
    let dns = dns(&server, TIMEOUT);
    assert_eq!(mail(&dns, "192.0.2.10", "ip4.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "198.51.100.7", "ip4.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "198.51.100.8", "ip4.test").await, SpfResult::Fail);
    // An IPv4-mapped IPv6 client is the IPv4 client.
    assert_eq!(mail(&dns, "::ffff:192.0.2.10", "ip4.test").await, SpfResult::Pass);
}

#[tokio::test]
async fn a_mechanism_with_and_without_domain_and_prefix() {
    let server = TestDns::builder()
        .txt("a.test", "v=spf1 a -all")
        .a("a.test", "192.0.2.20")
        .txt("a-other.test", "v=spf1 a:hosts.a-other.test/28 -all")
        .a("hosts.a-other.test", "192.0.2.32")
        .txt("a-six.test", "v=spf1 a//64 -all")
        .aaaa("a-six.test", "2001:db8:1:2::1")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    assert_eq!(mail(&dns, "192.0.2.20", "a.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "192.0.2.21", "a.test").await, SpfResult::Fail);
    assert_eq!(mail(&dns, "192.0.2.47", "a-other.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "192.0.2.48", "a-other.test").await, SpfResult::Fail);
    assert_eq!(mail(&dns, "2001:db8:1:2::99", "a-six.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "2001:db8:1:3::1", "a-six.test").await, SpfResult::Fail);
    // An IPv4 client is compared with A records only.
    assert_eq!(mail(&dns, "192.0.2.20", "a-six.test").await, SpfResult::Fail);
}

#[tokio::test]
async fn mx_mechanism() {
    let server = TestDns::builder()
        .txt("mx.test", "v=spf1 mx -all")
        .mx("mx.test", 10, "mx1.mx.test")
        .mx("mx.test", 20, "mx2.mx.test")
        .a("mx1.mx.test", "192.0.2.1")
        .a("mx2.mx.test", "192.0.2.2")
        .txt("mx-other.test", "v=spf1 mx:mx.test/30 ~all")
        .txt("nullmx.test", "v=spf1 mx ?all")
        .mx("nullmx.test", 0, ".")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    assert_eq!(mail(&dns, "192.0.2.2", "mx.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "192.0.2.3", "mx.test").await, SpfResult::Fail);
    assert_eq!(mail(&dns, "192.0.2.3", "mx-other.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "192.0.2.4", "mx-other.test").await, SpfResult::SoftFail);
    assert_eq!(mail(&dns, "192.0.2.1", "nullmx.test").await, SpfResult::Neutral);
}

#[tokio::test]
async fn include_matches_only_on_pass() {
    let server = TestDns::builder()
        .txt("inc.test", "v=spf1 include:_spf.provider.test include:_fail.provider.test -all")
        .txt("_spf.provider.test", "v=spf1 ip4:203.0.113.0/24 -all")
        .txt("_fail.provider.test", "v=spf1 -ip4:198.51.100.1 ?all")
        // The include's own qualifier decides, however deep the include is.
        .txt("nested.test", "v=spf1 -include:middle.test ~all")
        .txt("middle.test", "v=spf1 include:_spf.provider.test -all")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    assert_eq!(mail(&dns, "203.0.113.5", "inc.test").await, SpfResult::Pass);
    // Fail and Neutral inside an include are "no match": evaluation goes on to -all.
    assert_eq!(mail(&dns, "198.51.100.1", "inc.test").await, SpfResult::Fail);
    assert_eq!(mail(&dns, "192.0.2.1", "inc.test").await, SpfResult::Fail);
    assert_eq!(mail(&dns, "203.0.113.5", "nested.test").await, SpfResult::Fail);
    assert_eq!(mail(&dns, "192.0.2.1", "nested.test").await, SpfResult::SoftFail);
}

#[tokio::test]
async fn qualifiers_and_default_result() {
    let server = TestDns::builder()
        .txt("fail.test", "v=spf1 -all")
        .txt("softfail.test", "v=spf1 ~all")
        .txt("neutral.test", "v=spf1 ?all")
        .txt("plus.test", "v=spf1 +all")
        .txt("nomatch.test", "v=spf1 ip4:203.0.113.1")
        .txt("empty.test", "v=spf1")
        .txt("case.test", "V=SPF1 IP4:192.0.2.1 -ALL")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    assert_eq!(mail(&dns, "192.0.2.1", "fail.test").await, SpfResult::Fail);
    assert_eq!(mail(&dns, "192.0.2.1", "softfail.test").await, SpfResult::SoftFail);
    assert_eq!(mail(&dns, "192.0.2.1", "neutral.test").await, SpfResult::Neutral);
    assert_eq!(mail(&dns, "192.0.2.1", "plus.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "192.0.2.1", "nomatch.test").await, SpfResult::Neutral);
    assert_eq!(mail(&dns, "192.0.2.1", "empty.test").await, SpfResult::Neutral);
    assert_eq!(mail(&dns, "192.0.2.1", "case.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "192.0.2.2", "case.test").await, SpfResult::Fail);
}

#[tokio::test]
async fn none_without_record_or_domain() {
    let server = TestDns::builder()
        .a("norecord.test", "192.0.2.1")
        .txt("othertxt.test", "google-site-verification=abc")
        .txt("othertxt.test", "v=spf10 -all")
        .nxdomain("gone.test")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    assert_eq!(mail(&dns, "192.0.2.1", "norecord.test").await, SpfResult::None);
    assert_eq!(mail(&dns, "192.0.2.1", "othertxt.test").await, SpfResult::None);
    assert_eq!(mail(&dns, "192.0.2.1", "gone.test").await, SpfResult::None);
    assert_eq!(mail(&dns, "192.0.2.1", "never-defined.test").await, SpfResult::None);
    // Not a domain at all: no lookup, None.
    assert_eq!(check_mail(&dns, ip("192.0.2.1"), HELO, "user@localhost").await, SpfResult::None);
    assert_eq!(check_mail(&dns, ip("192.0.2.1"), HELO, "user@[192.0.2.1]").await, SpfResult::None);
}

#[tokio::test]
async fn permerror_for_bad_records() {
    let server = TestDns::builder()
        .txt("two.test", "v=spf1 ip4:192.0.2.1 -all")
        .txt("two.test", "v=spf1 -all")
        .txt("syntax.test", "v=spf1 ip4:192.0.2.1 foo:bar -all")
        .txt("syntax.test", "unrelated text")
        .txt("badip.test", "v=spf1 ip4:192.0.2.1/33 -all")
        .txt("badmacro.test", "v=spf1 exists:%{z}.example.test -all")
        .txt("incnone.test", "v=spf1 include:norecord.test -all")
        .a("norecord.test", "192.0.2.99")
        .txt("incperm.test", "v=spf1 include:syntax.test -all")
        .txt("redirnone.test", "v=spf1 redirect=norecord.test")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    // Several SPF records, and a syntax error after a matching term: the record is never used.
    assert_eq!(mail(&dns, "192.0.2.1", "two.test").await, SpfResult::PermError);
    assert_eq!(mail(&dns, "192.0.2.1", "syntax.test").await, SpfResult::PermError);
    assert_eq!(mail(&dns, "192.0.2.1", "badip.test").await, SpfResult::PermError);
    assert_eq!(mail(&dns, "192.0.2.1", "badmacro.test").await, SpfResult::PermError);
    // An include or a redirect to a domain without a record, or with a broken one.
    assert_eq!(mail(&dns, "192.0.2.1", "incnone.test").await, SpfResult::PermError);
    assert_eq!(mail(&dns, "192.0.2.1", "incperm.test").await, SpfResult::PermError);
    assert_eq!(mail(&dns, "192.0.2.1", "redirnone.test").await, SpfResult::PermError);
}

#[tokio::test]
async fn permerror_past_ten_dns_terms() {
    let mut ten = String::from("v=spf1");
    let mut eleven = String::from("v=spf1");
    let mut builder = TestDns::builder();
    for n in 1..=11 {
        let host = format!("h{n}.many.test");
        builder = builder.a(&host, "192.0.2.200");
        if n <= 10 {
            ten.push_str(&format!(" a:{host}"));
        }
        eleven.push_str(&format!(" a:{host}"));
    }
    ten.push_str(" ip4:192.0.2.1 -all");
    eleven.push_str(" ip4:192.0.2.1 -all");
    let server = builder
        .txt("ten.test", &ten)
        .txt("eleven.test", &eleven)
        // Non-DNS terms are free: ip4 and all do not count.
        .txt("free.test", "v=spf1 ip4:10.0.0.1 ip4:10.0.0.2 ip4:10.0.0.3 ip6:2001:db8::1 ip4:192.0.2.1 -all")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    assert_eq!(mail(&dns, "192.0.2.1", "ten.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "192.0.2.1", "eleven.test").await, SpfResult::PermError);
    assert_eq!(mail(&dns, "192.0.2.1", "free.test").await, SpfResult::Pass);
}

#[tokio::test]
async fn permerror_past_two_void_lookups() {
    let server = TestDns::builder()
        .txt("twovoid.test", "v=spf1 a:no1.void.test mx:no2.void.test ip4:192.0.2.1 -all")
        .txt("threevoid.test", "v=spf1 a:no1.void.test mx:no2.void.test exists:no3.void.test ip4:192.0.2.1 -all")
        .a("present.void.test", "192.0.2.99")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    assert_eq!(mail(&dns, "192.0.2.1", "twovoid.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "192.0.2.1", "threevoid.test").await, SpfResult::PermError);
}

#[tokio::test]
async fn include_loops_and_redirect_chains_end_in_permerror() {
    let mut builder = TestDns::builder()
        .txt("loop1.test", "v=spf1 include:loop2.test -all")
        .txt("loop2.test", "v=spf1 include:loop1.test -all")
        .txt("self.test", "v=spf1 include:self.test -all")
        .txt("selfredir.test", "v=spf1 redirect=selfredir.test");
    for n in 0..30 {
        builder = builder.txt(&format!("r{n}.chain.test"), &format!("v=spf1 redirect=r{}.chain.test", n + 1));
    }
    let server = builder.start().await;
    let dns = dns(&server, TIMEOUT);
    assert_eq!(mail(&dns, "192.0.2.1", "loop1.test").await, SpfResult::PermError);
    assert_eq!(mail(&dns, "192.0.2.1", "self.test").await, SpfResult::PermError);
    assert_eq!(mail(&dns, "192.0.2.1", "selfredir.test").await, SpfResult::PermError);
    assert_eq!(mail(&dns, "192.0.2.1", "r0.chain.test").await, SpfResult::PermError);
}

#[tokio::test]
async fn redirect_takes_the_target_result() {
    let server = TestDns::builder()
        .txt("redir.test", "v=spf1 ip4:198.51.100.1 redirect=_spf.target.test")
        .txt("_spf.target.test", "v=spf1 ip4:192.0.2.0/24 ~all")
        // "all" always matches first, so the redirect is never followed.
        .txt("ignored.test", "v=spf1 ?all redirect=_spf.target.test")
        // %{d} in the target record is the target domain, not the original one.
        .txt("redirmacro.test", "v=spf1 redirect=_spf.%{d}")
        .txt("_spf.redirmacro.test", "v=spf1 a:%{d} -all")
        .a("_spf.redirmacro.test", "192.0.2.77")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    assert_eq!(mail(&dns, "198.51.100.1", "redir.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "192.0.2.5", "redir.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "203.0.113.1", "redir.test").await, SpfResult::SoftFail);
    assert_eq!(mail(&dns, "192.0.2.5", "ignored.test").await, SpfResult::Neutral);
    assert_eq!(mail(&dns, "192.0.2.77", "redirmacro.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "192.0.2.78", "redirmacro.test").await, SpfResult::Fail);
}

#[tokio::test]
async fn macros_in_exists() {
    let server = TestDns::builder()
        .txt("rbl.test", "v=spf1 exists:%{i}.rbl-like.test -all")
        .a("192.0.2.10.rbl-like.test", "127.0.0.2")
        .txt("rev.test", "v=spf1 exists:%{ir}.%{v}._spf.%{d} -all")
        .a("10.2.0.192.in-addr._spf.rev.test", "127.0.0.2")
        .txt("users.test", "v=spf1 exists:%{l}.%{o}.users.test -all")
        .a("alice.users.test.users.test", "127.0.0.2")
        .a("postmaster.users.test.users.test", "127.0.0.2")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    assert_eq!(mail(&dns, "192.0.2.10", "rbl.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "192.0.2.11", "rbl.test").await, SpfResult::Fail);
    assert_eq!(mail(&dns, "192.0.2.10", "rev.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "192.0.2.11", "rev.test").await, SpfResult::Fail);
    assert_eq!(check_mail(&dns, ip("192.0.2.1"), HELO, "alice@users.test").await, SpfResult::Pass);
    assert_eq!(check_mail(&dns, ip("192.0.2.1"), HELO, "bob@users.test").await, SpfResult::Fail);
    // An empty local part is "postmaster".
    assert_eq!(check_mail(&dns, ip("192.0.2.1"), HELO, "@users.test").await, SpfResult::Pass);
    assert_eq!(check_mail(&dns, ip("192.0.2.1"), HELO, "<alice@users.test>").await, SpfResult::Pass);
}

#[tokio::test]
async fn ipv6_clients() {
    let server = TestDns::builder()
        .txt("six.test", "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8:abcd::/48 -all")
        .txt("sixa.test", "v=spf1 a mx -all")
        .aaaa("sixa.test", "2001:db8::25")
        .mx("sixa.test", 10, "mx.sixa.test")
        .aaaa("mx.sixa.test", "2001:db8::26")
        .txt("sixmacro.test", "v=spf1 exists:%{ir}.%{v}.rbl-like.test -all")
        .a("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.rbl-like.test", "127.0.0.2")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    assert_eq!(mail(&dns, "2001:db8:abcd:1::1", "six.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "2001:db8:abce::1", "six.test").await, SpfResult::Fail);
    assert_eq!(mail(&dns, "2001:db8::25", "sixa.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "2001:db8::26", "sixa.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "2001:db8::27", "sixa.test").await, SpfResult::Fail);
    assert_eq!(mail(&dns, "2001:db8::1", "sixmacro.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "2001:db8::2", "sixmacro.test").await, SpfResult::Fail);
}

#[tokio::test]
async fn temperror_on_dns_failures() {
    let server = TestDns::builder()
        .servfail("broken.test")
        .blackhole("silent.test")
        .txt("aservfail.test", "v=spf1 a:host.broken.test -all")
        .txt("incsilent.test", "v=spf1 include:spf.silent.test -all")
        .txt("mxhost.test", "v=spf1 mx -all")
        .mx("mxhost.test", 10, "mx.broken.test")
        .start()
        .await;
    let dns = dns(&server, SHORT);
    assert_eq!(mail(&dns, "192.0.2.1", "broken.test").await, SpfResult::TempError);
    assert_eq!(mail(&dns, "192.0.2.1", "silent.test").await, SpfResult::TempError);
    assert_eq!(mail(&dns, "192.0.2.1", "aservfail.test").await, SpfResult::TempError);
    assert_eq!(mail(&dns, "192.0.2.1", "incsilent.test").await, SpfResult::TempError);
    assert_eq!(mail(&dns, "192.0.2.1", "mxhost.test").await, SpfResult::TempError);
}

#[tokio::test]
async fn null_sender_uses_the_helo_identity() {
    let server = TestDns::builder()
        .txt("mail.bounce.test", "v=spf1 a -all")
        .a("mail.bounce.test", "192.0.2.50")
        .txt("bounce.test", "v=spf1 exists:%{l}.%{o}.%{h}.names.test -all")
        .a("postmaster.bounce.test.bounce.test.names.test", "127.0.0.2")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    assert_eq!(check_mail(&dns, ip("192.0.2.50"), "mail.bounce.test", "").await, SpfResult::Pass);
    assert_eq!(check_mail(&dns, ip("192.0.2.51"), "mail.bounce.test", "<>").await, SpfResult::Fail);
    // The null sender's macros are those of postmaster@<helo>.
    assert_eq!(check_mail(&dns, ip("192.0.2.51"), "bounce.test", "").await, SpfResult::Pass);
    assert_eq!(check_mail(&dns, ip("192.0.2.50"), "[192.0.2.50]", "").await, SpfResult::None);
    assert_eq!(check_mail(&dns, ip("192.0.2.50"), "localhost", "").await, SpfResult::None);
}

#[tokio::test]
async fn helo_identity() {
    let server = TestDns::builder().txt("mail.helo.test", "v=spf1 a -all").a("mail.helo.test", "192.0.2.60").start().await;
    let dns = dns(&server, TIMEOUT);
    assert_eq!(check_helo(&dns, ip("192.0.2.60"), "mail.helo.test").await, SpfResult::Pass);
    assert_eq!(check_helo(&dns, ip("192.0.2.60"), "MAIL.Helo.Test.").await, SpfResult::Pass);
    assert_eq!(check_helo(&dns, ip("192.0.2.61"), "mail.helo.test").await, SpfResult::Fail);
    assert_eq!(check_helo(&dns, ip("192.0.2.60"), "other.helo.test").await, SpfResult::None);
    // IP literals and dotless names cannot have a record.
    assert_eq!(check_helo(&dns, ip("192.0.2.60"), "[192.0.2.60]").await, SpfResult::None);
    assert_eq!(check_helo(&dns, ip("2001:db8::1"), "[IPv6:2001:db8::1]").await, SpfResult::None);
    assert_eq!(check_helo(&dns, ip("192.0.2.60"), "192.0.2.60").await, SpfResult::None);
    assert_eq!(check_helo(&dns, ip("192.0.2.60"), "mailhost").await, SpfResult::None);
    assert_eq!(check_helo(&dns, ip("192.0.2.60"), "").await, SpfResult::None);
}

#[tokio::test]
async fn hostile_records_complete_without_harm() {
    // A long record (sent in many character-strings, over TCP) that matches at its very end.
    let mut huge = String::from("v=spf1");
    for n in 0..1500 {
        huge.push_str(&format!(" ip4:10.{}.{}.0/24", n / 250, n % 250));
    }
    huge.push_str(" ip4:192.0.2.1 -all");
    // Macros that grow without bound, and an mx with too many hosts.
    let blowup = format!("v=spf1 exists:{}.example.test -all", "%{s}%{s}%{s}%{s}".repeat(200));
    let mut builder = TestDns::builder().txt("huge.test", &huge).txt("blowup.test", &blowup).txt("manymx.test", "v=spf1 mx -all");
    for n in 0..11 {
        builder = builder.mx("manymx.test", n, &format!("mx{n}.manymx.test"));
    }
    let server = builder.start().await;
    let dns = dns(&server, TIMEOUT);
    assert_eq!(mail(&dns, "192.0.2.1", "huge.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "192.0.2.2", "huge.test").await, SpfResult::Fail);
    assert_eq!(mail(&dns, "192.0.2.1", "blowup.test").await, SpfResult::PermError);
    assert_eq!(mail(&dns, "192.0.2.1", "manymx.test").await, SpfResult::PermError);
    let long_sender = format!("{}@huge.test", "x".repeat(5000));
    assert_eq!(check_mail(&dns, ip("192.0.2.1"), HELO, &long_sender).await, SpfResult::Pass);
}

#[test]
fn checks_can_run_on_any_session_task() {
    fn sendable<T: Send>(_: &T) {}
    let dns = Dns::new(&["127.0.0.1:53".parse().unwrap()], TIMEOUT).unwrap();
    sendable(&check_mail(&dns, ip("192.0.2.1"), HELO, "user@example.test"));
    sendable(&check_helo(&dns, ip("192.0.2.1"), HELO));
}

#[tokio::test]
async fn results_feed_the_log_words() {
    let words: Vec<String> = [
        SpfResult::Pass,
        SpfResult::Fail,
        SpfResult::SoftFail,
        SpfResult::Neutral,
        SpfResult::None,
        SpfResult::TempError,
        SpfResult::PermError,
    ]
    .iter()
    .map(|result| format!("spf-mail={result}"))
    .collect();
    assert_eq!(
        words,
        [
            "spf-mail=Pass",
            "spf-mail=Fail",
            "spf-mail=SoftFail",
            "spf-mail=Neutral",
            "spf-mail=None",
            "spf-mail=TempError",
            "spf-mail=PermError"
        ]
    );
}

// ---- RFC 7208 edge cases (the classes the public conformance suite checks) -------------------

/// §5.5: `ptr` matches when a validated PTR name (one whose addresses include the client) is the
/// target domain or under it; at most 10 PTR names are checked; a failed PTR lookup does not
/// match. The case of names does not matter.
#[tokio::test]
async fn ptr_matches_validated_names_only() {
    let mut b = TestDns::builder()
        .ptr("1.2.3.4", "e3.ptr.test")
        .ptr("1.2.3.4", "e4.ptr.test")
        .ptr("1.2.3.4", "mail.ptr.test")
        .ptr("cafe:babe::1", "e3.ptr.test")
        .a("e3.ptr.test", "1.2.3.4")
        .aaaa("e3.ptr.test", "cafe:babe::1")
        .a("mail.ptr.test", "1.2.3.4")
        .txt("e2.ptr.test", "v=spf1 ptr:ptr.test -all")
        .txt("e3.ptr.test", "v=spf1 ptr -all")
        .txt("e4.ptr.test", "v=spf1 ptr -all")
        .txt("e6.ptr.test", "v=spf1 ptr:PTR.Test -all")
        .txt("e7.ptr.test", "v=spf1 ptr:other.test -all")
        .txt("limit.test", "v=spf1 ptr -all")
        .txt("broken.test", "v=spf1 ptr ?all")
        .servfail("7.2.0.192.in-addr.arpa");
    // Eleven PTR names; only the eleventh is validated and under limit.test.
    for n in 1..=10 {
        b = b.ptr("1.2.3.5", &format!("h{n}.elsewhere.test"));
    }
    let server = b.ptr("1.2.3.5", "good.limit.test").a("good.limit.test", "1.2.3.5").start().await;
    let dns = dns(&server, TIMEOUT);
    assert_eq!(mail(&dns, "1.2.3.4", "e2.ptr.test").await, SpfResult::Pass, "mail.ptr.test is under the target");
    assert_eq!(mail(&dns, "1.2.3.4", "e3.ptr.test").await, SpfResult::Pass, "the domain itself, validated");
    assert_eq!(mail(&dns, "1.2.3.4", "e4.ptr.test").await, SpfResult::Fail, "e4.ptr.test has no address: not validated");
    assert_eq!(mail(&dns, "1.2.3.4", "e6.ptr.test").await, SpfResult::Pass, "case does not matter");
    assert_eq!(mail(&dns, "1.2.3.4", "e7.ptr.test").await, SpfResult::Fail);
    assert_eq!(mail(&dns, "cafe:babe::1", "e3.ptr.test").await, SpfResult::Pass, "IPv6: AAAA validates");
    assert_eq!(mail(&dns, "1.2.3.5", "limit.test").await, SpfResult::Fail, "the eleventh PTR name is not checked");
    assert_eq!(mail(&dns, "192.0.2.7", "broken.test").await, SpfResult::Neutral, "a failed PTR lookup does not match");
}

/// §7.3: `%{p}` is a validated PTR name: one that is the domain or under it first, else any; with
/// none, `unknown`.
#[tokio::test]
async fn p_macro_expands_to_a_validated_name() {
    let server = TestDns::builder()
        .ptr("1.2.3.4", "other.elsewhere.test")
        .ptr("1.2.3.4", "h1.p.test")
        .a("other.elsewhere.test", "1.2.3.4")
        .a("h1.p.test", "1.2.3.4")
        .txt("p.test", "v=spf1 exists:%{p}.okp.test -all")
        .a("h1.p.test.okp.test", "127.0.0.2")
        .a("unknown.okp.test", "127.0.0.2")
        .txt("q.test", "v=spf1 exists:%{p}.okq.test -all")
        .a("unknown.okq.test", "127.0.0.2")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    assert_eq!(mail(&dns, "1.2.3.4", "p.test").await, SpfResult::Pass, "h1.p.test is under p.test: chosen");
    // Validated, but neither is under the domain: one of them, never unknown.
    let other = TestDns::builder()
        .ptr("1.2.3.4", "a.elsewhere.test")
        .a("a.elsewhere.test", "1.2.3.4")
        .txt("r.test", "v=spf1 -exists:%{p}.okq.test exists:%{p}.okr.test -all")
        .a("a.elsewhere.test.okr.test", "127.0.0.2")
        .a("unknown.okq.test", "127.0.0.2")
        .start()
        .await;
    assert_eq!(mail(&dns_for(&other), "1.2.3.4", "r.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "1.2.3.9", "q.test").await, SpfResult::Pass, "no PTR: unknown");
}

/// §4.6.1: only spaces separate terms. A CR, LF or tab between terms leaves them inside one
/// term, a syntax error; §4.5: the version is ended by a space or the end of the record.
#[tokio::test]
async fn only_spaces_separate_terms() {
    let server = TestDns::builder()
        .txt("ctrl.test", "v=spf1 a:ctrl.test\rptr -all")
        .a("ctrl.test", "192.0.2.3")
        .txt("lf.test", "v=spf1 ip4:192.0.2.5\n include:spf.other.test ~all")
        .txt("fine.test", "v=spf1 ip4:192.0.2.6  -all ")
        .txt("tab.test", "v=spf1\tip4:192.0.2.7 -all")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    assert_eq!(mail(&dns, "192.0.2.3", "ctrl.test").await, SpfResult::PermError);
    assert_eq!(mail(&dns, "192.0.2.5", "lf.test").await, SpfResult::PermError);
    assert_eq!(mail(&dns, "192.0.2.6", "fine.test").await, SpfResult::Pass, "two spaces and a trailing one are fine");
    assert_eq!(mail(&dns, "192.0.2.9", "fine.test").await, SpfResult::Fail);
    assert_eq!(mail(&dns, "192.0.2.7", "tab.test").await, SpfResult::None, "v=spf1 and a tab is no SPF record");
}

/// §7.1: a domain-spec may contain any visible character but `%` (`:` and `/` included); only a
/// trailing `/digits` or `//digits` is a CIDR length. Names with such octets, or with spaces from
/// `%_`, are asked for as they are.
#[tokio::test]
async fn domain_specs_with_colons_slashes_and_spaces_are_looked_up() {
    let server = TestDns::builder()
        .txt("e11.test", "v=spf1 a:foo:bar/baz.names.test -all")
        .a("foo:bar/baz.names.test", "1.2.3.4")
        .txt("e10.test", "v=spf1 a:foo.names.test/24 -all")
        .a("foo.names.test", "1.1.1.1")
        .a("foo.names.test", "1.2.3.5")
        .txt("e9.test", "v=spf1 a:names.test:8080")
        .txt("e12.test", "v=spf1 a:foo.names.test/24//64 -all")
        .txt("mania.test", "v=spf1 a:macro%%percent%_%_space%-url-space.names.test -all")
        .a("macro%percent  space%20url-space.names.test", "1.2.3.4")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    assert_eq!(mail(&dns, "1.2.3.4", "e11.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "::ffff:1.2.3.4", "e11.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "1.2.3.77", "e10.test").await, SpfResult::Pass, "/24 is the CIDR length");
    assert_eq!(mail(&dns, "1.2.4.1", "e10.test").await, SpfResult::Fail);
    assert_eq!(mail(&dns, "1.2.3.77", "e12.test").await, SpfResult::Pass, "/24//64");
    assert_eq!(mail(&dns, "1.2.3.4", "e9.test").await, SpfResult::PermError, "a port is no top label");
    assert_eq!(mail(&dns, "1.2.3.4", "mania.test").await, SpfResult::Pass);
}

/// §3.3: a TXT record of zero strings is illegal but must not spoil the others; the SPF record
/// made of two strings is read as their concatenation.
#[tokio::test]
async fn a_txt_record_of_no_strings_is_ignored() {
    let server =
        TestDns::builder().txt_parts("null.test", &["v=spf1 ip4:", "192.0.2.5 -all"]).txt_empty("null.test").start().await;
    let dns = dns(&server, TIMEOUT);
    assert_eq!(mail(&dns, "192.0.2.5", "null.test").await, SpfResult::Pass);
    assert_eq!(mail(&dns, "192.0.2.6", "null.test").await, SpfResult::Fail);
}

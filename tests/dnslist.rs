//! The resolver wrapper and the DNS list checks against the in-process test DNS server: every
//! outcome the checks distinguish (found, NODATA, NXDOMAIN, SERVFAIL, REFUSED, timeout), and
//! the list rules (return codes, masks, filters, weights, failures, concurrency).

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use common::dns::TestDns;
use smtpf_milter::checks::dnslist::{self, ListResult, DEFAULT_THRESHOLD};
use smtpf_milter::dns::{is_null_mx, Dns, Lookup, Mx};

const TIMEOUT: Duration = Duration::from_secs(2);
const SHORT: Duration = Duration::from_millis(500);

fn dns(server: &TestDns, timeout: Duration) -> Dns {
    Dns::new(&[server.addr()], timeout).expect("resolver for the test server")
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn zones(list: &str) -> Vec<dnslist::Zone> {
    dnslist::parse_list(list).unwrap()
}

fn hit_zones(result: &ListResult) -> Vec<&str> {
    result.hits.iter().map(|hit| hit.zone.as_str()).collect()
}

// ---- resolver outcomes --------------------------------------------------------------------

#[test]
fn dns_is_cheap_to_share() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Dns>();
}

#[tokio::test]
async fn each_response_code_maps_to_its_outcome() {
    let server = TestDns::builder()
        .a("host.example.test", "192.0.2.10")
        .a("host.example.test", "192.0.2.11")
        .aaaa("host.example.test", "2001:db8::10")
        .a("v4only.example.test", "192.0.2.12")
        .nxdomain("gone.example.test")
        .servfail("broken.test")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);

    let mut found = dns.a("host.example.test").await.found().cloned().unwrap();
    found.sort();
    assert_eq!(found, vec![Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 11)]);
    assert_eq!(dns.a("HOST.Example.Test.").await.found().map(Vec::len), Some(2));
    assert_eq!(dns.aaaa("host.example.test").await, Lookup::Found(vec!["2001:db8::10".parse::<Ipv6Addr>().unwrap()]));

    // NOERROR without data, an unknown name, an explicit NXDOMAIN, an empty non-terminal.
    assert_eq!(dns.aaaa("v4only.example.test").await, Lookup::NoRecords);
    assert_eq!(dns.mx("v4only.example.test").await, Lookup::NoRecords);
    assert_eq!(dns.a("unknown.example.test").await, Lookup::NxDomain);
    assert_eq!(dns.a("gone.example.test").await, Lookup::NxDomain);
    assert_eq!(dns.a("example.test").await, Lookup::NoRecords);

    assert_eq!(dns.a("broken.test").await, Lookup::Failed("SERVFAIL".into()));
    assert_eq!(dns.a("deep.name.broken.test").await, Lookup::Failed("SERVFAIL".into()));
    // The server refuses names outside its zones (it never forwards).
    assert_eq!(dns.a("www.example.com").await, Lookup::Failed("REFUSED".into()));

    // Names that cannot exist are NXDOMAIN without asking.
    let before = server.queries();
    assert_eq!(dns.a("bad..name.test").await, Lookup::NxDomain);
    assert_eq!(dns.a("").await, Lookup::NxDomain);
    assert_eq!(dns.a(&format!("{}.test", "x".repeat(64))).await, Lookup::NxDomain);
    assert_eq!(server.queries(), before);
}

#[tokio::test]
async fn a_silent_server_times_out_within_the_bound() {
    let server = TestDns::builder().blackhole("slow.test").start().await;
    let dns = dns(&server, SHORT);
    let started = Instant::now();
    assert_eq!(dns.a("x.slow.test").await, Lookup::Failed("timeout".into()));
    assert!(started.elapsed() < SHORT * 3, "took {:?}", started.elapsed());
    assert!(server.queries() >= 1);
}

#[tokio::test]
async fn an_unreachable_server_fails_within_the_bound() {
    // Bind and release a port so nothing listens there.
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dns = Dns::new(&[(Ipv4Addr::LOCALHOST, port).into()], SHORT).unwrap();
    let started = Instant::now();
    assert!(dns.a("anything.test").await.is_failed());
    assert!(started.elapsed() < SHORT * 3, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn ip_addrs_combines_both_families() {
    let server = TestDns::builder()
        .a("dual.example.test", "192.0.2.1")
        .aaaa("dual.example.test", "2001:db8::1")
        .aaaa("v6.example.test", "2001:db8::2")
        .txt("txtonly.example.test", "hello")
        .servfail("broken.test")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    assert_eq!(dns.ip_addrs("dual.example.test").await, Lookup::Found(vec![ip("192.0.2.1"), ip("2001:db8::1")]));
    assert_eq!(dns.ip_addrs("v6.example.test").await, Lookup::Found(vec![ip("2001:db8::2")]));
    assert_eq!(dns.ip_addrs("txtonly.example.test").await, Lookup::NoRecords);
    assert_eq!(dns.ip_addrs("none.example.test").await, Lookup::NxDomain);
    assert_eq!(dns.ip_addrs("broken.test").await, Lookup::Failed("SERVFAIL".into()));
}

#[tokio::test]
async fn mx_sorted_and_null_mx() {
    let server = TestDns::builder()
        .mx("example.test", 20, "mx2.example.test")
        .mx("example.test", 10, "MX1.Example.test.")
        .mx("example.test", 30, "backup.example.net")
        .mx("nomail.test", 0, ".")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    let mx = dns.mx("example.test").await.found().cloned().unwrap();
    let order: Vec<(u16, &str)> = mx.iter().map(|m| (m.preference, m.exchange.as_str())).collect();
    assert_eq!(order, vec![(10, "mx1.example.test"), (20, "mx2.example.test"), (30, "backup.example.net")]);
    assert!(!is_null_mx(&mx));

    let null = dns.mx("nomail.test").await;
    assert_eq!(null, Lookup::Found(vec![Mx { preference: 0, exchange: ".".into() }]));
    assert!(is_null_mx(null.found().unwrap()));
    assert_eq!(dns.mx("missing.example.test").await, Lookup::NxDomain);
}

#[tokio::test]
async fn txt_strings_joined_and_large_answers_use_tcp() {
    let long = format!("v=spf1 {} -all", (1..=60).map(|n| format!("ip4:192.0.2.{n}")).collect::<Vec<_>>().join(" "));
    assert!(long.len() > 600);
    let server = TestDns::builder()
        .txt_parts("example.test", &["v=spf1 ", "ip4:192.0.2.0/24", " -all"])
        .txt("example.test", "other record")
        .txt("big.example.test", &long)
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    let mut txt = dns.txt("example.test").await.found().cloned().unwrap();
    txt.sort();
    assert_eq!(txt, vec!["other record".to_string(), "v=spf1 ip4:192.0.2.0/24 -all".to_string()]);
    assert_eq!(server.tcp_queries(), 0);
    // Over 512 octets: truncated over UDP, then fetched over TCP on the same port.
    assert_eq!(dns.txt("big.example.test").await, Lookup::Found(vec![long]));
    assert_eq!(server.tcp_queries(), 1);
}

#[tokio::test]
async fn cname_chains_are_followed() {
    let server = TestDns::builder()
        .cname("alias.example.test", "real.example.test")
        .a("real.example.test", "192.0.2.7")
        .cname("dangling.example.test", "nowhere.example.test")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    assert_eq!(dns.a("alias.example.test").await, Lookup::Found(vec![Ipv4Addr::new(192, 0, 2, 7)]));
    assert_eq!(dns.aaaa("alias.example.test").await, Lookup::NoRecords);
    assert_eq!(dns.a("dangling.example.test").await, Lookup::NxDomain);
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_are_cached_so_a_burst_costs_one_query() {
    let server = TestDns::builder().a("cached.example.test", "192.0.2.1").start().await;
    let dns = dns(&server, TIMEOUT);
    let burst: Vec<_> = (0..20).map(|_| dns.a("cached.example.test")).collect();
    for outcome in futures_util::future::join_all(burst).await {
        assert_eq!(outcome, Lookup::Found(vec![Ipv4Addr::new(192, 0, 2, 1)]));
    }
    let clone = dns.clone();
    assert!(clone.a("cached.example.test").await.found().is_some());
    assert_eq!(server.queries(), 1);

    // Negative answers are cached for the SOA minimum too.
    assert_eq!(dns.a("nothing.example.test").await, Lookup::NxDomain);
    assert_eq!(dns.a("nothing.example.test").await, Lookup::NxDomain);
    assert_eq!(server.queries(), 2);
}

#[tokio::test]
async fn zone_text_builds_the_same_server() {
    let server = TestDns::start(
        "; test data\n\
         host.example.test A 192.0.2.1\n\
         host.example.test AAAA 2001:db8::1\n\
         example.test MX 10 host.example.test\n\
         nomail.test MX 0 .\n\
         example.test TXT \"v=spf1 -all\"\n\
         www.example.test CNAME host.example.test\n\
         gone.example.test NXDOMAIN\n\
         broken.test SERVFAIL\n\
         slow.test BLACKHOLE\n",
    )
    .await;
    let dns = dns(&server, SHORT);
    assert_eq!(dns.a("www.example.test").await, Lookup::Found(vec![Ipv4Addr::new(192, 0, 2, 1)]));
    assert_eq!(dns.mx("example.test").await.found().map(|m| m[0].exchange.clone()), Some("host.example.test".into()));
    assert!(is_null_mx(dns.mx("nomail.test").await.found().unwrap()));
    assert_eq!(dns.txt("example.test").await, Lookup::Found(vec!["v=spf1 -all".into()]));
    assert_eq!(dns.a("gone.example.test").await, Lookup::NxDomain);
    assert_eq!(dns.a("broken.test").await, Lookup::Failed("SERVFAIL".into()));
    assert_eq!(dns.a("slow.test").await, Lookup::Failed("timeout".into()));
}

#[tokio::test]
async fn a_dropped_server_stops_answering() {
    let server = TestDns::builder().a("x.example.test", "192.0.2.1").start().await;
    let addr = server.addr();
    drop(server);
    tokio::task::yield_now().await;
    let dns = Dns::new(&[addr], SHORT).unwrap();
    assert!(dns.a("x.example.test").await.is_failed());
}

// ---- DNS lists ----------------------------------------------------------------------------

#[tokio::test]
async fn rfc5782_test_points_ipv4_and_ipv6() {
    let server = TestDns::builder()
        .listed("127.0.0.2", "bl.test", "127.0.0.2")
        .listed("::ffff:7f00:2", "bl.test", "127.0.0.2")
        .listed("192.0.2.1", "bl.test", "127.0.0.4")
        .listed("2001:db8::25", "bl.test", "127.0.0.3")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    let list = zones("bl.test");

    let result = dnslist::query_ip(&dns, &list, ip("127.0.0.2")).await;
    assert!(result.listed(DEFAULT_THRESHOLD));
    assert_eq!(result.first_hit(), Some("bl.test."));
    assert_eq!(result.reported().map(|h| h.answer), Some(Ipv4Addr::new(127, 0, 0, 2)));
    assert_eq!(result.score, 1);
    assert!(result.failed.is_empty());

    let result = dnslist::query_ip(&dns, &list, ip("127.0.0.1")).await;
    assert!(!result.listed(DEFAULT_THRESHOLD));
    assert!(result.hits.is_empty() && result.failed.is_empty());

    let v6 = IpAddr::V6("::FFFF:7F00:2".parse().unwrap());
    let result = dnslist::query_ip(&dns, &list, v6).await;
    assert!(result.listed(DEFAULT_THRESHOLD), "{result:?}");
    let result = dnslist::query_ip(&dns, &list, IpAddr::V6("::ffff:7f00:1".parse().unwrap())).await;
    assert!(!result.listed(DEFAULT_THRESHOLD));

    let result = dnslist::query_ip(&dns, &list, ip("192.0.2.1")).await;
    assert_eq!(result.reported().map(|h| h.answer), Some(Ipv4Addr::new(127, 0, 0, 4)));
    assert!(!dnslist::query_ip(&dns, &list, ip("192.0.2.2")).await.listed(DEFAULT_THRESHOLD));

    let result = dnslist::query_ip(&dns, &list, ip("2001:db8::25")).await;
    assert_eq!(result.reported().map(|h| h.answer), Some(Ipv4Addr::new(127, 0, 0, 3)));
    assert!(!dnslist::query_ip(&dns, &list, ip("2001:db8::26")).await.listed(DEFAULT_THRESHOLD));
}

#[tokio::test]
async fn masks_hit_and_miss() {
    let server = TestDns::builder()
        .listed("192.0.2.1", "multi.test", "127.0.0.2")
        .listed("192.0.2.2", "multi.test", "127.0.0.6")
        .listed("192.0.2.3", "multi.test", "127.0.0.64")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    let list = zones("multi.test/0x04");
    assert!(!dnslist::query_ip(&dns, &list, ip("192.0.2.1")).await.listed(DEFAULT_THRESHOLD));
    let result = dnslist::query_ip(&dns, &list, ip("192.0.2.2")).await;
    assert!(result.listed(DEFAULT_THRESHOLD));
    assert_eq!(result.first_hit(), Some("multi.test."), "reported without the mask");
    let wide = zones("multi.test/0x46");
    assert!(dnslist::query_ip(&dns, &wide, ip("192.0.2.3")).await.listed(DEFAULT_THRESHOLD));
    assert!(dnslist::query_ip(&dns, &wide, ip("192.0.2.1")).await.listed(DEFAULT_THRESHOLD));
}

#[tokio::test]
async fn filters_weights_and_thresholds() {
    let server = TestDns::builder()
        // 192.0.2.1: SBL-like code, 3 points.
        .listed("192.0.2.1", "zen.test", "127.0.0.2")
        // 192.0.2.2: PBL-like code, 1 point.
        .listed("192.0.2.2", "zen.test", "127.0.0.11")
        // 192.0.2.3: both codes and an allow-list entry.
        .listed("192.0.2.3", "zen.test", "127.0.0.3")
        .listed("192.0.2.3", "zen.test", "127.0.0.10")
        .listed("192.0.2.3", "wl.test", "127.0.9.2")
        // 192.0.2.4: a code no filter accepts.
        .listed("192.0.2.4", "zen.test", "127.0.0.20")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    let list = zones("zen.test=127.0.0.[2..3]*3, zen.test=127.0.0.[10;11]*1 wl.test=127.0.[0..255].[2;3]*-2");

    let result = dnslist::query_ip(&dns, &list, ip("192.0.2.1")).await;
    assert_eq!(result.score, 3);
    assert!(result.listed(3));
    assert!(!result.listed(4));

    let result = dnslist::query_ip(&dns, &list, ip("192.0.2.2")).await;
    assert_eq!(result.score, 1);
    assert!(result.listed(DEFAULT_THRESHOLD));
    assert!(!result.listed(2));

    let result = dnslist::query_ip(&dns, &list, ip("192.0.2.3")).await;
    assert_eq!(hit_zones(&result), vec!["zen.test.", "zen.test.", "wl.test."], "hits in configuration order");
    assert_eq!(result.score, 3 + 1 - 2);
    assert!(result.listed(2));
    assert!(!result.listed(3));
    assert_eq!(result.reported().map(|h| h.answer), Some(Ipv4Addr::new(127, 0, 0, 3)));
    // Both filters for zen.test were served by one query.
    assert_eq!(result.hits[1].answer, Ipv4Addr::new(127, 0, 0, 10));

    let result = dnslist::query_ip(&dns, &list, ip("192.0.2.4")).await;
    assert!(result.hits.is_empty());
    assert!(!result.listed(DEFAULT_THRESHOLD));
}

#[tokio::test]
async fn error_codes_and_foreign_answers_never_count() {
    let server = TestDns::builder()
        .listed("192.0.2.1", "zen.test", "127.255.255.254")
        .listed("192.0.2.2", "zen.test", "127.255.255.252")
        .listed("192.0.2.3", "zen.test", "127.0.1.255")
        .listed("192.0.2.4", "zen.test", "192.0.2.99")
        .listed("192.0.2.5", "zen.test", "10.0.0.2")
        // An error code next to a real code: only the real one counts.
        .listed("192.0.2.6", "zen.test", "127.255.255.254")
        .listed("192.0.2.6", "zen.test", "127.0.0.4")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    let list = zones("zen.test");
    for client in ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"] {
        let result = dnslist::query_ip(&dns, &list, ip(client)).await;
        assert!(!result.listed(DEFAULT_THRESHOLD), "{client}: {result:?}");
        assert!(result.hits.is_empty() && result.failed.is_empty(), "{client}: {result:?}");
    }
    let result = dnslist::query_ip(&dns, &list, ip("192.0.2.6")).await;
    assert_eq!(result.reported().map(|h| h.answer), Some(Ipv4Addr::new(127, 0, 0, 4)));
}

#[tokio::test]
async fn silent_and_failing_zones_are_reported_not_listed() {
    let server = TestDns::builder()
        .listed("192.0.2.1", "good.test", "127.0.0.2")
        .blackhole("slow.test")
        .servfail("broken.test")
        .zone("empty.test")
        .start()
        .await;
    let dns = dns(&server, SHORT);
    let list = zones("slow.test broken.test broken.test=127.0.0.[2..3]*2 empty.test good.test");

    let started = Instant::now();
    let result = dnslist::query_ip(&dns, &list, ip("192.0.2.1")).await;
    let took = started.elapsed();
    assert!(took < SHORT * 3, "took {took:?}");
    assert_eq!(hit_zones(&result), vec!["good.test."]);
    assert!(result.listed(DEFAULT_THRESHOLD));
    let failed: Vec<(&str, &str)> = result.failures().collect();
    assert_eq!(failed, vec![("slow.test.", "timeout"), ("broken.test.", "SERVFAIL")]);

    // NXDOMAIN everywhere that answers: not listed and nothing failed but the broken zones.
    let result = dnslist::query_ip(&dns, &zones("empty.test good.test"), ip("192.0.2.9")).await;
    assert!(!result.listed(DEFAULT_THRESHOLD));
    assert!(result.failed.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn zones_are_queried_concurrently() {
    let server = TestDns::builder()
        .blackhole("slow1.test")
        .blackhole("slow2.test")
        .blackhole("slow3.test")
        .blackhole("slow4.test")
        .blackhole("slow5.test")
        .listed("192.0.2.1", "good.test", "127.0.0.2")
        .start()
        .await;
    let dns = dns(&server, SHORT);
    let list = zones("slow1.test slow2.test slow3.test slow4.test slow5.test good.test");
    let started = Instant::now();
    let result = dnslist::query_ip(&dns, &list, ip("192.0.2.1")).await;
    let took = started.elapsed();
    // One after another would take five timeouts.
    assert!(took < SHORT * 3, "took {took:?}");
    assert_eq!(result.failed.len(), 5);
    assert!(result.failed.iter().all(|f| f.reason == "timeout"));
    assert_eq!(hit_zones(&result), vec!["good.test."]);
}

#[tokio::test]
async fn domain_lists() {
    let server = TestDns::builder()
        .a("spammy.example.uribl.test", "127.0.0.2")
        .a("spammy.example.multi.test", "127.0.0.8")
        .a("other.example.multi.test", "127.0.0.2")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    let list = zones("uribl.test, multi.test/0x08");

    let result = dnslist::query_domain(&dns, &list, "Spammy.Example.").await;
    assert_eq!(hit_zones(&result), vec!["uribl.test.", "multi.test."]);
    assert_eq!(result.score, 2);

    let result = dnslist::query_domain(&dns, &list, "other.example").await;
    assert!(result.hits.is_empty(), "mask 0x08 rejects 127.0.0.2: {result:?}");
    assert!(!dnslist::query_domain(&dns, &list, "clean.example").await.listed(DEFAULT_THRESHOLD));
    assert_eq!(dnslist::query_domain(&dns, &list, "").await, ListResult::default());
    // A name too long for the DNS cannot be listed.
    let long = vec!["abcdefghijklmnop"; 15].join(".");
    let result = dnslist::query_domain(&dns, &list, &long).await;
    assert!(result.hits.is_empty() && result.failed.is_empty());
}

#[tokio::test]
async fn an_empty_list_asks_nothing() {
    let server = TestDns::builder().zone("bl.test").start().await;
    let dns = dns(&server, TIMEOUT);
    let result = dnslist::query_ip(&dns, &[], ip("192.0.2.1")).await;
    assert_eq!(result, ListResult::default());
    assert_eq!(server.queries(), 0);
}

#[tokio::test]
async fn answers_are_remembered_for_their_ttl_failures_are_not() {
    let server = TestDns::builder().a("mx.example.test", "192.0.2.25").servfail("broken.test").start().await;
    let dns = dns(&server, SHORT);
    assert_eq!(dns.a("mx.example.test").await, Lookup::Found(vec![Ipv4Addr::new(192, 0, 2, 25)]));
    let asked = server.queries();
    // The same question, however it is spelled, is answered from memory.
    assert_eq!(dns.a("MX.Example.Test.").await, Lookup::Found(vec![Ipv4Addr::new(192, 0, 2, 25)]));
    assert_eq!(dns.a("mx.example.test").await, Lookup::Found(vec![Ipv4Addr::new(192, 0, 2, 25)]));
    assert_eq!(server.queries(), asked);
    // Another type is another question.
    assert_eq!(dns.aaaa("mx.example.test").await, Lookup::NoRecords);
    assert!(server.queries() > asked);
    // A failure is asked again next time.
    assert_eq!(dns.a("x.broken.test").await, Lookup::Failed("SERVFAIL".into()));
    let asked = server.queries();
    assert_eq!(dns.a("x.broken.test").await, Lookup::Failed("SERVFAIL".into()));
    assert!(server.queries() > asked, "SERVFAIL was remembered");
}

/// Only 127.255.255.0/24 (and 127.0.1.255) are the lists' "query refused" codes: an answer beside
/// that range, such as 127.0.255.2, is a listing like any other.
#[tokio::test]
async fn codes_beside_the_error_range_are_listings() {
    let server = TestDns::builder()
        .listed("192.0.2.1", "zen.test", "127.0.255.2")
        .listed("192.0.2.2", "zen.test", "127.255.254.2")
        .listed("192.0.2.3", "zen.test", "127.255.0.2")
        .start()
        .await;
    let dns = dns(&server, TIMEOUT);
    let list = zones("zen.test");
    for (client, code) in [("192.0.2.1", "127.0.255.2"), ("192.0.2.2", "127.255.254.2"), ("192.0.2.3", "127.255.0.2")] {
        let result = dnslist::query_ip(&dns, &list, ip(client)).await;
        assert!(result.listed(DEFAULT_THRESHOLD), "{client}: {result:?}");
        assert_eq!(result.reported().map(|h| h.answer.to_string()), Some(code.to_string()));
    }
}

//! Greylisting keyed by the SPF identity: a big sender's retry from another address of its pool
//! matches when the sender's SPF record authorises both addresses; without SPF Pass, or with the
//! option off, the key is smtpf's.

mod common;

use common::dns::TestDns;
use common::{open_session, TestDaemon};
use smtpf_milter::milter::codec::{Command, Response};

async fn data_from(d: &TestDaemon, ip: &str, sender: &str) -> Vec<Response> {
    let mut c = d.client().await;
    open_session(&mut c, "out.mta.pool-example.com", ip, "mta.pool-example.com").await;
    c.command(&Command::Mail { sender: sender.into(), params: vec![] }).await.unwrap();
    c.command(&Command::Rcpt { recipient: "<bob@example.net>".into(), params: vec![] }).await.unwrap();
    let r = c.command(&Command::Data).await.unwrap();
    c.command(&Command::Quit).await.unwrap();
    r
}

fn greylisted(r: &[Response]) -> bool {
    matches!(r, [Response::ReplyCode(t)] if t.contains("#552"))
}

async fn pool_dns() -> TestDns {
    TestDns::builder()
        .txt("pool.test", "v=spf1 ip4:198.51.100.0/24 -all")
        .txt("soft.test", "v=spf1 ?all")
        .zone("net")
        .start()
        .await
}

#[tokio::test]
async fn a_retry_from_another_address_the_domain_authorises_passes() {
    let dns = pool_dns().await;
    let d = TestDaemon::start(&format!("dns-servers = [\"{}\"]\ngrey-key = \"ptr,mail,rcpt\"", dns.addr())).await;
    assert!(greylisted(&data_from(&d, "198.51.100.1", "<news@pool.test>").await));
    d.wait_for("#387 grey listed {grey:spf:pool.test,news@pool.test,bob@example.net} for 600 seconds", 1).await;
    d.running().shared().advance_clock(700);
    // The retry comes from another address of the pool: it passes, and reports the identity.
    assert_eq!(data_from(&d, "198.51.100.77", "<news@pool.test>").await, vec![Response::Continue]);
    let conn = rusqlite::Connection::open(d.dir.path().join("cache.sq3")).unwrap();
    let v: String = conn.query_row("SELECT v FROM mcc WHERE k = 'grey:spf:pool.test'", [], |r| r.get(0)).unwrap();
    assert_eq!(v, "0", "the domain's host record");

    // Without SPF Pass (Neutral), the client part is smtpf's: here the verified PTR's suffix.
    assert!(greylisted(&data_from(&d, "192.0.2.5", "<x@soft.test>").await));
    let line = d.wait_for("{grey:", 2).await;
    assert!(
        line.iter().any(|l| l.contains("#387 grey listed {grey:mta.pool-example.com,x@soft.test,bob@example.net}")),
        "{line:?}"
    );
}

#[tokio::test]
async fn off_gives_smtpfs_key() {
    let dns = pool_dns().await;
    let d =
        TestDaemon::start(&format!("dns-servers = [\"{}\"]\ngrey-key = \"ip,mail,rcpt\"\ngrey-spf-identity = false", dns.addr()))
            .await;
    assert!(greylisted(&data_from(&d, "198.51.100.1", "<news@pool.test>").await));
    d.running().shared().advance_clock(700);
    assert!(greylisted(&data_from(&d, "198.51.100.77", "<news@pool.test>").await), "another address is another tuple");
    d.wait_for("#387 grey listed {grey:198.51.100.77,news@pool.test,bob@example.net}", 1).await;
}

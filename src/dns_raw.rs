//! A minimal TXT query for the one answer the resolver library refuses whole: a TXT record of
//! zero character-strings (RDLENGTH 0).
//!
//! Such a record is illegal (RFC 1035 wants at least one string) but published, and the library
//! rejects every message that carries an empty record outside a DNS UPDATE, so the domain's real
//! SPF record beside it would be lost and SPF would say TempError for good. RFC 7208 §3.3 and
//! the conformance suite want the empty record ignored and the others evaluated. This module asks
//! the same name servers the resolver asks, over UDP (TCP when the answer is truncated), within
//! the caller's time limit, and reads only what a TXT answer needs: the response code and the
//! TXT records of the answer section (an empty one as a record of no strings). It distrusts its
//! input like the rest: every length is checked, compression pointers may only point backwards,
//! and a malformed answer is a failure, never a panic.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a raw TXT query found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawTxt {
    /// The TXT records (each its character-strings) and the smallest TTL among them.
    Records(Vec<Vec<Vec<u8>>>, u32),
    /// NOERROR without TXT records.
    NoRecords,
    NxDomain,
    /// Any other outcome, with a reason word.
    Failed(&'static str),
}

/// Asks `servers` in turn for the TXT records of `labels` (the name's labels, raw), until one
/// answers or `limit` has passed.
pub async fn query_txt(servers: &[SocketAddr], labels: &[&[u8]], limit: Duration) -> RawTxt {
    let Some(query) = build_query(labels, query_id()) else { return RawTxt::Failed("bad-name") };
    let work = async {
        let mut last = RawTxt::Failed("no-servers");
        for server in servers {
            match ask(*server, &query).await {
                Ok(answer) => match parse_answer(&answer, &query[..2]) {
                    RawTxt::Failed(why) => last = RawTxt::Failed(why),
                    found => return found,
                },
                Err(why) => last = RawTxt::Failed(why),
            }
        }
        last
    };
    tokio::time::timeout(limit, work).await.unwrap_or(RawTxt::Failed("timeout"))
}

/// One server: UDP first, TCP when the answer says it was truncated.
async fn ask(server: SocketAddr, query: &[u8]) -> Result<Vec<u8>, &'static str> {
    let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
    let socket = tokio::net::UdpSocket::bind(bind).await.map_err(|_| "network")?;
    socket.connect(server).await.map_err(|_| "network")?;
    socket.send(query).await.map_err(|_| "network")?;
    let mut buf = vec![0u8; 4096];
    let answer = loop {
        let n = socket.recv(&mut buf).await.map_err(|_| "network")?;
        // Another id is a late or forged answer: keep waiting for ours.
        if n >= 2 && buf[..2] == query[..2] {
            break buf[..n].to_vec();
        }
    };
    if answer.len() >= 4 && answer[2] & 0x02 != 0 {
        return ask_tcp(server, query).await;
    }
    Ok(answer)
}

async fn ask_tcp(server: SocketAddr, query: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut stream = tokio::net::TcpStream::connect(server).await.map_err(|_| "network")?;
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).await.map_err(|_| "network")?;
    let length = stream.read_u16().await.map_err(|_| "network")?;
    let mut answer = vec![0u8; usize::from(length)];
    stream.read_exact(&mut answer).await.map_err(|_| "network")?;
    Ok(answer)
}

/// A query id that cannot be guessed from outside: the standard library's randomly keyed hasher
/// (seeded from the OS), over the time. The answer must also come back to the port we chose.
fn query_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    hasher.finish() as u16
}

/// A standard query, recursion desired, for TXT IN of `labels`; `None` when a label is empty or
/// over 63 octets or the name over 255.
fn build_query(labels: &[&[u8]], id: u16) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    let mut name_length = 1;
    for label in labels {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        name_length += label.len() + 1;
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    if name_length > 255 {
        return None;
    }
    out.push(0);
    out.extend_from_slice(&[0, 16, 0, 1]);
    Some(out)
}

/// Reads the response code and the answer section's TXT records.
fn parse_answer(message: &[u8], id: &[u8]) -> RawTxt {
    if message.len() < 12 || &message[..2] != id || message[2] & 0x80 == 0 {
        return RawTxt::Failed("bad-response");
    }
    match message[3] & 0x0f {
        0 => {}
        3 => return RawTxt::NxDomain,
        2 => return RawTxt::Failed("SERVFAIL"),
        5 => return RawTxt::Failed("REFUSED"),
        _ => return RawTxt::Failed("bad-response"),
    }
    let count = |at: usize| usize::from(u16::from_be_bytes([message[at], message[at + 1]]));
    let (questions, answers) = (count(4), count(6));
    let mut at = 12;
    for _ in 0..questions {
        let Some(next) = skip_name(message, at) else { return RawTxt::Failed("bad-response") };
        at = next + 4;
    }
    let mut records = Vec::new();
    let mut ttl = u32::MAX;
    for _ in 0..answers {
        let Some(next) = skip_name(message, at) else { return RawTxt::Failed("bad-response") };
        let Some(fixed) = message.get(next..next + 10) else { return RawTxt::Failed("bad-response") };
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let record_ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let length = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let Some(data) = message.get(next + 10..next + 10 + length) else { return RawTxt::Failed("bad-response") };
        at = next + 10 + length;
        if rtype != 16 {
            continue;
        }
        let Some(strings) = character_strings(data) else { return RawTxt::Failed("bad-response") };
        records.push(strings);
        ttl = ttl.min(record_ttl);
    }
    if records.is_empty() {
        RawTxt::NoRecords
    } else {
        RawTxt::Records(records, ttl)
    }
}

/// The end of the (possibly compressed) name starting at `at`.
fn skip_name(message: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let length = *message.get(at)?;
        match length {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => {
                message.get(at + 1)?;
                return Some(at + 2);
            }
            l if l & 0xc0 == 0 => at += 1 + usize::from(l),
            _ => return None,
        }
    }
}

/// The character-strings of a TXT record's data; none for an empty record.
fn character_strings(mut data: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while let Some((&length, rest)) = data.split_first() {
        let string = rest.get(..usize::from(length))?;
        out.push(string.to_vec());
        data = &rest[usize::from(length)..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: u16, rcode: u8, records: &[(u16, &[u8])]) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[0x81, 0x80 | rcode, 0, 1, 0, records.len() as u8, 0, 0, 0, 0]);
        m.extend_from_slice(b"\x04null\x04test\x00\x00\x10\x00\x01");
        for (rtype, data) in records {
            m.extend_from_slice(&[0xc0, 12]);
            m.extend_from_slice(&rtype.to_be_bytes());
            m.extend_from_slice(&[0, 1, 0, 0, 1, 44]);
            m.extend_from_slice(&(data.len() as u16).to_be_bytes());
            m.extend_from_slice(data);
        }
        m
    }

    #[test]
    fn an_empty_record_is_a_record_of_no_strings() {
        let m = answer(7, 0, &[(16, b"\x0bv=spf1 ip4:\x0e192.0.2.5 -all"), (16, b""), (5, b"\xc0\x0c")]);
        let got = parse_answer(&m, &7u16.to_be_bytes());
        assert_eq!(got, RawTxt::Records(vec![vec![b"v=spf1 ip4:".to_vec(), b"192.0.2.5 -all".to_vec()], vec![]], 300));
    }

    #[test]
    fn codes_and_broken_answers() {
        let id = 9u16.to_be_bytes();
        assert_eq!(parse_answer(&answer(9, 3, &[]), &id), RawTxt::NxDomain);
        assert_eq!(parse_answer(&answer(9, 2, &[]), &id), RawTxt::Failed("SERVFAIL"));
        assert_eq!(parse_answer(&answer(9, 0, &[]), &id), RawTxt::NoRecords);
        assert_eq!(parse_answer(&answer(8, 0, &[]), &id), RawTxt::Failed("bad-response"), "another id");
        let mut cut = answer(9, 0, &[(16, b"\x05hello")]);
        cut.truncate(cut.len() - 2);
        assert_eq!(parse_answer(&cut, &id), RawTxt::Failed("bad-response"));
        let overlong = answer(9, 0, &[(16, b"\x09hi")]);
        assert_eq!(parse_answer(&overlong, &id), RawTxt::Failed("bad-response"));
        for n in 0..40 {
            // Any prefix of a valid answer is refused, never a panic.
            let _ = parse_answer(&answer(9, 0, &[(16, b"\x05hello")])[..n.min(30)], &id);
        }
    }

    #[test]
    fn queries_are_well_formed_or_refused() {
        let q = build_query(&[b"null", b"test"], 0x1234).unwrap();
        assert_eq!(q, b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04null\x04test\x00\x00\x10\x00\x01");
        assert!(build_query(&[b"a", b""], 1).is_none());
        assert!(build_query(&[&[b'x'; 64][..]], 1).is_none());
        let long = [&[b'x'; 63][..]; 5];
        assert!(build_query(&long, 1).is_none());
        let spaced: &[&[u8]] = &[b"with space", b"test"];
        assert!(build_query(spaced, 1).is_some());
    }
}

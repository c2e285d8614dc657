//! `--idle N`: what idle MTA connections cost the milter. Opens N connections (negotiation,
//! CONNECT and HELO each, at most 64 at a time), holds them, reads the milter's memory, then
//! QUITs them all.

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use smtpf_milter::milter::codec::Command;
use tokio::sync::Semaphore;

use crate::load::{hello, pool_client, Tally};
use crate::report::{self, Memory};
use crate::target::{open, Target};

/// `--idle N`: hold N idle connections and report the milter's memory.
pub async fn idle(
    target: &Target,
    n: usize,
    memory_of: &'static str,
    pid: impl Fn(&OnceLock<i32>) -> Option<i32>,
    json: bool,
) -> ExitCode {
    // Idle mode holds many connections: the same raise as the daemon's.
    let limit = smtpf_milter::daemon::raise_open_file_limit();
    let peer_pid = Arc::new(OnceLock::new());
    let sem = Arc::new(Semaphore::new(64));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for j in 0..n {
        let (target, peer_pid, sem) = (target.clone(), peer_pid.clone(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let mut t = Tally::new();
            let client = pool_client(j as u64);
            let c = match open(&target, &peer_pid).await {
                Ok(mut c) => match hello(&mut c, &mut t, &client).await {
                    Ok(true) => Some(c),
                    Ok(false) => None,
                    Err(e) => {
                        t.error(e);
                        None
                    }
                },
                Err(e) => {
                    t.error(e);
                    None
                }
            };
            (c, t)
        });
    }
    let mut held = Vec::with_capacity(n);
    let mut total = Tally::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((c, t)) => {
                held.extend(c);
                total.merge(t);
            }
            Err(e) => total.error(format!("task failed: {e}")),
        }
    }
    let opened_s = start.elapsed().as_secs_f64();
    // CONNECT and HELO usually get no reply: give the milter a moment to process the last ones.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mem = Memory::read(memory_of, pid(&peer_pid));
    let count = held.len();
    for mut c in held {
        let _ = c.send(&Command::Quit).await;
    }
    let limit = limit.map(|l| l.to_string()).unwrap_or_else(|| "unknown".into());
    report::Idle { requested: n, held: count, opened_s, limit: &limit, total: &total, mem: &mem }.print(json);
    if total.errors > 0 || count == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

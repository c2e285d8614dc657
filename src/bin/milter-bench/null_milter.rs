//! The null milter: a responder that negotiates the replies it is told to give and answers
//! "continue" to everything, so what the socket and the protocol alone cost can be measured.
//! `--raw-ceiling` runs it in process on a temporary socket; `serve` runs it on a real socket
//! for an MTA or another bench.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use smtpf_milter::milter::codec::{decode_command, encode_response, read_frame, Command, Response, MAX_PAYLOAD};
use smtpf_milter::milter::listen::SocketSpec;
use smtpf_milter::milter::listen::{Connection, Listener};
use smtpf_milter::milter::negotiate::{negotiate, Needs};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// `serve`: the raw responder on a real socket, until SIGTERM or SIGINT. The socket is bound
/// as the daemon binds `milter-socket`: a live socket (a running milter's) or a file that is not
/// a socket is refused, never replaced.
pub async fn serve(socket: &str, needs: Needs, mode: u32) -> ExitCode {
    let listener = match SocketSpec::parse(socket) {
        Ok(spec) => match Listener::bind(&spec, mode, None).await {
            Ok((l, _)) => l,
            Err(e) => {
                eprintln!("milter-bench: cannot listen on {socket}: {e}");
                return ExitCode::from(2);
            }
        },
        Err(e) => {
            eprintln!("milter-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = Arc::new(listener);
    let accept = tokio::spawn(null_milter(listener.clone(), needs));
    eprintln!("milter-bench: null milter on {} (replies at {})", listener.describe(), needs.reply_steps());
    let stopped = async {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            }
            _ => std::future::pending::<()>().await,
        }
    };
    stopped.await;
    accept.abort();
    let _ = listener.cleanup();
    ExitCode::SUCCESS
}

/// Answers every connection on `listener` with the raw responder, for as long as it runs. An
/// accept error (out of descriptors) pauses instead of ending the loop, as the daemon does.
pub async fn null_milter(listener: Arc<Listener>, needs: Needs) {
    loop {
        match listener.accept().await {
            Ok(Connection::Unix(s)) => drop(tokio::spawn(raw_responder(s, needs))),
            Ok(Connection::Tcp(s)) => drop(tokio::spawn(raw_responder(s, needs))),
            Err(e) => {
                eprintln!("milter-bench: null milter: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Parses `--raw-replies` into what the raw responder negotiates: the body and DATA always (the
/// bench sends them), replies at the steps named.
pub fn parse_raw_replies(text: &str) -> Result<Needs, String> {
    Needs { body: true, data: true, ..Needs::default() }.with_reply_steps(text)
}

/// The `--raw-ceiling` responder: negotiates the replies `needs` names (and every event with the
/// body), and answers "continue" wherever a reply is due.
async fn raw_responder<S: AsyncRead + AsyncWrite + Unpin>(stream: S, needs: Needs) {
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::with_capacity(4096, r);
    let mut buf = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(256);
    let mut neg = None;
    while let Ok(Some(code)) = read_frame(&mut r, MAX_PAYLOAD, &mut buf).await {
        let Ok(cmd) = decode_command(code, &buf) else { break };
        let resp = match &cmd {
            Command::OptNeg { version, actions, protocol } => match negotiate(*version, *actions, *protocol, needs) {
                Ok((resp, n)) => {
                    neg = Some(n);
                    resp
                }
                Err(_) => break,
            },
            Command::Quit => break,
            Command::Macro { .. } | Command::Abort | Command::QuitNewConnection => continue,
            c if neg.is_some_and(|n| n.no_reply(c)) => continue,
            _ => Response::Continue,
        };
        out.clear();
        encode_response(&resp, &mut out);
        if w.write_all(&out).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}

//! The accept loop and the per-connection loop: bytes ⇄ frames ⇄ session.
//!
//! One task per MTA connection. Each read and each write is bounded by `milter-timeout` and each
//! frame by the protocol limit; a protocol error, a peer that stops reading, or even a bug hit by
//! what the peer sent ends that connection with a numbered line and nothing else.
//! Shutdown is graceful: stop accepting, let sessions finish, and after the deadline close the rest
//! between two commands so that each still logs its #721.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{watch, Notify};

use crate::log::catalog;
use crate::milter::codec::{decode_command, encode_response, read_frame, take_buffered_frame, FrameError, MAX_PAYLOAD};
use crate::milter::listen::{Connection, Listener};
use crate::session::{Session, Step};
use crate::shared::Shared;

/// Tells running sessions to stop at their next read.
#[derive(Clone)]
pub struct Kill(watch::Receiver<bool>);

/// Runs one accepted connection to its end: [`serve_milter`] for the milter socket, the policy
/// door's for `policy-socket`.
pub type Serve = fn(Connection, Arc<Shared>, Kill) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// The milter socket's [`Serve`].
pub fn serve_milter(conn: Connection, shared: Arc<Shared>, kill: Kill) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        match conn {
            Connection::Unix(s) => serve_connection(s, shared, kill).await,
            Connection::Tcp(s) => serve_connection(s, shared, kill).await,
        }
    })
}

/// Serves connections with `serve` until `stop` turns true; then returns, leaving open
/// sessions running. Every connection counts in the open-connection total the graceful stop
/// waits for, whichever door it came through.
pub async fn accept_loop(
    listener: &Listener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    kill: Kill,
    idle: Arc<Notify>,
    serve: Serve,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let accepted = tokio::select! {
            _ = stop.changed() => continue,
            a = listener.accept() => a,
        };
        match accepted {
            Ok(conn) => {
                let open = OpenConnection::count(shared.clone(), idle.clone());
                let kill = kill.clone();
                tokio::spawn(async move {
                    // Dropped when the task ends, panic included: `cn=` and the shutdown's wait
                    // for open sessions never count a connection that is gone.
                    let _open = open;
                    let shared = _open.shared.clone();
                    serve(conn, shared, kill).await;
                });
            }
            Err(e) => {
                // Typically EMFILE: pause instead of spinning, open sessions carry on.
                let cn = shared.active.load(Ordering::Relaxed);
                shared.log.emit(&catalog::ACCEPT_ERROR, None, &[&crate::log::os_error(&e), &shared.workers, &cn]);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One open MTA connection in the daemon's count, for as long as this value lives.
struct OpenConnection {
    shared: Arc<Shared>,
    idle: Arc<Notify>,
}

impl OpenConnection {
    fn count(shared: Arc<Shared>, idle: Arc<Notify>) -> OpenConnection {
        shared.active.fetch_add(1, Ordering::SeqCst);
        OpenConnection { shared, idle }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if self.shared.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }
}

/// The text of a caught panic.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(s), _) => s.to_string(),
        (_, Some(s)) => s.clone(),
        _ => "panic".to_string(),
    }
}

impl Kill {
    /// A kill switch and its trigger.
    pub fn new() -> (watch::Sender<bool>, Kill) {
        let (tx, rx) = watch::channel(false);
        (tx, Kill(rx))
    }

    /// Whether the kill switch was thrown.
    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until the kill switch is thrown (for ever, if its trigger is gone unthrown).
    pub async fn thrown(&mut self) {
        while !*self.0.borrow_and_update() {
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Runs one milter connection to its end.
pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(stream: S, shared: Arc<Shared>, mut kill: Kill) {
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::with_capacity(4096, r);
    let mut session = Session::new(shared.clone());
    let read_timeout = session.config().milter_timeout;
    let mut buf = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(256);
    loop {
        if *kill.0.borrow() {
            break;
        }
        // A frame already received needs no wait, hence no timeout or kill watch.
        let buffered = match take_buffered_frame(r.buffer(), MAX_PAYLOAD, &mut buf) {
            Some((code, used)) => {
                std::pin::Pin::new(&mut r).consume(used);
                Some(code)
            }
            None => None,
        };
        let frame = match buffered {
            Some(code) => Ok(Ok(Some(code))),
            None => tokio::select! {
                _ = kill.0.changed() => break,
                f = tokio::time::timeout(read_timeout, read_frame(&mut r, MAX_PAYLOAD, &mut buf)) => f,
            },
        };
        let code = match frame {
            Err(_) => {
                shared.log.emit(&catalog::READ_TIMEOUT, Some(&session.sid), &[&read_timeout.as_secs()]);
                break;
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(code))) => code,
            Ok(Err(FrameError::Io(e))) => {
                session.io_error();
                shared.log.emit(&catalog::IO_ERROR, Some(&session.sid), &[&e]);
                break;
            }
            Ok(Err(e)) => {
                shared.log.emit(&catalog::PROTOCOL_ERROR, Some(&session.sid), &[&e]);
                break;
            }
        };
        let cmd = match decode_command(code, &buf) {
            Ok(c) => c,
            Err(e) => {
                shared.log.emit(&catalog::PROTOCOL_ERROR, Some(&session.sid), &[&e]);
                break;
            }
        };
        // A bug reached by what the peer sent ends this connection only, with a line saying so.
        let step = match AssertUnwindSafe(session.handle(cmd)).catch_unwind().await {
            Ok(Ok(s)) => s,
            Ok(Err(why)) => {
                shared.log.emit(&catalog::PROTOCOL_ERROR, Some(&session.sid), &[&why]);
                break;
            }
            Err(panic) => {
                shared.log.emit(&catalog::SESSION_PANIC, Some(&session.sid), &[&panic_text(panic.as_ref())]);
                break;
            }
        };
        match step {
            Step::Silent => {}
            Step::Close => break,
            Step::Respond(responses) => {
                out.clear();
                for r in &responses {
                    encode_response(r, &mut out);
                }
                // A peer that stops reading must not hold the session: writes obey milter-timeout.
                // Almost every answer fits the socket buffer at once; only the rest, if any,
                // waits under a timer (arming one per answer costs a clock read each time).
                let written = match w.write(&out).now_or_never() {
                    Some(Ok(n)) => Ok(n),
                    Some(Err(e)) => Err(Some(e)),
                    None => Ok(0),
                };
                let outcome = match written {
                    Ok(n) if n == out.len() => Ok(()),
                    Ok(n) => match tokio::time::timeout(read_timeout, w.write_all(&out[n..])).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(Some(e)),
                        Err(_) => Err(None),
                    },
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(()) => {}
                    Err(Some(e)) => {
                        session.io_error();
                        shared.log.emit(&catalog::IO_ERROR, Some(&session.sid), &[&e]);
                        break;
                    }
                    Err(None) => {
                        session.io_error();
                        shared.log.emit(&catalog::WRITE_TIMEOUT, Some(&session.sid), &[&read_timeout.as_secs()]);
                        break;
                    }
                }
            }
        }
        // Idle sessions must not pin 64 KiB body buffers (thousands of MTA connections wait idle).
        if buf.capacity() > 16 * 1024 {
            buf = Vec::with_capacity(4096);
        }
    }
    // The shutdown write obeys the timeout too; the summary line is written whatever happened.
    let _ = tokio::time::timeout(read_timeout, w.shutdown()).await;
    if let Err(panic) = AssertUnwindSafe(async { session.end() }).catch_unwind().await {
        shared.log.emit(&catalog::SESSION_PANIC, Some(&session.sid), &[&panic_text(panic.as_ref())]);
    }
}

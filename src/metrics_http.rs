//! The `/metrics` endpoint (`metrics-listen`): a small HTTP/1.1 server on hyper that answers
//! `GET /metrics` with the exposition text of [`crate::metrics::Metrics`], and a task that counts
//! greylist records by state once a minute so that a scrape never scans the store.
//!
//! It is started after the milter socket and never stops mail: an address that cannot be opened
//! is logged (#2068) and the daemon serves without it. The address is bound by the milter
//! socket's own code. A client must send its request headers within 10 s and is done within
//! 30 s, each connection carries one request (no keep-alive), at most 16 connections are served
//! at once, and anything other than `GET /metrics` gets 404 or 405.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::log::catalog;
use crate::metrics::{Metrics, MetricsListen};
use crate::milter::listen::{Connection, Listener, SocketSpec};
use crate::shared::Shared;

/// The content type of the OpenMetrics text prometheus-client writes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// How often greylist records are counted by state.
const RECORDS_EVERY: Duration = Duration::from_secs(60);

/// The answer to one HTTP request.
fn respond(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, body, content_type) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, metrics.render(), CONTENT_TYPE),
        (_, "/metrics") => (StatusCode::METHOD_NOT_ALLOWED, "only GET\n".to_string(), "text/plain"),
        _ => (StatusCode::NOT_FOUND, "smtpf-milter serves /metrics only\n".to_string(), "text/plain"),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

/// Scrapes served at once; a connection beyond them is closed at once (a scraper needs one).
const MAX_CONNECTIONS: usize = 16;
/// Longest life of one HTTP connection, so a client that stops reading cannot hold a slot.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// Mode of a unix metrics socket: the daemon's user and group (add the scraper to the group).
const UNIX_MODE: u32 = 0o660;

/// Serves one accepted connection, holding one of the [`MAX_CONNECTIONS`] slots.
fn serve<S>(stream: S, metrics: Arc<Metrics>, slot: tokio::sync::OwnedSemaphorePermit)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let m = metrics.clone();
            async move { Ok::<_, Infallible>(respond(&m, &req)) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            // One scrape per connection: a kept-alive connection would meet the lifetime bound
            // below in the middle of a later scrape and cut it off.
            .keep_alive(false)
            .serve_connection(TokioIo::new(stream), service);
        let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        drop(slot);
    });
}

/// The address as the milter socket code binds it.
fn socket_spec(listen: &MetricsListen) -> SocketSpec {
    match listen {
        MetricsListen::Tcp(a) => SocketSpec::Inet { host: a.ip().to_string(), port: a.port(), v6: a.is_ipv6() },
        MetricsListen::Unix(path) => SocketSpec::Unix(path.clone()),
    }
}

/// Opens `listen` the way the milter socket is opened (a stale unix socket is replaced, a live
/// one or a file that is not a socket is refused), logs the outcome, and serves until the
/// returned task is aborted; the listener is returned too, for [`Listener::cleanup`] at stop.
/// None when the address cannot be opened (logged; mail is served all the same).
pub async fn start(listen: &MetricsListen, shared: Arc<Shared>) -> Option<(tokio::task::JoinHandle<()>, Arc<Listener>)> {
    let listener = match Listener::bind(&socket_spec(listen), UNIX_MODE, None).await {
        Ok((l, _)) => Arc::new(l),
        Err(e) => {
            shared.log.emit(&catalog::METRICS_ERROR, None, &[listen, &e]);
            return None;
        }
    };
    let metrics = shared.metrics.clone();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let accepting = listener.clone();
    let task = tokio::spawn(async move {
        loop {
            let connection = match accepting.accept().await {
                Ok(c) => c,
                // Out of descriptors and the like: try again shortly.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Over the limit: dropping the connection closes it.
            let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
            match connection {
                Connection::Tcp(s) => serve(s, metrics.clone(), slot),
                Connection::Unix(s) => serve(s, metrics.clone(), slot),
            }
        }
    });
    shared.log.emit(&catalog::METRICS_READY, None, &[listen]);
    Some((task, listener))
}

/// Counts greylist records by state now and then every minute, for the
/// `smtpf_milter_greylist_records` gauge.
pub fn count_records(shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            refresh_records(&shared).await;
            tokio::time::sleep(RECORDS_EVERY).await;
        }
    })
}

/// Counts greylist records by state now (one range query of the store); a store error leaves
/// the previous counts.
pub async fn refresh_records(shared: &Shared) {
    let Some(store) = shared.store() else { return };
    let now = shared.now();
    if let Ok(stats) = store.stats("grey:", now).await {
        let by = |code: &str| stats.live_by_code.get(code).copied().unwrap_or(0) as i64;
        let hosts = stats.live_passed_without_address as i64;
        shared.metrics.set_records(by("4"), by("0") - hosts, hosts, now);
    }
}

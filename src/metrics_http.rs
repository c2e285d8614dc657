//! The `/metrics` endpoint (`metrics-listen`): a small HTTP/1.1 server on hyper that answers
//! `GET /metrics` with the exposition text of [`crate::metrics::Metrics`], and a task that counts
//! greylist records by state once a minute so that a scrape never scans the store.
//!
//! It is started after the milter socket and never stops mail: an address that cannot be opened
//! is logged (#2068) and the daemon serves without it. A client must send its request headers
//! within 10 s, and anything other than `GET /metrics` gets 404 or 405.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, UnixListener};

use crate::log::catalog;
use crate::metrics::{Metrics, MetricsListen};
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

/// Serves one accepted connection.
fn serve<S>(stream: S, metrics: Arc<Metrics>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let m = metrics.clone();
            async move { Ok::<_, Infallible>(respond(&m, &req)) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
}

/// Opens `listen`, logs the outcome, and serves until the returned task is aborted. None when
/// the address cannot be opened (logged; mail is served all the same).
pub async fn start(listen: &MetricsListen, shared: Arc<Shared>) -> Option<tokio::task::JoinHandle<()>> {
    let log = shared.log.clone();
    let metrics = shared.metrics.clone();
    let fail = |e: &dyn std::fmt::Display| {
        log.emit(&catalog::METRICS_ERROR, None, &[listen, e]);
        None
    };
    let task = match listen {
        MetricsListen::Tcp(addr) => {
            let listener = match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => return fail(&crate::log::os_error(&e)),
            };
            tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => serve(stream, metrics.clone()),
                        // Out of descriptors and the like: try again shortly.
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            })
        }
        MetricsListen::Unix(path) => {
            // A socket left by a previous run is replaced; anything else in the way is not.
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                use std::os::unix::fs::FileTypeExt;
                if !meta.file_type().is_socket() {
                    return fail(&"a file that is not a socket is in the way");
                }
                let _ = std::fs::remove_file(path);
            }
            let listener = match UnixListener::bind(path) {
                Ok(l) => l,
                Err(e) => return fail(&crate::log::os_error(&e)),
            };
            tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => serve(stream, metrics.clone()),
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            })
        }
    };
    log.emit(&catalog::METRICS_READY, None, &[listen]);
    Some(task)
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

//! The HTTP listener behind the producer's API and the worker's and reaper's probes: an axum
//! router on hyper's HTTP/1 connection, with the limits `axum::serve` does not offer.
//!
//! * **Header read timeout**: a connection that does not finish a request's headers in time is
//!   closed; the clock also runs while a kept-alive connection waits for its next request, so
//!   it is the idle timeout too.
//! * **Body timeout and size**: a request body must arrive whole within its deadline (408
//!   otherwise), however slowly it drips, and stay under the size limit (413). The body is
//!   streamed, not buffered here: a request the router refuses first (no bearer token) is never
//!   read.
//! * **Connection cap**: beyond it a new connection is answered `503` and closed at once, so
//!   idle or slow clients cannot take every file descriptor.

use std::convert::Infallible;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::StatusCode;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request's headers must arrive within this (also the idle keep-alive timeout).
    pub header_read_timeout: Duration,
    /// A request's body must arrive within this.
    pub body_timeout: Duration,
    /// Largest body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Open connections at most; more are answered 503 and closed.
    pub max_connections: usize,
}

impl HttpLimits {
    /// The producer's API: documents up to `max_body_bytes`.
    pub fn api(max_body_bytes: usize) -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_body_bytes,
            max_connections: 256,
        }
    }

    /// Probes and metrics: no bodies, few clients.
    pub fn probes() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(5),
            max_body_bytes: 64 * 1024,
            max_connections: 64,
        }
    }
}

const OVER_CAPACITY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
content-length: 47\r\nconnection: close\r\n\r\n{\"error\":\"too many connections, retry shortly\"}";

/// Serves `router` on `listener` until `shutdown`, then lets in-flight requests finish (the
/// caller bounds how long it waits for the returned future).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    loop {
        let (mut stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = limits.max_connections, "connection cap reached; refusing a connection");
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), stream.write_all(OVER_CAPACITY))
                        .await;
            });
            continue;
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let router = router.clone();
            async move { Ok::<_, Infallible>(handle(router, request, limits).await) }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Runs the router on the request with its body streamed through the deadline and the size
/// limit — not buffered here, so the router's own layers (authentication first) decide
/// whether the body is read at all, and its handlers answer an oversized body themselves
/// (axum sees the limit error as 413).
async fn handle(router: Router, request: Request<Incoming>, limits: HttpLimits) -> Response {
    let timed_out = Arc::new(AtomicBool::new(false));
    let (parts, body) = request.into_parts();
    let body = DeadlineBody {
        inner: body,
        deadline: Box::pin(tokio::time::sleep(limits.body_timeout)),
        timed_out: timed_out.clone(),
    };
    let body = Body::new(http_body_util::Limited::new(body, limits.max_body_bytes));
    let response = match router.oneshot(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    // Whatever the handler made of the failed read, the client was too slow.
    if timed_out.load(Ordering::SeqCst) {
        return refusal(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {}s",
                limits.body_timeout.as_secs()
            ),
        );
    }
    response
}

/// A request body that must arrive whole by a deadline, however slowly it drips: past it, the
/// next read fails and `timed_out` is set.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timed_out: Arc<AtomicBool>,
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.timed_out.store(true, Ordering::SeqCst);
            return Poll::Ready(Some(Err("the request body did not arrive in time".into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn refusal(status: StatusCode, message: impl Into<String>) -> Response {
    let mut response = (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response();
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

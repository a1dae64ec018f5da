//! The listener's limits, over real sockets: silent, idle and slow clients are cut off, and
//! beyond the connection cap new connections are refused while the served ones keep working.

use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;
use buyonce_shared::http_server::{serve, HttpLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const LIMITS: HttpLimits = HttpLimits {
    header_read_timeout: Duration::from_millis(400),
    body_timeout: Duration::from_millis(600),
    max_body_bytes: 1024,
    max_connections: 4,
};

async fn start() -> (std::net::SocketAddr, CancellationToken) {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/echo", post(|body: String| async move { body }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, router, LIMITS, shutdown.clone()));
    (addr, shutdown)
}

/// Reads until the peer closes (or 5 s pass): what it sent, and how long it took.
async fn read_until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let (addr, shutdown) = start().await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let (_, took) = read_until_closed(&mut silent).await;
    assert!(took < Duration::from_secs(3), "closed after {took:?}");

    // Half a request line, then nothing: closed too.
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x")
        .await
        .unwrap();
    let (_, took) = read_until_closed(&mut partial).await;
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
    shutdown.cancel();
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let (addr, shutdown) = start().await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, took) = read_until_closed(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        took < Duration::from_secs(3),
        "idle connection kept {took:?}"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn a_body_that_drips_is_answered_408() {
    let (addr, shutdown) = start().await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    // A byte every 200 ms: each frame is on time, the whole body is not.
    let drip = async {
        for _ in 0..20 {
            if client.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(1500), drip).await;
    let (answer, _) = read_until_closed(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A body over the limit: 413.
    let mut big = TcpStream::connect(addr).await.unwrap();
    big.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n")
        .await
        .unwrap();
    let _ = big.write_all(&[b'x'; 2000]).await;
    let (answer, _) = read_until_closed(&mut big).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // A body in time is echoed.
    let mut ok = TcpStream::connect(addr).await.unwrap();
    ok.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await
    .unwrap();
    let (answer, _) = read_until_closed(&mut ok).await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello"),
        "{answer}"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn beyond_the_cap_new_connections_get_503_and_served_ones_keep_working() {
    let (addr, shutdown) = start().await;
    let mut held = Vec::new();
    for _ in 0..LIMITS.max_connections {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    // Let the server accept them all.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut refused = TcpStream::connect(addr).await.unwrap();
    let (answer, took) = read_until_closed(&mut refused).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(took < Duration::from_secs(1), "{took:?}");

    // One of the held connections is still served.
    let first = &mut held[0];
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_until_closed(first).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Once the idle ones time out, new connections are served again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = TcpStream::connect(addr).await.unwrap();
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut again).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    shutdown.cancel();
}

//! One client connection: the optional TLS handshake, then HTTP/1.1 with a
//! header-read timeout, until the client leaves or the server stops.
//!
//! The connection holds one of [`crate::serve`]'s slots for its whole life
//! and gives it back when it ends, however it ends.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tower::ServiceExt as _;

/// What [`serve`] needs of the accept loop.
pub(crate) struct Conn {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Returned when this connection ends.
    pub slot: crate::limits::Slot,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub header_timeout: Duration,
    /// Becomes `true` when the server stops: finish the request in flight,
    /// then close.
    pub stop: watch::Receiver<bool>,
}

/// Serves one connection to its end.
pub(crate) async fn serve(conn: Conn, app: Router) {
    let Conn {
        stream,
        peer,
        slot,
        tls,
        header_timeout,
        mut stop,
    } = conn;
    let _slot = slot;
    let _ = stream.set_nodelay(true);
    // What `into_make_service_with_connect_info` does: the rate limiter
    // reads the peer's address from the request.
    let service = app.map_request(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    });
    let service = TowerToHyperService::new(service);
    let Some(acceptor) = tls else {
        return http(TokioIo::new(stream), service, header_timeout, stop).await;
    };
    // The handshake counts against the header timeout: a client that opens
    // a TLS connection and says nothing is closed as one that sends no
    // request line would be.
    let handshake = tokio::select! {
        r = tokio::time::timeout(header_timeout, acceptor.accept(stream)) => r,
        () = stopped(&mut stop) => return,
    };
    match handshake {
        Ok(Ok(tls_stream)) => http(TokioIo::new(tls_stream), service, header_timeout, stop).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

async fn http<I, S>(
    io: TokioIo<I>,
    service: TowerToHyperService<S>,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<
            hyper::Request<Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper starts the header timer whenever it waits for a request head:
    // on a new connection and between kept-alive requests.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Header timeouts, clients that hang up: normal on the Internet.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Resolves once the server stops. (The guard `wait_for` returns is not
/// `Send`; this drops it before the caller awaits anything else.)
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

//! The HTTP server under the services: one port for HTTP/2 (gRPC) and HTTP/1.1 (gRPC-Web, and
//! connection upgrades), with the connection settings of the configuration and a shutdown that
//! follows the grace period.
//!
//! Each accepted connection is served by `hyper-util`'s automatic HTTP/1.1-or-2 builder in its
//! own task, over a socket that coalesces HTTP/2 writes ([`coalesce`]).
//! [`Transport::shutdown`] stops accepting, asks every connection to finish (HTTP/2 GOAWAY;
//! HTTP/1.1 closes after the response in progress) and waits for them up to the time it is
//! given; connections still open then are closed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::{coalesce, observe};

/// Connection settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// The largest HTTP/2 frame peers may send.
    pub max_frame_size: u32,
    /// Connections older than this are asked to finish (clients then reconnect).
    pub max_connection_age: Option<Duration>,
}

/// A running server: its accept loop and its connections.
pub struct Transport {
    connections: TaskTracker,
    /// Asks every connection to finish its calls and close.
    finish: CancellationToken,
    /// Closes every connection at once.
    close: CancellationToken,
}

/// Accepts connections on `listener` and serves each with `service`, until [`Transport::shutdown`].
pub fn spawn<S, B>(listener: TcpListener, service: S, settings: Settings) -> Transport
where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let transport = Transport {
        connections: TaskTracker::new(),
        finish: CancellationToken::new(),
        close: CancellationToken::new(),
    };
    let builder = builder(&settings);
    let (connections, finish, close) =
        (transport.connections.clone(), transport.finish.clone(), transport.close.clone());
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = finish.cancelled() => break,
                a = listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // pause briefly rather than spin, and keep serving.
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let conn = serve_connection(
                stream,
                peer,
                builder.clone(),
                service.clone(),
                settings.max_connection_age,
                finish.clone(),
                close.clone(),
            );
            connections.spawn(conn);
        }
    });
    transport
}

/// Flow-control windows of an HTTP/2 connection and of each stream on it. h2 closes a connection
/// (GOAWAY ENHANCE_YOUR_CALM "too_many_data_frames") when the DATA frames under 256 bytes it holds
/// unread cost more than half the connection window in framing overhead (256 bytes less each
/// payload). A stream of tiny chunks sent faster than its pipeline runs (20 samples a chunk,
/// 100-byte frames) filled hyper's 1 MiB windows with about 1.5 MiB of such overhead, against a
/// 512 KiB allowance, and lost its connection (`tests/test_stream.py`). With an 8 MiB connection
/// window (a 4 MiB allowance) and 512 KiB per stream, one stream's unread frames cost at most
/// 0.8 MiB of overhead at 100-byte frames and 2.7 MiB at 40-byte ones (one-sample chunks); a
/// connection holds at most 8 MiB of unread request data, and 512 KiB per stream still lets a
/// 10 MB/s upload through at 50 ms of round trip.
const CONNECTION_WINDOW: u32 = 8 << 20;
const STREAM_WINDOW: u32 = 512 << 10;
/// Streams the client reset before the server took them up, at once, past which a connection
/// is closed (GOAWAY `too_many_resets`, the defence against rapid-reset floods). h2's 20 was
/// reached by an ordinary grpcio client making 50 calls at a time with 10 ms deadlines (each
/// expiry is a RST_STREAM), and the GOAWAY killed that connection's other calls and streams.
/// A flood still meets the limit: 200 is hyper's own cap on concurrent streams.
const MAX_PENDING_ACCEPT_RESETS: usize = 200;

fn builder(settings: &Settings) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(settings.keepalive_interval)
        .keep_alive_timeout(settings.keepalive_timeout)
        .max_frame_size(settings.max_frame_size)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .initial_stream_window_size(STREAM_WINDOW)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS);
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder
}

async fn serve_connection<S, B>(
    stream: TcpStream,
    peer: SocketAddr,
    builder: Builder<TokioExecutor>,
    service: S,
    max_age: Option<Duration>,
    finish: CancellationToken,
    close: CancellationToken,
) where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Small responses must not wait for the peer's delayed ACK (about 40 ms on Linux).
    if let Err(e) = stream.set_nodelay(true) {
        debug!(error = %e, %peer, "cannot turn Nagle's algorithm off");
    }
    let mut conn = coalesce::wrap(stream, observe::http2_writes(), |socket| {
        builder.serve_connection_with_upgrades(TokioIo::new(socket), TowerToHyperService::new(service))
    });
    let aged = async {
        match max_age {
            Some(age) => tokio::time::sleep(age).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = &mut conn => return log_end(r, peer),
        () = close.cancelled() => return,
        () = finish.cancelled() => conn.conn().graceful_shutdown(),
        () = aged => conn.conn().graceful_shutdown(),
    }
    tokio::select! {
        r = conn => log_end(r, peer),
        () = close.cancelled() => {}
    }
}

fn log_end(result: Result<(), Box<dyn std::error::Error + Send + Sync>>, peer: SocketAddr) {
    if let Err(e) = result {
        debug!(error = %e, %peer, "connection ended with an error");
    }
}

impl Transport {
    /// Stops accepting and asks every connection to finish, then waits for them for at most
    /// `within`. Returns whether they all closed in time; those that did not are closed now.
    pub async fn shutdown(self, within: Duration) -> bool {
        self.finish.cancel();
        self.connections.close();
        let closed = tokio::time::timeout(within, self.connections.wait()).await.is_ok();
        self.close.cancel();
        // Closing is immediate: each task returns at its next poll.
        self.connections.wait().await;
        closed
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.connections.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_closes_idle_connections_at_once() {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = tower::service_fn(|_req: http::Request<Incoming>| async {
            Ok::<_, Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
        });
        let settings = Settings {
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_frame_size: 16_384,
            max_connection_age: None,
        };
        let transport = spawn(listener, service, settings);
        let mut client = TcpStream::connect(addr).await.unwrap();
        while transport.connections() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(transport.shutdown(Duration::from_secs(5)).await, "an idle connection closes at once");
        let mut buf = [0u8; 1];
        assert_eq!(client.read(&mut buf).await.unwrap(), 0, "the server closed the connection");
    }
}

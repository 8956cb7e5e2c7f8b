//! Write coalescing for HTTP/2 connections.
//!
//! h2 sends every DATA frame longer than 256 bytes with a `writev` of its own, and the
//! connection's task runs as soon as a stream hands it a frame, so a connection carrying many
//! live streams made one system call per streamed result: 10–14 % of the server's CPU at
//! 200 streams in `perf`, plus a wake-up of the client per result. Here the connection's
//! socket collects what h2 writes, and the connection task sends it after one pass of the
//! runtime's queue: the results the other ready tasks produce in that pass leave in the same
//! system call. A result waits at most for that one pass. At 200 streams this makes 0.3 writes
//! per result and saves about 15 % of the server's CPU per chunk (`bench/ab_cost.py`,
//! BENCHMARKS.md "Coalesced HTTP/2 writes").
//!
//! Only HTTP/2 connections (recognised by their preface) are coalesced. HTTP/1.1 connections
//! (gRPC-Web, WebSocket upgrades) write through, since an upgraded socket outlives the
//! connection future that drives the coalescing.
//!
//! [`Socket`] is the I/O hyper reads and writes; [`Coalesced`] wraps the connection's future
//! and does the deferred writes. They share one buffered stream behind a mutex that only the
//! connection's task takes, so it is never contended.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use metrics::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Most bytes collected: a write that would go past it sends what was collected and then goes
/// straight to the socket, so a large response (a unary call's seconds of audio) is neither
/// copied nor held, and a connection's buffer stays this small.
const HIGH_WATER: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing read yet.
    Unknown,
    /// HTTP/2: writes are collected and sent by [`Coalesced`].
    Coalesce,
    /// Anything else: writes go straight to the socket.
    Direct,
}

/// A TCP stream with the bytes written to it and not yet sent.
struct Buffered {
    stream: TcpStream,
    mode: Mode,
    out: Vec<u8>,
    /// Bytes at the start of `out` already sent.
    sent: usize,
    /// A send error from a deferred write, handed to hyper at its next read or write.
    error: Option<io::Error>,
    /// `write`/`writev` system calls made in HTTP/2 mode.
    writes: Counter,
}

impl Buffered {
    fn unsent(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Sends collected bytes until none are left or the socket is full (then the task is woken
    /// when it can write again).
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &self.out[self.sent..]))?;
            self.writes.increment(1);
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    fn take_error(&mut self) -> io::Result<()> {
        self.error.take().map_or(Ok(()), Err)
    }
}

/// The I/O of one connection, as hyper sees it.
pub struct Socket(Arc<Mutex<Buffered>>);

/// A connection's future, sending what its [`Socket`] collected once per pass of the
/// runtime's queue.
pub struct Coalesced<F> {
    conn: Pin<Box<F>>,
    socket: Arc<Mutex<Buffered>>,
    /// The task has let the queue run once since bytes were collected.
    yielded: bool,
}

/// Wraps an accepted stream; `serve` builds the connection's future over the [`Socket`].
pub fn wrap<F>(stream: TcpStream, writes: Counter, serve: impl FnOnce(Socket) -> F) -> Coalesced<F> {
    let socket =
        Arc::new(Mutex::new(Buffered { stream, mode: Mode::Unknown, out: Vec::new(), sent: 0, error: None, writes }));
    Coalesced { conn: Box::pin(serve(Socket(socket.clone()))), socket, yielded: false }
}

fn lock(socket: &Mutex<Buffered>) -> MutexGuard<'_, Buffered> {
    // Only the connection's task takes the lock; a panic there ends the connection anyway.
    socket.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<F> Coalesced<F> {
    /// The connection's future (for a graceful shutdown).
    pub fn conn(&mut self) -> Pin<&mut F> {
        self.conn.as_mut()
    }
}

impl<F: Future> Future for Coalesced<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let out = this.conn.as_mut().poll(cx);
        if out.is_ready() {
            // hyper shut the socket down, which sent everything collected.
            return out;
        }
        let mut socket = lock(&this.socket);
        if socket.unsent() == 0 {
            this.yielded = false;
            return Poll::Pending;
        }
        if !this.yielded {
            // Waking itself puts the task at the back of the queue: the tasks ahead of it
            // (streams woken by the same read) add their frames before the send.
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.yielded = false;
        if let Poll::Ready(Err(e)) = socket.poll_send(cx) {
            // hyper learns of it at its next read or write, in the next poll.
            socket.error = Some(e);
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut socket = lock(&self.0);
        socket.take_error()?;
        let start = buf.filled().len();
        ready!(Pin::new(&mut socket.stream).poll_read(cx, buf))?;
        if socket.mode == Mode::Unknown {
            let read = &buf.filled()[start..];
            let n = read.len().min(PREFACE.len());
            socket.mode = if n > 0 && read[..n] == PREFACE[..n] { Mode::Coalesce } else { Mode::Direct };
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut socket = lock(&self.0);
        socket.take_error()?;
        if socket.mode != Mode::Coalesce {
            // Nothing is ever collected outside HTTP/2 mode.
            return Pin::new(&mut socket.stream).poll_write_vectored(cx, bufs);
        }
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if socket.unsent() + len > HIGH_WATER {
            // What was collected goes first, then the large write straight from h2's buffers:
            // no copy, and the collected bytes never exceed HIGH_WATER.
            ready!(socket.poll_send(cx))?;
            let written = ready!(Pin::new(&mut socket.stream).poll_write_vectored(cx, bufs))?;
            socket.writes.increment(1);
            return Poll::Ready(Ok(written));
        }
        for b in bufs {
            socket.out.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        // h2 then hands over large payloads without copying them into its own buffer first.
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut socket = lock(&self.0);
        socket.take_error()?;
        if socket.mode == Mode::Coalesce {
            // Sent by `Coalesced` after this pass; the task is polled again for it.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut socket.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut socket = lock(&self.0);
        ready!(socket.poll_send(cx))?;
        Pin::new(&mut socket.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicU64, Ordering};

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::{Barrier, mpsc};
    use tokio::task::JoinHandle;

    use super::*;

    /// Serves HTTP/2 (or HTTP/1.1) connections over coalescing sockets: each request waits at
    /// `barrier`, then gets `body_len` bytes of 7s. Returns the address, the write counter and
    /// the connections' tasks.
    async fn serve(
        http2: bool,
        barrier: Arc<Barrier>,
        body_len: usize,
    ) -> (std::net::SocketAddr, Arc<AtomicU64>, mpsc::UnboundedReceiver<JoinHandle<hyper::Result<()>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let writes = Arc::new(AtomicU64::new(0));
        let counter = Counter::from_arc(writes.clone());
        let (conns_tx, conns) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let barrier = barrier.clone();
                let service = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    let barrier = barrier.clone();
                    async move {
                        barrier.wait().await;
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(vec![7u8; body_len]))))
                    }
                });
                let conn = wrap(stream, counter.clone(), |socket| async move {
                    if http2 {
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(socket), service)
                            .await
                    } else {
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(socket), service).await
                    }
                });
                let _ = conns_tx.send(tokio::spawn(conn));
            }
        });
        (addr, writes, conns)
    }

    /// Sends `n` HTTP/2 requests on one connection and returns each response body's length.
    async fn h2_requests(addr: std::net::SocketAddr, n: usize) -> Vec<usize> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        let mut client = client.ready().await.unwrap();
        let mut pending = Vec::new();
        for _ in 0..n {
            let (response, _) =
                client.send_request(http::Request::post("http://test/").body(()).unwrap(), true).unwrap();
            pending.push(response);
            client = client.ready().await.unwrap();
        }
        // Read concurrently: data buffered for an unread stream holds connection window.
        futures::future::join_all(pending.into_iter().map(|response| async move {
            let mut body = response.await.unwrap().into_body();
            let mut len = 0;
            while let Some(data) = body.data().await {
                let data = data.unwrap();
                assert!(data.iter().all(|b| *b == 7), "the body arrives intact");
                len += data.len();
                body.flow_control().release_capacity(data.len()).unwrap();
            }
            len
        }))
        .await
    }

    #[tokio::test]
    async fn responses_ready_together_leave_in_few_writes() {
        // 32 responses of 1000 bytes (each a DATA frame h2 would send with a writev of its own)
        // become ready in the same pass.
        const N: usize = 32;
        let (addr, writes, _) = serve(true, Arc::new(Barrier::new(N)), 1000).await;
        assert_eq!(h2_requests(addr, N).await, vec![1000; N]);
        let writes = writes.load(Ordering::Relaxed);
        assert!(writes > 0, "the HTTP/2 connection is coalesced");
        assert!(writes < N as u64 / 4, "{writes} writes for {N} responses written together");
    }

    #[tokio::test]
    async fn large_responses_go_out_past_the_high_water_mark() {
        // 4 × 1 MiB against the client's 64 KiB flow-control window: the socket's buffer fills
        // and drains many times.
        let (addr, writes, _) = serve(true, Arc::new(Barrier::new(1)), 1 << 20).await;
        assert_eq!(h2_requests(addr, 4).await, vec![1 << 20; 4]);
        assert!(writes.load(Ordering::Relaxed) >= 4 * 16, "every 64 KiB goes out as it comes");
    }

    #[tokio::test]
    async fn http1_writes_through() {
        let (addr, writes, _) = serve(false, Arc::new(Barrier::new(1)), 5).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut response = String::new();
        tcp.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("\u{7}\u{7}\u{7}\u{7}\u{7}"), "{response:?}");
        assert_eq!(writes.load(Ordering::Relaxed), 0, "nothing is held back on HTTP/1.1");
    }

    #[tokio::test]
    async fn a_peer_that_goes_away_ends_the_connection() {
        let barrier = Arc::new(Barrier::new(2));
        let (addr, _, mut conns) = serve(true, barrier.clone(), 1000).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        let client_conn = tokio::spawn(conn);
        let mut client = client.ready().await.unwrap();
        let (response, _) = client.send_request(http::Request::post("http://test/").body(()).unwrap(), true).unwrap();
        let server_conn = conns.recv().await.unwrap();
        drop((client, response));
        client_conn.abort();
        // The request is parked at the barrier; released, the server writes its response into
        // a closed socket. The connection must end (not hang, not panic).
        barrier.wait().await;
        let ended = tokio::time::timeout(std::time::Duration::from_secs(30), server_conn).await;
        assert!(ended.expect("the server's connection ended").is_ok(), "without a panic");
    }
}

//! [`CuttingProxy`]: a TCP proxy on `127.0.0.1:0` in front of a real server that cuts the
//! first connections after a number of request bytes, so that a client sees its connection
//! reset (or closed) in the middle of an upload.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a cut connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// A TCP reset: `SO_LINGER` 0, then close.
    Reset,
    /// An orderly close (FIN) without an answer.
    Close,
}

/// Which connections are cut, and where.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Request bytes (client to server) let through on a cut connection after the end of the
    /// first request's headers (so `after_bytes` smaller than the first body cuts that body).
    pub after_bytes: usize,
    /// How many connections, counted from the first, are cut (`usize::MAX`: all of them).
    pub connections: usize,
    /// How they end.
    pub cut: Cut,
}

/// What the proxy did, shared with its tasks.
#[derive(Debug, Default)]
struct Stats {
    connections: AtomicUsize,
    cuts: AtomicUsize,
    /// The beginning of what the server sent back (at most [`KEEP`] bytes), to find ids in.
    responses: Mutex<Vec<u8>>,
}

/// How much of the server's answers is kept.
const KEEP: usize = 1024 * 1024;

/// A proxy serving until dropped.
#[derive(Debug)]
pub struct CuttingProxy {
    /// `http://127.0.0.1:PORT`, to use as the client's endpoint.
    pub endpoint: String,
    stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttingProxy {
    /// Starts a proxy to `upstream` (an `http://host:port` URL or `host:port`) following `plan`.
    pub async fn start(upstream: &str, plan: Plan) -> CuttingProxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("upstream is host:port");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let stats = Arc::new(Stats::default());
        let shared = Arc::clone(&stats);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let n = shared.connections.fetch_add(1, Ordering::SeqCst);
                let cut = (n < plan.connections).then_some(plan);
                tokio::spawn(relay(client, upstream, cut, Arc::clone(&shared)));
            }
        });
        CuttingProxy {
            endpoint,
            stats,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.stats.connections.load(Ordering::SeqCst)
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> usize {
        self.stats.cuts.load(Ordering::SeqCst)
    }

    /// Every `<tag>…</tag>` value in what the server sent back (e.g. `UploadId`).
    pub fn response_values(&self, tag: &str) -> Vec<String> {
        let text = self
            .stats
            .responses
            .lock()
            .map(|r| String::from_utf8_lossy(&r).into_owned())
            .unwrap_or_default();
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        text.split(&open)
            .skip(1)
            .filter_map(|rest| rest.split(&close).next().map(str::to_owned))
            .collect()
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, cut: Option<Plan>, stats: Arc<Stats>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    if let Some(Plan {
        cut: Cut::Reset, ..
    }) = cut
    {
        let _ = linger_zero(&client);
    }
    // Borrowed halves: nothing is shut down behind our back when one of them is dropped.
    let (mut from_client, mut to_client) = client.split();
    let (mut from_server, mut to_server) = server.split();
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from_server.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Ok(mut kept) = stats.responses.lock()
                && kept.len() < KEEP
            {
                kept.extend_from_slice(&buf[..n]);
            }
            if to_client.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::pin!(down);
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0usize;
        // The start of the stream, until the end of the first request's headers is found.
        let mut head: Vec<u8> = Vec::new();
        let mut limit: Option<usize> = None;
        loop {
            let n = match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if let Some(plan) = cut
                && limit.is_none()
            {
                head.extend_from_slice(&buf[..n]);
                if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    limit = Some(end + 4 + plan.after_bytes);
                }
            }
            if let Some(limit) = limit
                && sent + n >= limit
            {
                let _ = to_server.write_all(&buf[..limit - sent]).await;
                stats.cuts.fetch_add(1, Ordering::SeqCst);
                return true;
            }
            if to_server.write_all(&buf[..n]).await.is_err() {
                return false;
            }
            sent += n;
        }
    };
    let was_cut = tokio::select! {
        c = up => c,
        () = &mut down => return,
    };
    if was_cut {
        // Returning drops both sockets: the server sees its connection end in the middle of
        // the request; the client sees a reset (or a close) without an answer.
        return;
    }
    let _ = to_server.shutdown().await;
    // Let the answer finish (bounded, so a stuck server does not keep the task forever).
    let _ = tokio::time::timeout(Duration::from_secs(60), down).await;
}

/// `SO_LINGER` 0: closing the socket then sends a reset instead of a FIN.
fn linger_zero(stream: &TcpStream) -> std::io::Result<()> {
    #[allow(deprecated)] // tokio deprecates it for its blocking close; a reset is what we want
    stream.set_linger(Some(Duration::ZERO))
}

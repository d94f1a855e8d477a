//! [`LatencyProxy`]: a TCP proxy on `127.0.0.1:0` in front of a real server that holds each
//! answer back by a fixed delay, as a far-away server would: every request–response turn of a
//! connection costs that much more, whatever its size. The delay is added once per turn (the
//! first bytes of an answer after the client sent something), not per packet.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A latency proxy serving until dropped.
#[derive(Debug)]
pub struct LatencyProxy {
    /// `http://127.0.0.1:PORT`, to use as the client's endpoint.
    pub endpoint: String,
    turns: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl LatencyProxy {
    /// Starts a proxy to `upstream` (`http://host:port` or `host:port`) that delays each
    /// answer by `delay`.
    pub async fn start(upstream: &str, delay: Duration) -> LatencyProxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("upstream is host:port");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let turns = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&turns);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                connections.spawn(relay(client, upstream, delay, Arc::clone(&counted)));
                while connections.try_join_next().is_some() {}
            }
        });
        LatencyProxy {
            endpoint,
            turns,
            task,
        }
    }

    /// Request–response turns delayed so far.
    pub fn turns(&self) -> usize {
        self.turns.load(Ordering::SeqCst)
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        // The relays live in the accept task's JoinSet: aborting it ends them all.
        self.task.abort();
    }
}

async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    delay: Duration,
    turns: Arc<AtomicUsize>,
) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    // Set by the upstream pump when the client sends; the downstream pump waits `delay`
    // before the first answer bytes that follow.
    let asked = AtomicBool::new(false);
    let (mut from_client, mut to_client) = client.split();
    let (mut from_server, mut to_server) = server.split();
    let up = async {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            asked.store(true, Ordering::SeqCst);
            if to_server.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to_server.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match from_server.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if asked.swap(false, Ordering::SeqCst) {
                turns.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
            }
            if to_client.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to_client.shutdown().await;
    };
    tokio::join!(up, down);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_answer_waits_for_the_delay_once() {
        // An echo server that answers each line.
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 64];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        let proxy = LatencyProxy::start(&addr.to_string(), Duration::from_millis(50)).await;
        let mut c = TcpStream::connect(proxy.endpoint.trim_start_matches("http://"))
            .await
            .unwrap();
        for round in 0..3u8 {
            let started = std::time::Instant::now();
            c.write_all(&[round]).await.unwrap();
            let mut got = [0u8; 1];
            c.read_exact(&mut got).await.unwrap();
            assert_eq!(got, [round]);
            assert!(started.elapsed() >= Duration::from_millis(50));
        }
        assert_eq!(proxy.turns(), 3);
    }
}

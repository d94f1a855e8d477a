//! The HTTP accept loop shared by the store and the dashboard: HTTP/1 and HTTP/2 on the
//! caller's listener, one task per connection, graceful shutdown with a bounded drain.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

/// How long to wait before accepting again after an error that outlasts one connection
/// (out of file descriptors, out of memory): retrying at once would only spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `handler` on `listener` until `shutdown` completes; then stops accepting and lets
/// the requests in flight finish, for up to `drain`. `server` names the server in logs.
pub(crate) async fn serve<H, F, B, E>(
    server: &'static str,
    listener: TcpListener,
    drain: Duration,
    shutdown: impl Future<Output = ()>,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, E>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
    E: Into<Box<dyn StdError + Send + Sync>>,
{
    let builder = ConnBuilder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            res = listener.accept() => match res {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(server, &e).await;
                    continue;
                }
            },
            () = shutdown.as_mut() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper::service::service_fn(handler.clone());
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(server, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            server,
            "requests still in flight after {drain:?}; stopping anyway"
        );
    }
}

/// Logs an accept error, and waits a little when it is not about one connection only.
async fn accept_failed(server: &'static str, e: &io::Error) {
    if is_per_connection(e) {
        tracing::debug!(server, error = %e, "a connection was gone before it was accepted");
        return;
    }
    tracing::warn!(server, error = %e, "accepting a connection failed; retrying shortly");
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

/// Errors about the one connection being accepted: the next accept may well succeed.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_is_not_a_per_connection_error() {
        // EMFILE: accepting again at once fails the same way until something closes.
        assert!(!is_per_connection(&io::Error::from_raw_os_error(24)));
        assert!(is_per_connection(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
    }
}

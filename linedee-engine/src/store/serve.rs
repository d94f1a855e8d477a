//! Serving the store over HTTP: S3 (through s3s, SigV4 required) and the config-vars
//! endpoint on the same listener, with graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;

use super::Store;
use super::auth::{StoreAccess, StoreAuth};
use super::config_vars;
use super::s3::StoreS3;
use crate::{Error, Result};

/// How long shutdown waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(10);

impl Store {
    /// Serves S3 and `GET /apps/{app}/config-vars` on `listener` until `shutdown`
    /// completes, then lets requests in flight finish (up to 10 s). The store is meant for
    /// loopback: a listener on another address is served, with a warning.
    ///
    /// ```no_run
    /// # async fn demo(store: linedee_engine::store::Store) -> linedee_engine::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await
    ///     .map_err(linedee_engine::Error::Serve)?;
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// let server = tokio::spawn({
    ///     let store = store.clone();
    ///     async move { store.serve(listener, async { let _ = stopped.await; }).await }
    /// });
    /// // ... talk S3 to it ...
    /// let _ = stop.send(());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<()> {
        let addr = listener.local_addr().map_err(Error::Serve)?;
        if !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "the store listens on a non-loopback address: anyone who can reach it can try \
                 its credentials"
            );
        }
        let endpoint: Arc<str> = format!("http://{addr}").into();
        let s3 = {
            let mut b = S3ServiceBuilder::new(StoreS3 {
                store: self.clone(),
            });
            b.set_auth(StoreAuth(Arc::clone(&self.inner.auth)));
            b.set_access(StoreAccess(Arc::clone(&self.inner.auth)));
            b.build()
        };
        let store = self.clone();
        crate::http::serve("store", listener, DRAIN, shutdown, move |req| {
            let (s3, store, endpoint) = (s3.clone(), store.clone(), Arc::clone(&endpoint));
            async move {
                if config_vars::matches(&req) {
                    Ok(config_vars::handle(&store, &req, &endpoint))
                } else {
                    s3.call(req.map(s3s::Body::from)).await
                }
            }
        })
        .await;
        Ok(())
    }
}

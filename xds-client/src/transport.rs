//! The gRPC channel to the control plane: TCP (`host:port`) or a Unix socket (Istio's
//! pilot-agent serves xDS on `./etc/istio/proxy/XDS`), with HTTP/2 keepalive.

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// Where the control plane listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `host:port`.
    Tcp(String),
    /// A Unix socket path.
    Unix(PathBuf),
}

/// HTTP/2 options of the channel.
#[derive(Debug, Clone, Default)]
pub struct ChannelOptions {
    pub connect_timeout: Option<Duration>,
    /// PING interval and how long to wait for its answer.
    pub keepalive: Option<(Duration, Duration)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid control plane address '{0}'")]
    Address(String),
    #[error("connecting to the control plane: {0}")]
    Connect(#[from] tonic::transport::Error),
}

fn endpoint(uri: String, opts: &ChannelOptions) -> Result<Endpoint, ConnectError> {
    let mut e = Endpoint::from_shared(uri.clone()).map_err(|_| ConnectError::Address(uri))?;
    if let Some(t) = opts.connect_timeout {
        e = e.connect_timeout(t);
    }
    if let Some((interval, timeout)) = opts.keepalive {
        e = e
            .http2_keep_alive_interval(interval)
            .keep_alive_timeout(timeout)
            .keep_alive_while_idle(true);
    }
    Ok(e)
}

pub async fn connect(target: &Target, opts: &ChannelOptions) -> Result<Channel, ConnectError> {
    match target {
        Target::Tcp(addr) => Ok(endpoint(format!("http://{addr}"), opts)?.connect().await?),
        Target::Unix(path) => {
            let path = path.clone();
            // The URI is required by the API and unused: the connector dials the socket.
            let e = endpoint("http://xds.invalid".into(), opts)?;
            let connector = tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(s))
                }
            });
            Ok(e.connect_with_connector(connector).await?)
        }
    }
}

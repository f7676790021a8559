//! The gRPC test service (`proto/echo.proto`) served by tonic, a real gRPC peer.

use std::net::SocketAddr;
use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

pub mod pb {
    tonic::include_proto!("remora.test");
}

use pb::echo_server::{Echo, EchoServer};
use pb::Msg;

#[derive(Default)]
pub struct EchoService;

fn check(m: &Msg) -> Result<(), Status> {
    if m.fail_code != 0 {
        return Err(Status::new(
            tonic::Code::from_i32(m.fail_code),
            m.fail_message.clone(),
        ));
    }
    Ok(())
}

type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(&self, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        let m = req.into_inner();
        check(&m)?;
        Ok(Response::new(m))
    }

    async fn client_stream(&self, req: Request<Streaming<Msg>>) -> Result<Response<Msg>, Status> {
        let mut s = req.into_inner();
        let mut payload = Vec::new();
        while let Some(m) = s.next().await {
            let m = m?;
            check(&m)?;
            payload.extend_from_slice(&m.payload);
        }
        Ok(Response::new(Msg {
            payload,
            ..Default::default()
        }))
    }

    type ServerStreamStream = MsgStream;
    async fn server_stream(&self, req: Request<Msg>) -> Result<Response<MsgStream>, Status> {
        let m = req.into_inner();
        check(&m)?;
        // One message per payload byte value, so the client can check order.
        let out = futures_util::stream::iter(m.payload.into_iter().map(|b| {
            Ok(Msg {
                payload: vec![b],
                ..Default::default()
            })
        }));
        Ok(Response::new(Box::pin(out)))
    }

    type BidiStream = MsgStream;
    async fn bidi(&self, req: Request<Streaming<Msg>>) -> Result<Response<MsgStream>, Status> {
        let s = req.into_inner();
        let out = s.map(|m| m.and_then(|m| check(&m).map(|()| m)));
        Ok(Response::new(Box::pin(out)))
    }
}

/// Serves the echo service on `127.0.0.1:0` (HTTP/2 cleartext).
pub async fn serve() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind grpc");
    let addr = listener.local_addr().expect("addr");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(
                EchoServer::new(EchoService)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
            )
            .serve_with_incoming(incoming)
            .await;
    });
    (addr, task)
}

/// A client to `addr` (plaintext HTTP/2).
pub async fn client(addr: SocketAddr) -> pb::echo_client::EchoClient<tonic::transport::Channel> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("grpc connect");
    pb::echo_client::EchoClient::new(ch)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// Serves the standard gRPC health service (`grpc.health.v1.Health`, tonic-health) on
/// `127.0.0.1:0`; the reporter sets what each service name answers.
pub async fn serve_health() -> (
    SocketAddr,
    tonic_health::server::HealthReporter,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind grpc health");
    let addr = listener.local_addr().expect("addr");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let (reporter, service) = tonic_health::server::health_reporter();
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
    });
    (addr, reporter, task)
}

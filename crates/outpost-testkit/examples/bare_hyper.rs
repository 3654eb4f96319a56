//! The benchmark ceiling: a bare hyper 1 HTTP/1.1 server (multi-thread tokio runtime, keep-alive)
//! answering every request with the same 1 KiB body. Load-test it next to an edge to see how much of
//! the budget the CDN logic costs.
//!
//! Usage: `cargo run --release -p outpost-testkit --example bare_hyper -- [--listen ADDR]`
//! (default 127.0.0.1:8900).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

static BODY: [u8; 1024] = [b'x'; 1024];

fn listen_addr() -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = match args.as_slice() {
        [] => "127.0.0.1:8900".to_string(),
        [flag, addr] if flag == "--listen" => addr.clone(),
        [addr] if !addr.starts_with('-') => addr.clone(),
        _ => return Err("usage: bare_hyper [--listen ADDR]".into()),
    };
    Ok(addr.parse()?)
}

async fn answer(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(&BODY)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = listen_addr()?;
    let listener = TcpListener::bind(addr).await?;
    eprintln!("bare_hyper listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                eprintln!("accept: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

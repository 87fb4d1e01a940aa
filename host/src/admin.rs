//! The admin endpoint (`[host] admin = "127.0.0.1:9464"`): HTTP/1.1 on the host's own socket.
//!
//! - `GET /metrics`: the Prometheus exposition.
//! - `GET /config`: every config value, as a JSON object by path; `GET /config/<path>`: one.
//! - `PUT /config/<path>` (body: the new value) and `DELETE /config/<path>`: change the live
//!   config at a path the manifest marks updatable; `403` elsewhere, with the reason.
//! - `GET /health`: `ok` while the host runs.
//!
//! The bound address is written to `<data_dir>/admin.addr`, so that `agora config` finds a
//! host that asked for port 0. There is no authentication: keep the address private.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::capabilities::config::UpdateError;
use crate::runtime::Runtime;

/// Largest config value accepted in one update.
const MAX_VALUE: usize = 64 << 10;

/// Where a running host records its admin address.
pub fn address_file(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.addr")
}

/// Bind the endpoint and serve it on a task; returns the bound address.
pub async fn start(runtime: Arc<Runtime>, address: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("host.admin: cannot listen on {address}: {e}"))?;
    let bound = listener.local_addr()?;
    let file = address_file(&runtime.settings.data_dir);
    std::fs::create_dir_all(&runtime.settings.data_dir)?;
    std::fs::write(&file, bound.to_string()).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    tracing::info!(event = "admin_listening", address = %bound, "admin endpoint on http://{bound} (/metrics, /config)");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let runtime = runtime.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let runtime = runtime.clone();
                    async move { Ok::<_, Infallible>(serve(&runtime, request).await) }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(bound)
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

async fn serve(runtime: &Runtime, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let config_path = path.strip_prefix("/config").map(|rest| rest.trim_start_matches('/').to_string());
    match (request.method().clone(), path.as_str(), config_path) {
        (Method::GET, "/health", _) => text(StatusCode::OK, "ok\n"),
        (Method::GET, "/metrics", _) => {
            let mut response = text(StatusCode::OK, runtime.services.telemetry.render());
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (Method::GET, _, Some(config_path)) if config_path.is_empty() => {
            let values: serde_json::Map<String, serde_json::Value> =
                runtime.services.config.list("").into_iter().map(|(k, v)| (k, v.into())).collect();
            text(StatusCode::OK, serde_json::Value::Object(values).to_string())
        }
        (Method::GET, _, Some(config_path)) => match runtime.services.config.get(&config_path) {
            Ok(Some(value)) => text(StatusCode::OK, value),
            Ok(None) => text(StatusCode::NOT_FOUND, format!("no config value at {config_path:?}\n")),
            Err(error) => text(StatusCode::BAD_REQUEST, format!("{error:?}\n")),
        },
        (method @ (Method::PUT | Method::DELETE), _, Some(config_path)) => {
            let value = if method == Method::PUT {
                match Limited::new(request.into_body(), MAX_VALUE).collect().await {
                    Ok(body) => match String::from_utf8(body.to_bytes().to_vec()) {
                        Ok(value) => Some(value),
                        Err(_) => return text(StatusCode::BAD_REQUEST, "the value must be UTF-8\n"),
                    },
                    Err(_) => {
                        return text(StatusCode::PAYLOAD_TOO_LARGE, format!("values are at most {MAX_VALUE} bytes\n"));
                    }
                }
            } else {
                None
            };
            match crate::capabilities::config::update(runtime, &config_path, value) {
                Ok(notified) => {
                    text(StatusCode::OK, format!("updated {config_path}; {notified} subscribers notified\n"))
                }
                Err(error @ UpdateError::NotUpdatable(..)) => text(StatusCode::FORBIDDEN, format!("{error}\n")),
                Err(error @ UpdateError::IsTable(_)) => text(StatusCode::CONFLICT, format!("{error}\n")),
                Err(error @ UpdateError::InvalidPath(_)) => text(StatusCode::BAD_REQUEST, format!("{error}\n")),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "routes: GET /health, GET /metrics, GET|PUT|DELETE /config/<path>\n"),
    }
}

/// A client for `agora config`: one request to a running host's endpoint; returns the status
/// and the body.
pub async fn request(
    address: SocketAddr,
    method: Method,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<(StatusCode, String)> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the host's admin endpoint at {address}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, address.to_string())
        .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

//! Blocking outbound HTTP through the standard `wasi:http/outgoing-handler` (feature `http`).
//!
//! Any WASI HTTP client works in an agent; this one is small and has no dependency beyond the
//! `wasi` bindings. Requests reach only the `[outbound.<name>]` targets the agent's manifest
//! entry lists in `outbound`; the host's own refusals are `503`/`429` answers that
//! [`crate::outbound::rejection`] recognises, or an error such as `HttpRequestDenied`.

use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasi::io::streams::StreamError;

/// A whole response: status, headers and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header by that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
    }

    /// Why the host answered in the target's place, if it did.
    pub fn rejection(&self) -> Option<crate::outbound::Rejection> {
        crate::outbound::rejection(|name| self.header(name))
    }
}

/// `GET url` and wait for the whole answer.
pub fn get(url: &str) -> Result<Response, String> {
    finish(start("GET", url, None)?)
}

/// `method url` with an optional body, and wait for the whole answer.
pub fn request(method: &str, url: &str, body: Option<&[u8]>) -> Result<Response, String> {
    finish(start(method, url, body)?)
}

/// Send a request without waiting for its answer (several can be in flight at once).
pub fn start(method: &str, url: &str, body: Option<&[u8]>) -> Result<FutureIncomingResponse, String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("bad url {url:?}"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_string()),
    };
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    };
    request.set_method(&method).map_err(|()| "bad method")?;
    request.set_scheme(Some(&scheme)).map_err(|()| "bad scheme")?;
    request.set_authority(Some(authority)).map_err(|()| "bad authority")?;
    request.set_path_with_query(Some(path)).map_err(|()| "bad path")?;
    let Some(body) = body else {
        return outgoing_handler::handle(request, None).map_err(|e| error_name(&e));
    };
    // The body resource is taken before the request is handed over, and written after.
    let outgoing = request.body().map_err(|()| "body taken")?;
    let response = outgoing_handler::handle(request, None).map_err(|e| error_name(&e))?;
    {
        let stream = outgoing.write().map_err(|()| "body stream taken")?;
        for chunk in body.chunks(4096) {
            stream.blocking_write_and_flush(chunk).map_err(|e| format!("writing the body: {e:?}"))?;
        }
    }
    OutgoingBody::finish(outgoing, None).map_err(|e| error_name(&e))?;
    Ok(response)
}

/// Wait for a started request's answer and read its whole body.
pub fn finish(response: FutureIncomingResponse) -> Result<Response, String> {
    response.subscribe().block();
    let response = match response.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(error))) => return Err(error_name(&error)),
        other => return Err(format!("unexpected {other:?}")),
    };
    let headers =
        response.headers().entries().into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned())).collect();
    let status = response.status();
    let incoming = response.consume().map_err(|()| "body taken")?;
    let mut body = Vec::new();
    {
        let stream = incoming.stream().map_err(|()| "body stream taken")?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(error)) => return Err(error.to_debug_string()),
            }
        }
    }
    let _ = IncomingBody::finish(incoming);
    Ok(Response { status, headers, body })
}

/// `ErrorCode::HttpRequestDenied` → `HttpRequestDenied`.
pub fn error_name(error: &ErrorCode) -> String {
    let name = format!("{error:?}");
    name.strip_prefix("ErrorCode::").unwrap_or(&name).to_string()
}

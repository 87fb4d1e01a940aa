//! Outbound HTTP the way any WASI program makes it: `wasi:http/outgoing-handler`.

use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, FutureIncomingResponse, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasi::io::streams::StreamError;

pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
    }
}

/// Send a request without waiting for the answer.
pub fn start(method: &str, url: &str) -> Result<FutureIncomingResponse, String> {
    start_with_body(method, url, None)
}

/// Send a request with an optional body, without waiting for the answer.
pub fn start_with_body(method: &str, url: &str, body: Option<&[u8]>) -> Result<FutureIncomingResponse, String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("bad url {url:?}"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(wasi::http::types::Fields::new());
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        other => Method::Other(other.to_string()),
    };
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    };
    request.set_method(&method).map_err(|()| "method")?;
    request.set_scheme(Some(&scheme)).map_err(|()| "scheme")?;
    request.set_authority(Some(authority)).map_err(|()| "authority")?;
    request.set_path_with_query(Some(path)).map_err(|()| "path")?;
    let Some(body) = body else {
        return outgoing_handler::handle(request, None).map_err(|e| error_name(&e));
    };
    // The body resource is taken before the request is handed over, written after.
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

/// Wait for the answer and read its whole body.
pub fn finish(response: FutureIncomingResponse) -> Result<Answer, String> {
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
        let stream = incoming.stream().map_err(|()| "stream taken")?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(error)) => return Err(error.to_debug_string()),
            }
        }
    }
    let _ = IncomingBody::finish(incoming);
    Ok(Answer { status, headers, body })
}

/// `ErrorCode::HttpRequestDenied` → `HttpRequestDenied`.
pub fn error_name(error: &ErrorCode) -> String {
    let name = format!("{error:?}");
    name.strip_prefix("ErrorCode::").unwrap_or(&name).to_string()
}

/// A short, stable description of an outcome, for the probe's log.
pub fn describe(outcome: Result<Answer, String>) -> String {
    match outcome {
        Ok(answer) => match answer.header("agora-rejected") {
            Some(rejected) => format!(
                "status {} rejected {rejected} retry-after-ms {}",
                answer.status,
                answer.header("agora-retry-after-ms").unwrap_or_default()
            ),
            None => format!("status {} body {}", answer.status, String::from_utf8_lossy(&answer.body)),
        },
        Err(error) => format!("error {error}"),
    }
}

/// The outcome's class, for counting many: `200`, `rate-limited`, `HttpRequestDenied`, ...
pub fn class(outcome: &Result<Answer, String>) -> String {
    match outcome {
        Ok(answer) => answer.header("agora-rejected").unwrap_or_else(|| answer.status.to_string()),
        Err(error) => error.split(['(', ' ']).next().unwrap_or_default().to_string(),
    }
}

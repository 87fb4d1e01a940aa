//! How the probe reports outbound HTTP outcomes; the requests are the SDK's (`agora_guest::http`).

use agora_guest::http::Response;
pub use agora_guest::http::{finish, start};

/// A short, stable description of an outcome, for the probe's log.
pub fn describe(outcome: Result<Response, String>) -> String {
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
pub fn class(outcome: &Result<Response, String>) -> String {
    match outcome {
        Ok(answer) => answer.header("agora-rejected").unwrap_or_else(|| answer.status.to_string()),
        Err(error) => error.split(['(', ' ']).next().unwrap_or_default().to_string(),
    }
}

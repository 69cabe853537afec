//! Sends one event to one webhook: signed, with retries and backoff, every wait bounded.

use std::time::Duration;

use super::webhooks::Target;
use crate::config::Delivery;
use crate::metrics::{Metrics, METRICS};

/// Response bodies read (and dropped) so the connection can be reused; larger ones close it.
const RESPONSE_BYTES_MAX: usize = 64 * 1024;
/// First retry delay; doubled per attempt, with up to half of it added as jitter.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
/// Longest delay between two attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why an attempt to deliver an event failed.
#[derive(Debug)]
pub enum AttemptError {
    /// The request could not be sent, or its answer not read.
    Send(std::io::Error),
    /// No answer within the webhook's timeout.
    NoAnswer(Duration),
    /// The webhook answered with a status outside 2xx.
    Refused { status: u16 },
    /// The attempts together took longer than the webhook's timeout.
    NotDelivered(Duration),
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptError::Send(e) => write!(f, "{e}"),
            AttemptError::NoAnswer(t) => write!(f, "no answer within {t:?}"),
            AttemptError::Refused { status } => write!(f, "answered {status}"),
            AttemptError::NotDelivered(t) => write!(f, "not delivered within {t:?}"),
        }
    }
}

impl std::error::Error for AttemptError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Printed in Display already: the chain skips it (see `error::Chain`).
            AttemptError::Send(e) => Some(e),
            _ => None,
        }
    }
}

/// A delivery that failed: which webhook, and what its last attempt saw.
#[derive(Debug)]
pub struct DeliveryError {
    pub webhook: String,
    pub last: AttemptError,
}

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "event webhook {}: {}", self.webhook, self.last)
    }
}

impl std::error::Error for DeliveryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.last)
    }
}

/// `sha256=<hex>` of HMAC-SHA256(key, body).
pub fn signature(key: &ring::hmac::Key, body: &[u8]) -> String {
    let tag = ring::hmac::sign(key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn backoff(attempt: u32) -> Duration {
    let base = BACKOFF_FIRST
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_MAX);
    let mut r = [0u8; 1];
    let jitter = match getrandom::getrandom(&mut r) {
        Ok(()) => base / 2 * u32::from(r[0]) / 255,
        Err(_) => Duration::ZERO,
    };
    base + jitter
}

async fn attempt(t: &Target, kind: &str, body: &[u8]) -> Result<(), AttemptError> {
    let mut headers = vec![
        ("Content-Type", "application/json".to_string()),
        ("X-Registry-Event", kind.to_string()),
    ];
    if let Some(token) = &t.token {
        headers.push(("Authorization", format!("Bearer {token}")));
    }
    if let Some(key) = &t.key {
        headers.push(("X-Registry-Signature-256", signature(key, body)));
    }
    let send = t.client.send_body("POST", &t.target, &headers, body);
    let resp = match compio::time::timeout(t.timeout, send).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(AttemptError::Send(e)),
        Err(_) => return Err(AttemptError::NoAnswer(t.timeout)),
    };
    let status = resp.status;
    // Read to the end (bounded) so the connection goes back to the pool.
    let _ = compio::time::timeout(t.timeout, resp.bytes(RESPONSE_BYTES_MAX)).await;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(AttemptError::Refused { status })
    }
}

/// Delivers `body` with up to `max_retries` retries. `required` and `optional` deliveries
/// (someone is waiting) are cut at the webhook's `timeout` in all; `async` ones are not.
/// Counts the outcome; the error says what the last attempt saw.
#[tracing::instrument(
    target = "origin::span",
    name = "webhook.delivery",
    skip_all,
    fields(otel.kind = "client", webhook = %t.name, event = kind, error = tracing::field::Empty)
)]
pub async fn deliver(t: &Target, kind: &str, body: &[u8]) -> Result<(), DeliveryError> {
    let all = async {
        let mut last = AttemptError::NotDelivered(Duration::ZERO);
        for n in 0..=t.max_retries {
            if n > 0 {
                compio::time::sleep(backoff(n - 1)).await;
            }
            match attempt(t, kind, body).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    crate::span_event!(attempt = n, error = %e, "attempt failed");
                    last = e;
                }
            }
        }
        Err(last)
    };
    let result = match t.delivery {
        Delivery::Async => all.await,
        Delivery::Required | Delivery::Optional => {
            match compio::time::timeout(t.timeout, all).await {
                Ok(r) => r,
                Err(_) => Err(AttemptError::NotDelivered(t.timeout)),
            }
        }
    };
    match &result {
        Ok(()) => Metrics::add(&METRICS.webhook_deliveries, 1),
        Err(e) => {
            Metrics::add(&METRICS.webhook_failures, 1);
            if crate::trace::recording() {
                tracing::Span::current().record("error", tracing::field::display(e));
            }
            tracing::warn!(webhook = %t.name, event = kind, error = %e, "event delivery failed");
        }
    }
    result.map_err(|last| DeliveryError {
        webhook: t.name.clone(),
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2.
    #[test]
    fn signature_is_hmac_sha256_hex() {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"Jefe");
        assert_eq!(
            signature(&key, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) >= BACKOFF_FIRST && backoff(0) <= BACKOFF_FIRST * 3 / 2);
        assert!(backoff(3) >= BACKOFF_FIRST * 8);
        assert!(backoff(30) <= BACKOFF_MAX * 3 / 2);
    }
}

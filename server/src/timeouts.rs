//! Time limits on a request once its head has arrived: the whole request
//! (`--request-timeout-secs`, `503 timeout`) and, separately and shorter,
//! the client's delivery of its body (`--body-timeout-secs` extended by
//! `--body-min-bytes-per-sec`, `408 body_timeout`).
//!
//! The body limit exists because the request timeout alone let a client
//! with a valid token hold a connection slot for the whole request timeout
//! by trickling a body; the header timeout ([`crate::connection`]) covers
//! only the head.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::error::ApiError;
use crate::AppState;

/// The middleware: bounds the request's time, and the time its body takes
/// to arrive.
pub(crate) async fn enforce(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let limit = s.config.request_timeout;
    let body_timeout = s.config.body_timeout;
    let timed_out = Arc::new(AtomicBool::new(false));
    let req = req.map(|body| {
        Body::new(TimedBody {
            inner: body,
            timeout: body_timeout,
            min_rate: s.config.body_rate_min_bytes_per_sec,
            started: None,
            received: 0,
            deadline: None,
            timed_out: timed_out.clone(),
        })
    });
    let resp = match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => return ApiError::Timeout(limit.as_secs()).into_response(),
    };
    // However the handler's extractor reported the failed read (a JSON
    // error, say), the client is told what happened.
    if timed_out.load(Ordering::Relaxed) {
        let mut resp = ApiError::BodyTimeout(body_timeout.as_secs()).into_response();
        // Part of the body is still on its way: the connection cannot
        // carry another request.
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        return resp;
    }
    resp
}

/// A request body that fails once its client has been too slow: the first
/// read starts the clock, with `timeout` to deliver the body plus a second
/// for every `min_rate` bytes delivered. Only time spent waiting for the
/// client can run it out: data already received is handed on at once.
struct TimedBody {
    inner: Body,
    timeout: Duration,
    /// Bytes per second that earn more time; 0: none.
    min_rate: u64,
    started: Option<Instant>,
    received: u64,
    deadline: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

/// What a [`TimedBody`] fails with.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived too slowly")]
struct BodyTimedOut;

impl TimedBody {
    fn deadline_now(&self) -> Instant {
        let started = self.started.unwrap_or_else(Instant::now);
        let earned = match self.min_rate {
            0 => Duration::ZERO,
            rate => Duration::from_secs_f64(self.received as f64 / rate as f64),
        };
        started + self.timeout.saturating_add(earned)
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if this.started.is_none() {
            this.started = Some(Instant::now());
            this.deadline = Some(Box::pin(tokio::time::sleep_until(this.deadline_now())));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len() as u64);
                    let at = this.deadline_now();
                    if let Some(d) = this.deadline.as_mut() {
                        d.as_mut().reset(at);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    this.timed_out.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
                }
                Poll::Pending
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

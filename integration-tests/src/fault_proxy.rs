//! A fault-injecting HTTP proxy between the SDK and a Kinesis endpoint, so tests see throttling,
//! 5xx answers, connection resets and stalls that no emulator produces.
//!
//! Faults are drawn per call (and per PutRecords entry) from the [`Faults`] in force, which a test
//! may change at any time. Throttled PutRecords entries are taken OUT of the request before it is
//! forwarded and answered with `ProvisionedThroughputExceededException` in their places, so a
//! record reported as failed really was not stored. A slow answer is held after the call was
//! done upstream: a caller that gives up on it cannot know that it happened.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Which faults to inject, as fractions from 0.0 to 1.0.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Share of PutRecords entries answered `ProvisionedThroughputExceededException`.
    pub throttle_entries: f64,
    /// Share of calls (any operation but ListShards) answered HTTP 500 InternalFailure.
    pub internal_error_calls: f64,
    /// Share of calls whose connection is closed without an answer.
    pub reset_calls: f64,
    /// PutRecords calls are never answered (the connection is held open).
    pub stall_put_records: bool,
    /// Share of PutRecords calls done upstream whose answer is held for `slow_answer_for`
    /// (longer than the caller's request timeout: it gives up on a call that happened).
    pub slow_put_records: f64,
    /// How long a slow answer is held.
    pub slow_answer_for: Duration,
    /// No call at all is answered (a paused or black-holed endpoint).
    pub stall_all_calls: bool,
    /// GetRecords calls are answered HTTP 400 `AccessDeniedException` (a revoked permission).
    pub deny_get_records: bool,
    /// The first this-many calls are forwarded, done upstream, and their answers lost (the
    /// connection closes): the caller cannot know whether they happened.
    pub lose_first_answers: u64,
}

/// What the proxy did, for assertions.
#[derive(Debug, Default)]
pub struct FaultCounts {
    /// Entries answered as throttled.
    pub throttled_entries: AtomicU64,
    /// Calls answered 500.
    pub internal_errors: AtomicU64,
    /// Connections closed without an answer.
    pub resets: AtomicU64,
    /// Calls held without an answer.
    pub stalled: AtomicU64,
    /// PutRecords calls done upstream and answered late.
    pub slow: AtomicU64,
    /// User records (aggregates counted by what they hold) stored upstream by the calls
    /// answered late: the most copies a caller that gave up on those calls can add by re-sending.
    pub slow_user_records: AtomicU64,
    /// Calls forwarded upstream.
    pub forwarded: AtomicU64,
    /// Calls done upstream whose answer was lost.
    pub answers_lost: AtomicU64,
    /// GetRecords calls seen.
    pub get_records: AtomicU64,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`, for the SDK's endpoint URL.
    pub url: String,
    faults: Arc<Mutex<Faults>>,
    /// What it did so far.
    pub counts: Arc<FaultCounts>,
    task: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct State {
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
    faults: Arc<Mutex<Faults>>,
    counts: Arc<FaultCounts>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream` (an `http://` URL).
    pub async fn start(upstream: &str, faults: Faults) -> FaultProxy {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let faults = Arc::new(Mutex::new(faults));
        let counts = Arc::new(FaultCounts::default());
        let state = State {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            faults: faults.clone(),
            counts: counts.clone(),
        };
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    // A service error closes the connection: that is how resets are injected.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FaultProxy {
            url,
            faults,
            counts,
            task,
        }
    }

    /// Replaces the faults in force.
    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().expect("faults lock") = faults;
    }
}

#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected connection reset")
    }
}

impl std::error::Error for Reset {}

async fn handle(state: State, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Reset> {
    let faults = state.faults.lock().expect("faults lock").clone();
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let is_put_records = target.ends_with(".PutRecords");
    if target.ends_with(".GetRecords") {
        state.counts.get_records.fetch_add(1, Ordering::Relaxed);
    }
    let injectable = !target.ends_with(".ListShards");
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return Err(Reset);
    };

    if faults.stall_all_calls {
        state.counts.stalled.fetch_add(1, Ordering::Relaxed);
        std::future::pending::<()>().await;
    }
    if target.ends_with(".GetRecords") && faults.deny_get_records {
        let body = json!({"__type": "AccessDeniedException", "message": "injected: not authorized to perform kinesis:GetRecords"});
        return Ok(json_response(StatusCode::BAD_REQUEST, &body));
    }
    if is_put_records && faults.stall_put_records {
        state.counts.stalled.fetch_add(1, Ordering::Relaxed);
        std::future::pending::<()>().await;
    }
    let (reset, internal) = {
        let mut rng = rand::rng();
        (
            rng.random_bool(faults.reset_calls),
            rng.random_bool(faults.internal_error_calls),
        )
    };
    if injectable && reset {
        state.counts.resets.fetch_add(1, Ordering::Relaxed);
        return Err(Reset);
    }
    if injectable && internal {
        state.counts.internal_errors.fetch_add(1, Ordering::Relaxed);
        let body = json!({"__type": "InternalFailure", "message": "injected internal failure"});
        return Ok(json_response(StatusCode::INTERNAL_SERVER_ERROR, &body));
    }
    let slow = is_put_records && rand::rng().random_bool(faults.slow_put_records);
    let (answer, stored) = if is_put_records && faults.throttle_entries > 0.0 {
        throttle_some(&state, parts, body, faults.throttle_entries).await
    } else {
        (forward(&state, parts, body.clone()).await, body)
    };
    if slow {
        state.counts.slow.fetch_add(1, Ordering::Relaxed);
        if answer.status() == StatusCode::OK {
            state
                .counts
                .slow_user_records
                .fetch_add(user_records_in(&stored), Ordering::Relaxed);
        }
        tokio::time::sleep(faults.slow_answer_for).await;
    }
    if state.counts.answers_lost.fetch_add(1, Ordering::SeqCst) < faults.lose_first_answers {
        return Err(Reset);
    }
    state.counts.answers_lost.fetch_sub(1, Ordering::SeqCst);
    Ok(answer)
}

async fn forward(
    state: &State,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> Response<Full<Bytes>> {
    state.counts.forwarded.fetch_add(1, Ordering::Relaxed);
    let uri = format!(
        "{}{}",
        state.upstream,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut builder = Request::builder().method(parts.method).uri(uri);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            builder = builder.header(name, value);
        }
    }
    let request = builder.body(Full::new(body)).expect("request");
    match state.client.request(request).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let mut response = Response::from_parts(parts, Full::new(body.clone()));
            response.headers_mut().remove("content-length");
            response
        }
        Err(e) => json_response(
            StatusCode::BAD_GATEWAY,
            &json!({"__type": "ProxyUpstreamError", "message": e.to_string()}),
        ),
    }
}

/// The user records in a PutRecords request body: an entry's data is one record, or as many as
/// the aggregate it holds.
fn user_records_in(body: &[u8]) -> u64 {
    use base64::Engine as _;
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return 0;
    };
    let entries = request.get("Records").and_then(Value::as_array);
    entries
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("Data").and_then(Value::as_str))
        .map(|data| {
            let blob = base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap_or_default();
            match kinesis_format::deaggregate(&Bytes::from(blob)) {
                kinesis_format::Deaggregated::Aggregated(records) => records.len() as u64,
                kinesis_format::Deaggregated::Raw(_) => 1,
            }
        })
        .sum()
}

/// Takes a share of the entries out of a PutRecords call, forwards the rest, and answers with
/// throttling errors in the removed entries' places; also returns the body forwarded.
async fn throttle_some(
    state: &State,
    parts: hyper::http::request::Parts,
    body: Bytes,
    share: f64,
) -> (Response<Full<Bytes>>, Bytes) {
    let Ok(mut request) = serde_json::from_slice::<Value>(&body) else {
        return (forward(state, parts, body.clone()).await, body);
    };
    let Some(entries) = request.get_mut("Records").and_then(Value::as_array_mut) else {
        return (forward(state, parts, body.clone()).await, body);
    };
    let throttled: Vec<bool> = {
        let mut rng = rand::rng();
        entries.iter().map(|_| rng.random_bool(share)).collect()
    };
    let kept: Vec<Value> = entries
        .iter()
        .zip(&throttled)
        .filter(|(_, t)| !**t)
        .map(|(e, _)| e.clone())
        .collect();
    let throttled_count = throttled.iter().filter(|t| **t).count();
    state
        .counts
        .throttled_entries
        .fetch_add(throttled_count as u64, Ordering::Relaxed);
    let throttle_result = json!({
        "ErrorCode": "ProvisionedThroughputExceededException",
        "ErrorMessage": "Rate exceeded for shard (injected)"
    });
    if kept.is_empty() {
        let records: Vec<Value> = throttled.iter().map(|_| throttle_result.clone()).collect();
        let body = json!({"FailedRecordCount": records.len(), "Records": records});
        return (json_response(StatusCode::OK, &body), Bytes::new());
    }
    *entries = kept;
    let forwarded = Bytes::from(serde_json::to_vec(&request).expect("json"));
    let response = forward(state, parts, forwarded.clone()).await;
    if response.status() != StatusCode::OK {
        return (response, forwarded);
    }
    let (head, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let Ok(mut answer) = serde_json::from_slice::<Value>(&body) else {
        return (Response::from_parts(head, Full::new(body)), forwarded);
    };
    let upstream: Vec<Value> = answer
        .get("Records")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut upstream = upstream.into_iter();
    let mut failed = answer
        .get("FailedRecordCount")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let merged: Vec<Value> = throttled
        .iter()
        .map(|t| {
            if *t {
                failed += 1;
                throttle_result.clone()
            } else {
                upstream.next().unwrap_or_else(|| throttle_result.clone())
            }
        })
        .collect();
    answer["Records"] = Value::Array(merged);
    answer["FailedRecordCount"] = json!(failed);
    let mut response = json_response(head.status, &answer);
    for (name, value) in &head.headers {
        if name != "content-length" && name != "content-type" {
            response.headers_mut().insert(name, value.clone());
        }
    }
    (response, forwarded)
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(body).expect("json"),
        )))
        .expect("response")
}

//! A fault-injecting HTTP proxy in front of a real S3 server (moto), for the fault tests and
//! the soak: it forwards every request unchanged, except that the test can
//! - **hold** the requests a matcher picks (e.g. the CompleteMultipartUpload of a backup, or
//!   the second DeleteObjects of a retention pass) until it releases or refuses them, so a
//!   signal can be sent at that exact point of a run;
//! - **fail** a random share of requests with the 5xx answers S3 gives under load
//!   (`503 SlowDown`, `500 InternalError`), which clients must retry;
//! - put the server into an **outage**: every request gets `503` until it ends.
//!
//! Held requests have been read whole but not forwarded, so a refused one never reaches the
//! server: what the store holds afterwards is what stowage achieved before the fault.
//! The proxy runs on its own thread and runtime, so a test blocking its own threads (sleeps,
//! child processes) cannot stall it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use tokio::sync::{oneshot, watch};

/// One request as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRequest {
    pub method: String,
    /// Percent-decoded path, `/bucket/key` (path-style addressing).
    pub path: String,
    /// Raw query string without `?`.
    pub query: String,
    /// The body of a POST (small XML: DeleteObjects' keys, CompleteMultipartUpload's
    /// parts), so a matcher can pick e.g. the delete of one object; empty otherwise.
    pub body: String,
}

impl ProxyRequest {
    /// DeleteObjects (`POST /bucket?delete`): how stowage deletes.
    pub fn is_batch_delete(&self) -> bool {
        self.method == "POST"
            && self
                .query
                .split('&')
                .any(|p| p == "delete" || p == "delete=")
    }

    /// CompleteMultipartUpload (`POST /bucket/key?uploadId=…`).
    pub fn is_complete_multipart(&self) -> bool {
        self.method == "POST" && self.query.starts_with("uploadId=")
    }

    /// A request that writes object content (PutObject, UploadPart).
    pub fn is_put(&self) -> bool {
        self.method == "PUT"
    }

    /// An object key ending with `suffix` (e.g. `/manifest.json`).
    pub fn key_ends_with(&self, suffix: &str) -> bool {
        self.path.ends_with(suffix)
    }

    /// A DeleteObjects that names a key containing `part`.
    pub fn deletes(&self, part: &str) -> bool {
        self.is_batch_delete() && self.body.contains(part)
    }
}

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub request: ProxyRequest,
    /// The status the client got (the server's, or an injected one).
    pub status: u16,
    pub injected: bool,
}

pub type Matcher = Box<dyn Fn(&ProxyRequest) -> bool + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Closed,
    Forward,
    Refuse,
}

struct Hold {
    matcher: Matcher,
    gate: watch::Sender<Gate>,
}

struct Inner {
    hold: Option<Hold>,
    fail_when: Option<Matcher>,
    fail_per_mille: u64,
    rng: u64,
    outage: bool,
    log: Vec<Logged>,
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    inner: Mutex<Inner>,
    held: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

enum Decision {
    Forward,
    Inject(StatusCode, &'static str),
    Wait(watch::Receiver<Gate>),
}

impl FaultProxy {
    /// Start on a random loopback port, forwarding to `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local_addr").port();
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("proxy's http client"),
            inner: Mutex::new(Inner {
                hold: None,
                fail_when: None,
                fail_per_mille: 0,
                rng: 0x9E37_79B9_7F4A_7C15,
                outage: false,
                log: Vec::new(),
            }),
            held: AtomicUsize::new(0),
        });
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let s2 = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new().fallback(handle).with_state(s2);
                tokio::select! {
                    r = axum::serve(listener, app) => { let _ = r; }
                    _ = stop_rx => {}
                }
            });
        });
        FaultProxy {
            port,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Hold every request `matcher` picks (until [`release`](Self::release) or
    /// [`refuse_held`](Self::refuse_held)); replaces an earlier hold, which is released.
    pub fn hold(&self, matcher: impl Fn(&ProxyRequest) -> bool + Send + Sync + 'static) {
        let (gate, _) = watch::channel(Gate::Closed);
        let old = self.shared.lock().hold.replace(Hold {
            matcher: Box::new(matcher),
            gate,
        });
        if let Some(old) = old {
            old.gate.send_replace(Gate::Forward);
        }
    }

    /// Hold only the `nth` (0-based) request `matcher` picks from now on.
    pub fn hold_nth(
        &self,
        nth: usize,
        matcher: impl Fn(&ProxyRequest) -> bool + Send + Sync + 'static,
    ) {
        let seen = AtomicUsize::new(0);
        self.hold(move |r| matcher(r) && seen.fetch_add(1, Ordering::SeqCst) == nth);
    }

    /// Requests waiting at the hold right now.
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Block until at least `n` requests are held; panics after `timeout`.
    pub fn wait_held(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.held() < n {
            assert!(
                Instant::now() < deadline,
                "no request reached the proxy's hold within {timeout:?}; requests seen:\n{:#?}",
                self.requests().iter().rev().take(20).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Forward the held requests and stop holding.
    pub fn release(&self) {
        self.end_hold(Gate::Forward);
    }

    /// Answer the held requests with 503 without forwarding them (their client is gone, or
    /// the test wants them never to reach the server), and stop holding.
    pub fn refuse_held(&self) {
        self.end_hold(Gate::Refuse);
    }

    fn end_hold(&self, how: Gate) {
        if let Some(h) = self.shared.lock().hold.take() {
            h.gate.send_replace(how);
        }
    }

    /// Answer 503 SlowDown to every request `matcher` picks (it may keep state, e.g. to
    /// fail only the first attempts of each request); `None` ends it.
    pub fn fail_when(&self, matcher: Option<Matcher>) {
        self.shared.lock().fail_when = matcher;
    }

    /// Fail `per_mille`/1000 of the requests (not held ones) with 503 SlowDown or 500
    /// InternalError, chosen by a generator seeded with `seed`.
    pub fn fail_randomly(&self, per_mille: u64, seed: u64) {
        let mut i = self.shared.lock();
        i.fail_per_mille = per_mille.min(1000);
        i.rng = seed | 1;
    }

    /// While on, every request is answered 503 (the server is overloaded or down).
    pub fn set_outage(&self, on: bool) {
        self.shared.lock().outage = on;
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<Logged> {
        self.shared.lock().log.clone()
    }

    /// How many answers were injected failures.
    pub fn injected(&self) -> usize {
        self.shared.lock().log.iter().filter(|l| l.injected).count()
    }

    /// Distinct object paths of the logged requests that `f` picks.
    pub fn paths_where(&self, f: impl Fn(&ProxyRequest) -> bool) -> HashSet<String> {
        self.shared
            .lock()
            .log
            .iter()
            .filter(|l| f(&l.request))
            .map(|l| l.request.path.clone())
            .collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.refuse_held();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn decide(shared: &Shared, req: &ProxyRequest) -> Decision {
    let mut i = shared.lock();
    if let Some(h) = &i.hold
        && (h.matcher)(req)
    {
        return Decision::Wait(h.gate.subscribe());
    }
    if i.fail_when.as_ref().is_some_and(|m| m(req)) {
        return Decision::Inject(StatusCode::SERVICE_UNAVAILABLE, "SlowDown");
    }
    if i.outage {
        return Decision::Inject(StatusCode::SERVICE_UNAVAILABLE, "SlowDown");
    }
    if i.fail_per_mille > 0 {
        // xorshift64*: deterministic for a seed, good enough to spread failures.
        let mut x = i.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        i.rng = x;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        if (r >> 11) % 1000 < i.fail_per_mille {
            return if r & 1 == 0 {
                Decision::Inject(StatusCode::SERVICE_UNAVAILABLE, "SlowDown")
            } else {
                Decision::Inject(StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
            };
        }
    }
    Decision::Forward
}

fn s3_error(status: StatusCode, code: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the test proxy</Message><RequestId>fault-proxy</RequestId></Error>"
    );
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/xml"));
    r
}

/// Hop-by-hop and length headers are the proxy's own business on each side.
fn forwardable(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in headers {
        match k.as_str() {
            "host" | "connection" | "keep-alive" | "transfer-encoding" | "content-length"
            | "expect" | "te" | "trailer" | "upgrade" | "proxy-connection" => {}
            _ => {
                out.append(k.clone(), v.clone());
            }
        }
    }
    out
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => return s3_error(StatusCode::BAD_REQUEST, "IncompleteBody"),
    };
    let info = ProxyRequest {
        method: parts.method.as_str().to_string(),
        path: percent_encoding::percent_decode_str(parts.uri.path())
            .decode_utf8_lossy()
            .into_owned(),
        query: parts.uri.query().unwrap_or("").to_string(),
        body: if parts.method == axum::http::Method::POST {
            String::from_utf8_lossy(&body).into_owned()
        } else {
            String::new()
        },
    };
    let mut decision = decide(&shared, &info);
    if let Decision::Wait(mut gate) = decision {
        // Counted while waiting, also if the client goes away and the wait is dropped.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        shared.held.fetch_add(1, Ordering::SeqCst);
        let waiting = Waiting(&shared.held);
        let verdict = loop {
            let now = *gate.borrow_and_update();
            if now != Gate::Closed {
                break now;
            }
            if gate.changed().await.is_err() {
                break Gate::Refuse;
            }
        };
        drop(waiting);
        decision = match verdict {
            Gate::Refuse => Decision::Inject(StatusCode::SERVICE_UNAVAILABLE, "SlowDown"),
            _ => Decision::Forward,
        };
    }
    let response = match decision {
        Decision::Inject(status, code) => {
            log(&shared, info, status.as_u16(), true);
            return s3_error(status, code);
        }
        _ => {
            let path_q = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            shared
                .client
                .request(parts.method.clone(), format!("{}{path_q}", shared.upstream))
                .headers(forwardable(&parts.headers))
                .body(body)
                .send()
                .await
        }
    };
    let upstream = match response {
        Ok(r) => r,
        Err(e) => {
            log(&shared, info, 502, false);
            let mut r = Response::new(Body::from(format!("proxy: upstream failed: {e}")));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            return r;
        }
    };
    let status = upstream.status();
    let mut headers = forwardable(upstream.headers());
    // A HEAD answer has no body to measure: its length is the object's.
    if parts.method == axum::http::Method::HEAD
        && let Some(len) = upstream.headers().get("content-length")
    {
        headers.insert("content-length", len.clone());
    }
    let bytes = upstream.bytes().await.unwrap_or_default();
    log(&shared, info, status.as_u16(), false);
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

fn log(shared: &Shared, request: ProxyRequest, status: u16, injected: bool) {
    shared.lock().log.push(Logged {
        request,
        status,
        injected,
    });
}

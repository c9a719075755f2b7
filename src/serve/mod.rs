//! `cargo eterna-port serve`: one long-lived process per workspace that a browser, a
//! bot or CI drives and watches over HTTP. The REST API of the system this tool grew
//! from (`/swarm/orchestrate`, `/eterna/port`, `/agent/{type}/execute`, …), runs with
//! live events (server-sent events and a websocket, replayed from the start for late
//! subscribers), an OpenAPI document with offline docs, and a dashboard. Every route is
//! a thin layer over the library calls the command line makes (`ops`): no second
//! pipeline.
//!
//! Safety is the command line's: requests are dry runs unless they say `"write": true`,
//! the writer's rules hold, one writing run per workspace at a time. A bearer token
//! (constant-time compared) guards every route but `GET /` when set, and is required to
//! listen on anything but loopback.

pub mod api;
pub mod runs;
pub mod work;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use subtle::ConstantTimeEq;
use utoipa::OpenApi;

use crate::ops::{Error, Session};

/// How the server is started (the flags of `serve`).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen.
    pub bind: SocketAddr,
    /// The bearer token every route but `GET /` needs; `None`: no auth (loopback only).
    pub token: Option<String>,
    /// Origins a browser page may call the API from (CORS); empty: same origin only.
    pub allow_origins: Vec<String>,
    /// Request bodies larger than this are refused (413).
    pub body_limit: usize,
}

/// What every handler shares.
pub struct App {
    /// The workspace, opened once.
    pub session: Session,
    /// The runs.
    pub runs: runs::Runs,
    /// The bearer token's hash (compared in constant time), when one is set.
    token: Option<[u8; 32]>,
}

/// The OpenAPI document (`GET /openapi.json`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "cargo-eterna-port serve",
        description = "Ports an ARM64 (EL2) Rust hypervisor workspace to x86_64 (Intel VT-x): the REST API of `cargo eterna-port serve`. Requests are dry runs unless they say \"write\": true. With a token set, send `Authorization: Bearer <token>` (or `?token=` where a header cannot be set: EventSource, a browser tab)."
    ),
    paths(
        api::status,
        api::health,
        api::orchestrate,
        api::agent,
        api::port_one,
        api::port_bulk,
        api::runs,
        api::run,
        api::cancel,
        api::events,
        api::websocket,
        api::plan,
        api::search
    ),
    components(schemas(
        api::Status,
        api::Health,
        api::HealthStats,
        api::WorkRequest,
        api::RunView,
        api::Started,
        api::PlannedTask,
        api::ErrorBody,
        api::ErrorDetail
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The largest request body by default (1 MiB).
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;

fn token_hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// Checks the bearer token (header, or `token` in the query) on every route but
/// `GET /`.
async fn auth(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(expected) = app.token else {
        return next.run(req).await;
    };
    if req.uri().path() == "/" && req.method() == Method::GET {
        return next.run(req).await;
    }
    let from_header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(str::to_string);
    let from_query = req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| percent_decode(v))
    });
    let given = from_header.or(from_query);
    // Hashes of equal length, compared in constant time: neither the token's bytes nor
    // its length leak through timing.
    let ok = given.is_some_and(|g| bool::from(token_hash(&g).ct_eq(&expected)));
    if ok {
        return next.run(req).await;
    }
    let mut response = api::ApiError::new(
        StatusCode::UNAUTHORIZED,
        "this server needs a bearer token: send `Authorization: Bearer <token>` (the token given to `serve` by --token-file or ETERNA_PORT_SERVE_TOKEN)",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// `%XX` escapes of a query value (a token may hold any character).
fn percent_decode(v: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| Some(hex(*bytes.get(i + 1)?)? << 4 | hex(*bytes.get(i + 2)?)?))
            .flatten();
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The routes, with auth, the body limit and CORS.
pub fn router(app: Arc<App>, opts: &ServeOptions) -> Router {
    let routes = Router::new()
        .route("/", get(api::status))
        .route("/swarm/health", get(api::health))
        .route("/swarm/orchestrate", post(api::orchestrate))
        .route("/agent/{type}/execute", post(api::agent))
        .route("/eterna/port", post(api::port_one))
        .route("/eterna/port/bulk", post(api::port_bulk))
        .route("/runs", get(api::runs))
        .route("/runs/{id}", get(api::run))
        .route("/runs/{id}/cancel", post(api::cancel))
        .route("/runs/{id}/events", get(api::events))
        .route("/runs/{id}/ws", get(api::websocket))
        .route("/plan", get(api::plan))
        .route("/search", get(api::search))
        .route("/openapi.json", get(api::openapi))
        .route("/docs", get(api::docs))
        .route("/ui", get(api::ui))
        .fallback(|| async {
            api::ApiError::new(
                StatusCode::NOT_FOUND,
                "no such route: GET /openapi.json lists them (GET /docs to read)",
            )
        })
        .layer(axum::middleware::from_fn_with_state(app.clone(), auth))
        .layer(DefaultBodyLimit::max(opts.body_limit))
        .with_state(app);
    if opts.allow_origins.is_empty() {
        return routes;
    }
    let origins: Vec<HeaderValue> = opts
        .allow_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    routes.layer(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
    )
}

/// What the server tells its caller.
pub trait ServeEvents: Send + Sync {
    /// It listens at this address.
    fn listening(&self, addr: SocketAddr);
    /// A message for the user.
    fn message(&self, text: &str);
}

/// Checks the options: a token is required to listen on anything but loopback.
pub fn check_options(opts: &ServeOptions) -> Result<(), Error> {
    if !opts.bind.ip().is_loopback() && opts.token.is_none() {
        return Err(anyhow::anyhow!(
            "--bind {}: not a loopback address, and no token is set: anyone who reaches it could write to the workspace. Set a token (--token-file PATH, or ETERNA_PORT_SERVE_TOKEN), or bind 127.0.0.1",
            opts.bind
        )
        .into());
    }
    if opts.body_limit == 0 {
        return Err(anyhow::anyhow!("--body-limit: give a size above 0").into());
    }
    Ok(())
}

/// Serves the session's workspace until Ctrl-C (or SIGTERM): then live runs are
/// cancelled, and waited for a while, so that what they wrote stays whole.
pub fn run(session: Session, opts: &ServeOptions, events: &dyn ServeEvents) -> Result<(), Error> {
    check_options(opts)?;
    let store = crate::ops::index::open_store(&session.config)?;
    let runs = runs::Runs::open(store)?;
    let app = Arc::new(App {
        session,
        runs,
        token: opts.token.as_deref().map(token_hash),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("eterna-port-serve")
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the server's runtime: {e}"))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(opts.bind)
            .await
            .map_err(|e| anyhow::anyhow!("--bind {}: cannot listen there: {e}", opts.bind))?;
        let addr = listener
            .local_addr()
            .map_err(|e| anyhow::anyhow!("--bind {}: {e}", opts.bind))?;
        events.listening(addr);
        let router = router(app.clone(), opts);
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown_signal(app.clone()))
            .await
            .map_err(|e| anyhow::anyhow!("the server stopped: {e}"))?;
        Ok::<_, Error>(())
    })?;
    let live = app.runs.in_progress();
    if !live.is_empty() {
        events.message(&format!(
            "stopping: waiting for {} cancelled run(s) to end",
            live.len()
        ));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while app.runs.in_progress().iter().any(|r| !r.finished())
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM, then cancels the live runs: their event streams end
/// with them, so the connections close and the server can stop.
async fn shutdown_signal(app: Arc<App>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    app.runs.cancel_all();
}

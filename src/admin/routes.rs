//! The admin endpoint's routes and handlers (listed in `mod.rs`), and the access check every
//! request passes first. Reports and timelines read the audit log on blocking threads; errors
//! are answered as `{"error": "..."}` with a 4xx or 5xx status. Allowlist changes are checked,
//! carried out and audited by the allowlist service ([`crate::allowlist`]), as the control
//! channel's are.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get};
use serde::Deserialize;

use super::{Access, MAX_BODY, Peer, Use, Verdict};
use crate::allowlist::{self, Addition, Via};
use crate::audit::report::{self, Filter, GroupBy};
use crate::control::ListedEntry;
use crate::gateway::Gateway;
use crate::metrics::{self, Gauges};

/// The dashboard page: inline CSS and JavaScript, no external asset.
const DASHBOARD: &str = include_str!("dashboard.html");

/// The page may load nothing from anywhere and talk only to this endpoint.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Query parameters read per request; more is refused.
const MAX_PARAMS: usize = 64;

/// Query parameters each reading route understands.
const REPORT_KEYS: [&str; 8] = [
    "since", "until", "class", "user", "kind", "result", "rule", "group_by",
];
const TIMELINE_KEYS: [&str; 8] = [
    "since", "until", "class", "user", "kind", "result", "rule", "bucket",
];

/// Timeline bucket when none is given.
const DEFAULT_BUCKET: Duration = Duration::from_secs(3600);

/// What the handlers share.
#[derive(Clone)]
struct App {
    shared: Arc<Gateway>,
    access: Arc<Access>,
}

/// The routes, behind the access check.
pub(super) fn router(shared: Arc<Gateway>, access: Arc<Access>) -> Router {
    let app = App { shared, access };
    Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(healthz))
        .route("/metrics", get(scrape))
        .route("/api/report", get(report_json))
        .route("/api/timeline", get(timeline_json))
        .route("/api/migration", get(migration_json))
        .route("/api/refusals", get(refusals_json))
        .route("/api/allowlist", get(list).post(add))
        .route("/api/allowlist/{ip}", delete(remove))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// An error answer: a status and a message, sent as `{"error": message}`.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(message: impl ToString) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, message.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mailgate admin\""),
            );
        }
        r
    }
}

/// Lets a request through if [`Access`] allows it; the page and the health check need no
/// token. API answers are never cached.
async fn guard(
    State(app): State<App>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    request: Request,
    next: Next,
) -> Response {
    let what = if matches!(request.uri().path(), "/" | "/healthz") {
        Use::Open
    } else if matches!(*request.method(), Method::GET | Method::HEAD) {
        Use::Read
    } else {
        Use::Write
    };
    match app.access.check(peer, request.headers(), what) {
        Verdict::Allow => {}
        Verdict::Unauthorized => {
            return ApiError(StatusCode::UNAUTHORIZED, "bearer token required".into())
                .into_response();
        }
        Verdict::Forbidden(why) => {
            tracing::warn!(%peer, "admin: refused ({why})");
            return ApiError(StatusCode::FORBIDDEN, why.into()).into_response();
        }
    }
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn dashboard() -> Response {
    let mut r = Html(DASHBOARD).into_response();
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    r
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such route".into())
}

async fn healthz(State(app): State<App>) -> Response {
    let shared = app.shared.clone();
    match tokio::task::spawn_blocking(move || super::health::check(&shared)).await {
        Ok(Ok(())) => "ok\n".into_response(),
        Ok(Err(why)) => {
            tracing::warn!("health check failed: {why}");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

async fn scrape(State(app): State<App>) -> Result<Response, ApiError> {
    let shared = app.shared.clone();
    // Reading the spool's index walks every queued id: off the async workers.
    let (queue_depth, oldest) = tokio::task::spawn_blocking(move || {
        (shared.spool.len() as u64, shared.spool.oldest_arrival())
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let now = app.shared.clock.now();
    let queue_oldest_seconds =
        oldest.map_or(0, |at| now.duration_since(at).unwrap_or_default().as_secs());
    let stats = app.shared.audit.stats();
    let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    let gauges = Gauges {
        // A store that cannot answer shows as empty rather than failing the whole scrape.
        allowlist_entries: app.shared.allowlist.len().await.unwrap_or(0) as u64,
        queue_depth,
        queue_oldest_seconds,
        audit_written: load(&stats.written),
        audit_dropped: load(&stats.dropped),
        audit_write_errors: load(&stats.write_errors),
        audit_lost: load(&stats.lost),
        cluster_up: app.shared.cluster.as_ref().map(|c| c.is_up()),
    };
    let text = app.shared.metrics.encode(&gauges);
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        )],
        text,
    )
        .into_response())
}

/// The query's pairs, refusing keys outside `known` (a typo would silently widen a report).
fn params(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    known: &[&str],
) -> Result<Vec<(String, String)>, ApiError> {
    let Query(pairs) = query.map_err(|e| ApiError::bad(e.body_text()))?;
    if pairs.len() > MAX_PARAMS {
        return Err(ApiError::bad(format!(
            "more than {MAX_PARAMS} query parameters"
        )));
    }
    if let Some((k, _)) = pairs.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        return Err(ApiError::bad(format!(
            "unknown parameter {k:?}; expected one of {}",
            known.join(", ")
        )));
    }
    Ok(pairs)
}

/// The last value given for `key`.
fn last<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Runs `f` over the audit log's files on a blocking thread.
async fn over_log<T: Send + 'static>(
    shared: &Gateway,
    f: impl FnOnce(&[std::path::PathBuf]) -> Result<T, report::Error> + Send + 'static,
) -> Result<T, ApiError> {
    let Some(audit) = shared.config.audit.clone() else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "the audit log is disabled ([audit] enabled = false)".into(),
        ));
    };
    let job = tokio::task::spawn_blocking(move || {
        let files = crate::audit::files(&audit.path, audit.keep);
        f(&files)
    });
    match job.await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e @ report::Error::Io { .. })) => {
            Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        }
        Ok(Err(e)) => Err(ApiError::bad(e)),
        Err(e) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

async fn report_json(
    State(app): State<App>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let pairs = params(query, &REPORT_KEYS)?;
    let group_by = match last(&pairs, "group_by") {
        Some(g) => g.parse::<GroupBy>().map_err(ApiError::bad)?,
        None => GroupBy::default(),
    };
    let filter = Filter::from_params(&pairs).map_err(ApiError::bad)?;
    let now = app.shared.clock.now();
    let r = over_log(&app.shared, move |files| {
        report::report(files, &filter, group_by, now)
    })
    .await?;
    let mut value = serde_json::to_value(&r)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if group_by == GroupBy::User {
        mark_known(&mut value, &r, &*app.shared.users);
    }
    Ok(Json(value))
}

/// Adds `"known"` to each user group: whether the name is a user (in the users file, or one
/// that logged in during the period, which the old server vouched for during a migration).
/// Guesses at names that do not exist are `false`, so the dashboard can keep them apart.
fn mark_known(
    value: &mut serde_json::Value,
    r: &report::Report,
    users: &dyn crate::auth::Authenticator,
) {
    let Some(groups) = value["groups"].as_array_mut() else {
        return;
    };
    for (json, g) in groups.iter_mut().zip(&r.groups) {
        let known = g.key != report::UNKNOWN && (g.successes > 0 || users.lookup(&g.key).is_some());
        json["known"] = serde_json::Value::Bool(known);
    }
}

/// `GET /api/refusals`: the last SMTP refusals, newest first (at most
/// [`crate::gateway::refusals::KEPT`]).
async fn refusals_json(State(app): State<App>) -> Json<Vec<crate::gateway::refusals::Refusal>> {
    Json(app.shared.refusals.newest_first())
}

/// `GET /api/migration?since=...`: during a migration (`[auth.upstream]` or `[auth.ldap]`),
/// the users who logged in but have no stored forms here: checked by the old server only.
async fn migration_json(
    State(app): State<App>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let pairs = params(query, &["since"])?;
    let since = last(&pairs, "since").map(str::to_owned);
    let enabled = app.shared.config.auth.upstream.is_some();
    let now = app.shared.clock.now();
    let users = app.shared.users.clone();
    let only = if enabled {
        over_log(&app.shared, move |files| {
            report::checked_elsewhere_only(files, since.as_deref(), now, &*users)
        })
        .await?
    } else {
        Vec::new()
    };
    Ok(Json(serde_json::json!({
        "checked_elsewhere": enabled,
        "count": only.len(),
        "users": only,
    })))
}

async fn timeline_json(
    State(app): State<App>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Vec<report::Bucket>>, ApiError> {
    let pairs = params(query, &TIMELINE_KEYS)?;
    let bucket = match last(&pairs, "bucket") {
        Some(b) => crate::config::parse_duration(b)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| ApiError::bad(format!("bucket {b:?}: write a duration (1h, 1d)")))?,
        None => DEFAULT_BUCKET,
    };
    let filter = Filter::from_params(&pairs).map_err(ApiError::bad)?;
    let now = app.shared.clock.now();
    let buckets = over_log(&app.shared, move |files| {
        report::timeline(files, &filter, bucket, now)
    })
    .await?;
    Ok(Json(buckets))
}

async fn list(State(app): State<App>) -> Result<Json<Vec<ListedEntry>>, ApiError> {
    let now = app.shared.clock.now();
    let entries = app.shared.allowlist.list(now).await?;
    Ok(Json(
        entries
            .iter()
            .map(|(net, e)| ListedEntry::new(*net, e))
            .collect(),
    ))
}

/// `POST /api/allowlist`: the entry to add (checked by the allowlist service).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddEntry {
    ip: String,
    /// Seconds, or a duration ("30m"); default: `[pop_before_smtp] ttl`.
    ttl: Option<Ttl>,
    user: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Ttl {
    Seconds(u64),
    Text(String),
}

impl AddEntry {
    /// The addition as the service takes it from every admin end.
    fn addition(&self) -> Addition<'_> {
        Addition {
            address: &self.ip,
            ttl: match &self.ttl {
                None => allowlist::Ttl::Default,
                Some(Ttl::Seconds(s)) => allowlist::Ttl::Seconds(*s),
                Some(Ttl::Text(t)) => allowlist::Ttl::Text(t),
            },
            user: &self.user,
        }
    }
}

/// The status of each refusal of the allowlist service.
impl From<allowlist::Error> for ApiError {
    fn from(e: allowlist::Error) -> ApiError {
        let status = match e {
            allowlist::Error::NotFound => StatusCode::NOT_FOUND,
            allowlist::Error::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(status, e.to_string())
    }
}

async fn add(
    State(app): State<App>,
    body: Result<Json<AddEntry>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::bad(e.body_text()))?;
    let now = app.shared.clock.now();
    let (net, entry) = app
        .shared
        .allowlist
        .add(&body.addition(), Via::Http, now)
        .await?;
    Ok((StatusCode::CREATED, Json(ListedEntry::new(net, &entry))).into_response())
}

async fn remove(State(app): State<App>, Path(ip): Path<String>) -> Result<StatusCode, ApiError> {
    let now = app.shared.clock.now();
    app.shared.allowlist.remove(&ip, Via::Http, now).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_become_additions_and_refusals_statuses() {
        // (body, the addition's TTL)
        let cases = [
            (
                r#"{"ip": "192.0.2.1", "user": "a"}"#,
                allowlist::Ttl::Default,
            ),
            (
                r#"{"ip": "192.0.2.1", "ttl": 60, "user": "a"}"#,
                allowlist::Ttl::Seconds(60),
            ),
            (
                r#"{"ip": "192.0.2.1", "ttl": "30m", "user": "a"}"#,
                allowlist::Ttl::Text("30m"),
            ),
        ];
        for (text, ttl) in cases {
            let body: AddEntry = serde_json::from_str(text).unwrap();
            let add = body.addition();
            assert_eq!((add.address, add.user, add.ttl), ("192.0.2.1", "a", ttl));
        }
        // (refusal, status)
        let cases = [
            (allowlist::Error::BadAddress, StatusCode::BAD_REQUEST),
            (allowlist::Error::BadUser, StatusCode::BAD_REQUEST),
            (allowlist::Error::BadTtl { max: 1 }, StatusCode::BAD_REQUEST),
            (allowlist::Error::NotFound, StatusCode::NOT_FOUND),
            (
                crate::store::Error::Unavailable("down".into()).into(),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (e, status) in cases {
            let text = e.to_string();
            let got = ApiError::from(e);
            assert_eq!((got.0, got.1), (status, text));
        }
    }

    #[test]
    fn unknown_and_too_many_parameters_are_refused() {
        let q = |pairs: Vec<(&str, &str)>| {
            Ok(Query(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ))
        };
        assert!(params(q(vec![("since", "7d"), ("class", "all")]), &REPORT_KEYS).is_ok());
        let err = params(q(vec![("sinse", "7d")]), &REPORT_KEYS).unwrap_err();
        assert!(err.1.contains("sinse"), "{}", err.1);
        assert!(params(q(vec![("group_by", "ip")]), &TIMELINE_KEYS).is_err());
        let many = vec![("user", "a"); MAX_PARAMS + 1];
        assert!(params(q(many), &REPORT_KEYS).is_err());
        let pairs = vec![("a".to_string(), "1".to_string()), ("a".into(), "2".into())];
        assert_eq!(last(&pairs, "a"), Some("2"));
    }
}

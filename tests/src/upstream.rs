//! The sample upstream app: answers by path so tests choose what Envoy proxies back.
//!
//! - `/status/{code}`: that status, a small JSON body;
//! - `/echo`: the request body back with the request's content type;
//! - `/slow/{ms}`: waits, then 200;
//! - anything else: 200 with `{"ok":true,"method":…,"path":…}`.
//!
//! Every request is recorded (method, path, headers, body) for assertions.

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

pub struct Upstream {
    pub port: u16,
    records: Arc<Mutex<Vec<RecordedRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Result<Upstream> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the upstream")?;
        let port = listener.local_addr()?.port();
        let records: Arc<Mutex<Vec<RecordedRequest>>> = Arc::default();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(records.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Upstream {
            port,
            records,
            task,
        })
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(records): State<Arc<Mutex<Vec<RecordedRequest>>>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    if let Ok(mut r) = records.lock() {
        r.push(RecordedRequest {
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: body.to_vec(),
        });
    }
    let json = |status: StatusCode, v: serde_json::Value| {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        (status, h, v.to_string()).into_response()
    };
    if let Some(code) = path.strip_prefix("/status/") {
        let status = code
            .split('/')
            .next()
            .and_then(|c| c.parse::<u16>().ok())
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        return json(status, serde_json::json!({"status": status.as_u16()}));
    }
    if path == "/echo" {
        let mut h = HeaderMap::new();
        if let Some(ct) = parts.headers.get("content-type") {
            h.insert("content-type", ct.clone());
        }
        return (StatusCode::OK, h, body).into_response();
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(100);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    json(
        StatusCode::OK,
        serde_json::json!({"ok": true, "method": parts.method.as_str(), "path": path}),
    )
}

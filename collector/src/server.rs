//! `serve`: opens and migrates the store, starts the writer, serves the
//! router (plain HTTP, or TLS/mTLS with rustls), publishes the chain head every
//! minute, and on shutdown stops accepting, lets in-flight batches finish and
//! get their answer (bounded by [`DRAIN`]), then drains the writer.
//! Connections are limited in number, idle time, header-read time and HTTP/2
//! streams ([`crate::conn`], [`http_limits`]).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::config::{IngestLimits, Settings, TlsFiles};
use crate::conn::LimitAcceptor;
use crate::http::{router, AppState};
use crate::metrics::Metrics;
use crate::store::{self, DynStore};
use anyhow::Context;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Longest wait for in-flight requests after a shutdown signal (SPEC: exit within 20 s).
pub const DRAIN: Duration = Duration::from_secs(15);

/// Opens the store named in the settings and applies its migrations.
pub async fn open_store(database_url: &str) -> anyhow::Result<DynStore> {
    let store = store::open(database_url)
        .await
        .with_context(|| format!("opening {}", crate::config::redact_url(database_url)))?;
    store.migrate().await.context("applying migrations")?;
    store
        .prepare_partitions(chrono::Utc::now())
        .await
        .context("creating partitions ahead")?;
    Ok(store)
}

/// Serves until `shutdown` resolves, then drains.
pub async fn run(
    settings: Settings,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = open_store(&settings.database_url).await?;
    run_with_store(settings, store, listener, shutdown).await
}

/// [`run`] with an already opened, migrated store.
pub async fn run_with_store(
    settings: Settings,
    store: DynStore,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if settings.admin_token.is_none() {
        tracing::warn!("MESHAUDIT_ADMIN_TOKEN is not set: the read and verify endpoints are open");
    }
    let metrics = Arc::new(Metrics::new().context("registering metrics")?);
    metrics.up.set(1.0);
    let head = store.head().await.context("reading the chain head")?;
    metrics.chain_head_seq.set(head.seq);
    let (state, writer_task) = AppState::start(settings.clone(), store.clone(), metrics.clone());
    let app = router(state);

    let head_task = tokio::spawn(publish_head(store.clone(), metrics.clone()));
    let exporters = crate::export::start(
        &settings.exporters,
        &settings.database_url,
        store.clone(),
        metrics.registry(),
        listener.local_addr().unwrap_or(settings.listen),
    )
    .await
    .context("starting the exporters")?;

    let handle = axum_server::Handle::new();
    let shutdown_handle = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing in-flight batches");
        shutdown_handle.graceful_shutdown(Some(DRAIN));
    });

    listener
        .set_nonblocking(true)
        .context("setting the listener non-blocking")?;
    let local = listener
        .local_addr()
        .context("reading the listen address")?;
    let limits = &settings.limits;
    let acceptor = LimitAcceptor::new(limits.max_connections, limits.idle_timeout, metrics.clone());
    // The peer address keys the rate limit when API keys are not required.
    let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    match &settings.tls {
        None => {
            tracing::info!(address = %local, backend = store.backend(), "serving HTTP");
            let mut server = axum_server::from_tcp(listener).acceptor(acceptor);
            http_limits(server.http_builder(), limits);
            server
                .handle(handle)
                .serve(service)
                .await
                .context("serving")?;
        }
        Some(tls) => {
            let config = tls_config(tls)?;
            tracing::info!(address = %local, backend = store.backend(), mtls = tls.client_ca.is_some(), "serving HTTPS");
            let mut server = axum_server::from_tcp_rustls(
                listener,
                axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config)),
            )
            .map(|tls| tls.acceptor(acceptor));
            http_limits(server.http_builder(), limits);
            server
                .handle(handle)
                .serve(service)
                .await
                .context("serving")?;
        }
    }
    head_task.abort();
    exporters.stop();
    // The router (and its writer handles) is gone: the writer ends once its queue is empty.
    if tokio::time::timeout(Duration::from_secs(4), writer_task)
        .await
        .is_err()
    {
        tracing::error!("the writer did not drain in time");
    }
    metrics.up.set(0.0);
    tracing::info!("stopped");
    Ok(())
}

/// hyper's own limits: without a timer its header-read timeout is off.
fn http_limits(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    limits: &IngestLimits,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams)
        // A client that stops reading cannot make us buffer much per stream.
        .max_send_buf_size(256 << 10);
}

/// The chain head in a log line every minute (and the gauge), so it can be kept
/// elsewhere; PostgreSQL partitions are also kept ahead here.
async fn publish_head(store: DynStore, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        match store.head().await {
            Ok(head) => {
                metrics.chain_head_seq.set(head.seq);
                tracing::info!(seq = head.seq, chain_hash = %head.chain_hash, "chain head");
            }
            Err(e) => tracing::warn!(error = %e, "could not read the chain head"),
        }
        if let Err(e) = store.prepare_partitions(chrono::Utc::now()).await {
            tracing::warn!(error = %e, "could not create partitions ahead");
        }
    }
}

fn read_pem_certs(
    path: &std::path::Path,
) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
    Ok(certs)
}

/// rustls server config (ring provider); client certificates required when a CA is given.
pub fn tls_config(tls: &TlsFiles) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_pem_certs(&tls.cert)?;
    let key_file =
        std::fs::File::open(&tls.key).with_context(|| format!("reading {}", tls.key.display()))?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(key_file))
        .with_context(|| format!("parsing the key in {}", tls.key.display()))?
        .with_context(|| format!("no private key in {}", tls.key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_pem_certs(ca)? {
                roots.add(cert).context("adding a client CA certificate")?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .context("building the client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
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
        _ = ctrl_c => {},
        _ = term => {},
    }
}

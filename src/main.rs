//! `gateway`: read the configuration, start the servers, shut down cleanly on SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use gateway::app::App;
use gateway::call::Env;
use gateway::config::{Cli, Config};
use gateway::directory::Directory;
use gateway::listener::{self, ClientAddr, ConnOptions};
use gateway::sip::{keepalive, ua};
use gateway::{api, ws};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

/// SIGTERM must end the process within 5 s (DESIGN.md run contract); unregistering gets
/// most of that.
const SHUTDOWN_BUDGET: Duration = Duration::from_millis(4000);
/// REST connections' send buffer: an event stream nobody reads fills it (and hyper's few
/// queued chunks) within a few hundred events, so the subscriber is dropped early.
const API_SEND_BUFFER: usize = 32 * 1024;

fn main() -> ExitCode {
    let cfg = match Config::resolve(Cli::parse()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("gateway: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cfg.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(Arc::new(cfg))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            eprintln!("gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

/// rsipstack logs every datagram at info level; keep it at warn unless asked for.
fn init_logging(filter: &str) {
    let filter = if filter.contains("rsipstack") {
        filter.to_string()
    } else {
        format!("{filter},rsipstack=warn")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for {what} on {addr}: {e}"))
}

async fn run(cfg: Arc<Config>) -> Result<(), String> {
    let tls = match &cfg.tls {
        Some(files) => Some(gateway::tls::acceptor(files).map_err(|e| e.to_string())?),
        None => None,
    };
    let ws_listener = bind(cfg.ws_listen, "WebSocket (--ws-listen)").await?;
    let api_listener = bind(cfg.api_listen, "REST (--api-listen)").await?;
    let (sip, incoming) = ua::SipUa::start(cfg.clone())
        .await
        .map_err(|e| e.to_string())?;

    let directory = Arc::new(Directory::default());
    let shutdown = CancellationToken::new();
    let (recovered_tx, recovered) = watch::channel(0u64);
    tokio::spawn(keepalive::run(
        sip.clone(),
        directory.clone(),
        cfg.options_interval,
        recovered_tx,
        shutdown.clone(),
    ));
    let media = media::engine::MediaEngine::start(media::engine::MediaConfig {
        bind_ip: cfg.sip_listen.ip(),
        sip_ip: cfg.public_ip,
        browser_ips: cfg.browser_ips.clone(),
        rtp_ports: cfg.rtp_ports,
        workers: cfg.media_workers,
        media_timeout: cfg.rtp_timeout,
        restart_grace: cfg.ice_restart_grace,
        ice_tcp_listen: cfg.ice_tcp_listen,
    })
    .map_err(|e| match e {
        media::engine::MediaError::IceTcp { .. } => format!("invalid --ice-tcp-listen: {e}"),
        e => format!(
            "cannot start the media plane (--rtp-ports {}-{}): {e}",
            cfg.rtp_ports.0, cfg.rtp_ports.1
        ),
    })?;

    let env = Arc::new(Env {
        cfg: cfg.clone(),
        directory,
        ua: sip.clone(),
        dialogs: sip.dialogs().clone(),
        media,
        shutdown: shutdown.clone(),
    });
    let app = Arc::new(App {
        env: env.clone(),
        recovered,
        tasks: TaskTracker::new(),
        limiter: Default::default(),
    });
    tokio::spawn(ua::serve_incoming(
        incoming,
        sip.dialogs().clone(),
        Arc::new(move |tx| gateway::call::route_invite(&env, tx)),
    ));

    let ws_conns = listener::accept(
        ws_listener,
        ConnOptions {
            tls: tls.clone(),
            send_buffer: None,
            linger: true,
        },
        shutdown.clone(),
    );
    let api_conns = listener::accept(
        api_listener,
        ConnOptions {
            tls,
            send_buffer: Some(API_SEND_BUFFER),
            linger: false,
        },
        shutdown.clone(),
    );
    let ws_server = axum::serve(
        ws_conns,
        ws::router(app.clone()).into_make_service_with_connect_info::<ClientAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let api_server = axum::serve(
        api_conns,
        api::router(app.clone()).into_make_service_with_connect_info::<ClientAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let servers = tokio::spawn(async move {
        let (a, b) = tokio::join!(ws_server, api_server);
        a.and(b)
    });
    info!(
        ws = %cfg.ws_listen,
        api = %cfg.api_listen,
        sip = %cfg.sip_listen,
        tls = cfg.tls.is_some(),
        sip_address = %cfg.public_ip,
        browser_candidates = ?cfg.browser_ips,
        "gateway ready"
    );

    wait_for_signal().await;
    info!("shutting down: unregistering every DN");
    shutdown.cancel();
    app.tasks.close();
    if tokio::time::timeout(SHUTDOWN_BUDGET, app.tasks.wait())
        .await
        .is_err()
    {
        error!("sessions did not finish within the shutdown budget");
    }
    sip.shutdown();
    // Open WebSockets are upgraded connections the HTTP server no longer tracks; give the
    // listeners a moment to close, no more.
    let _ = tokio::time::timeout(Duration::from_millis(200), servers).await;
    info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

//! `herald-edge`: parses the config, sets up logging, binds, runs the node
//! until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use clap::Parser;
use herald_edge::{run, Config, RunError};

/// Pending connections the kernel queues before the node accepts them.
const BACKLOG: u32 = 4096;
/// Exit code for bad configuration (EX_CONFIG).
const EXIT_CONFIG: u8 = 78;
/// Exit code when the address cannot be bound or serving fails (EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(e) = config.validate() {
        eprintln!("herald-edge: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let _telemetry = herald_edge::ops::telemetry::init(&config);
    let listener = match bind(config.listen) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(addr = %config.listen, error = %e, "cannot bind");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    // The bound address (port 0 picks one); test harnesses read it here.
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "listening");
    }
    match run(listener, config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (RunError::Config(_) | RunError::Key(_) | RunError::Mapping(_))) => {
            tracing::error!(error = %e, "bad configuration");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            tracing::error!(error = %e, "herald-edge failed");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

/// Binds with a listen backlog of [`BACKLOG`]: the default of 128 drops
/// connections when thousands of clients reconnect at once (a node failed).
fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

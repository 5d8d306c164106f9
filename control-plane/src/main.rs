//! `ferry-control-plane`: parses flags, starts logging and runs the server until
//! SIGINT/SIGTERM, then stops the embedded database it started.

use clap::Parser;
use ferry_control_plane::{config::Config, server};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn,tower_http=info".into()),
        )
        .init();
    let config = Config::parse();
    ferry_control_plane::metrics::raise_nofile_limit();
    match server::run(config, server::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("control plane failed: {e:#}");
            eprintln!("ferry-control-plane: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

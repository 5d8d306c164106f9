//! `ferryctl`: the command-line client of Ferry's REST API. Reads `FERRY_URL` and
//! `FERRY_TOKEN` (or `--token-file`), verifies an HTTPS control plane against the
//! cluster CA (`--ca-cert`, or `ca.pem` in `--data-dir`); prints aligned tables for people and
//! `-o json` for scripts; an error is one line with the server's `code`.

mod client;
mod commands;
mod table;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Parser)]
#[command(
    name = "ferryctl",
    version,
    about = "Command-line client of Ferry's control plane"
)]
pub struct Cli {
    /// The control plane's REST address.
    #[arg(
        long,
        global = true,
        env = "FERRY_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// The certificate authority to verify an `https://` control plane against
    /// (default: `ca.pem` in `--data-dir` when it is there, else the system's roots).
    #[arg(long, global = true, env = "FERRY_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// The control plane's data directory, where its cluster CA (`ca.pem`) is.
    #[arg(
        long,
        global = true,
        env = "FERRY_DATA_DIR",
        default_value = "./ferry-data"
    )]
    pub data_dir: std::path::PathBuf,
    /// API token.
    #[arg(long, global = true, env = "FERRY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the API token from this file (e.g. ferry-data/admin.token).
    #[arg(long, global = true, env = "FERRY_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Hosts: list, or show one.
    #[command(alias = "host")]
    Hosts {
        #[command(subcommand)]
        cmd: Option<commands::hosts::HostCmd>,
    },
    /// Virtual machines: list, show, create, delete.
    #[command(alias = "vm")]
    Vms {
        #[command(subcommand)]
        cmd: Option<commands::vms::VmCmd>,
    },
    /// Clusters: list, show, create, update.
    #[command(alias = "cluster")]
    Clusters {
        #[command(subcommand)]
        cmd: Option<commands::clusters::ClusterCmd>,
    },
    /// Balancing (DRS): show a cluster's balance, run a pass, apply or dismiss
    /// recommendations, set a VM's own level.
    Drs {
        #[command(subcommand)]
        cmd: commands::drs::DrsCmd,
    },
    /// Placement rules: affinity, anti-affinity, VM-host must/should (not).
    #[command(alias = "rules")]
    Rule {
        #[command(subcommand)]
        cmd: commands::rules::RuleCmd,
    },
    /// Scheduled operations: a migration, maintenance entry or exit, or a
    /// balancing pass, at a time or on a recurrence.
    #[command(alias = "schedules")]
    Schedule {
        #[command(subcommand)]
        cmd: commands::schedules::ScheduleCmd,
    },
    /// Datastores.
    #[command(alias = "datastore")]
    Datastores,
    /// Networks (port groups).
    #[command(alias = "network")]
    Networks,
    /// Tasks: list, or show one.
    #[command(alias = "task")]
    Tasks {
        #[command(subcommand)]
        cmd: Option<commands::tasks::TaskCmd>,
    },
    /// Events; `--follow` streams new ones as they happen.
    Events(commands::events::EventArgs),
    /// The audit trail (admin only): who changed what, from where, how it ended.
    Audit(commands::audit::AuditArgs),
    /// API tokens (admin only): list, create, delete.
    #[command(alias = "token")]
    Tokens {
        #[command(subcommand)]
        cmd: Option<commands::tokens::TokenCmd>,
    },
    /// Live migrations: list, show, cancel.
    #[command(alias = "migration")]
    Migrations {
        #[command(subcommand)]
        cmd: Option<commands::migrations::MigrationCmd>,
    },
    /// The control plane's health and version.
    Health,
    /// The token in use: its name and role.
    Whoami,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match commands::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferryctl: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! `tandem`: the appliance binary. Wires the data plane, the ng server and the HTTP port together.

mod app;
mod demo;

use clap::{Args, Parser, Subcommand};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use tandem_controlplane::config::Config;

/// mimalloc instead of glibc malloc: the control plane's request paths allocate per row and per
/// response; a 20-record API page read measured about a third faster (bench/RESULTS.md §A). The
/// data plane does not allocate per packet, so it is unaffected.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "Carrier-grade media gateway and contact-centre appliance"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the appliance (embedded defaults unless --config is given).
    Run(Box<RunArgs>),
    /// Starts the appliance on loopback and drives relayed calls through it, with a report.
    Demo(demo::DemoArgs),
}

#[derive(Args, Clone, Default)]
pub struct RunArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// I/O backend: uring or portable.
    #[arg(long)]
    io: Option<String>,
    /// Data-plane worker cores.
    #[arg(long)]
    cores: Option<usize>,
    /// ng control socket (UDP).
    #[arg(long)]
    ng: Option<SocketAddr>,
    /// HTTP port (/metrics, /api/v1).
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Directory for the SQLite database and the session key (default ./tandem-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Storage URL: sqlite://FILE or postgres://user:pass@host/db (default SQLite in --data-dir).
    #[arg(long)]
    storage_url: Option<String>,
    /// Address media sockets bind to.
    #[arg(long)]
    bind: Option<IpAddr>,
    /// Address written into SDP (defaults to --bind).
    #[arg(long)]
    advertise: Option<IpAddr>,
    #[arg(long)]
    port_min: Option<u16>,
    #[arg(long)]
    port_max: Option<u16>,
    /// Most sessions per core before `load limit`.
    #[arg(long)]
    sessions_per_core: Option<u32>,
    /// SIP listen address (UDP and TCP); port 0 picks a free port.
    #[arg(long)]
    sip: Option<std::net::SocketAddr>,
    /// Media inactivity timeout.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Datagrams that waited longer than this in the kernel (the process was stalled) are
    /// dropped, not relayed late.
    #[arg(long)]
    max_packet_age_ms: Option<u64>,
}

impl RunArgs {
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut cfg = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        let dp = &mut cfg.dataplane;
        if let Some(v) = &self.io {
            dp.io = v.clone();
        }
        dp.cores = self.cores.or(dp.cores);
        dp.bind = self.bind.unwrap_or(dp.bind);
        dp.advertise = self.advertise.or(dp.advertise);
        dp.port_min = self.port_min.unwrap_or(dp.port_min);
        dp.port_max = self.port_max.unwrap_or(dp.port_max);
        dp.sessions_per_core = self.sessions_per_core.or(dp.sessions_per_core);
        dp.timeout_ms = self.timeout_ms.unwrap_or(dp.timeout_ms);
        dp.max_packet_age_ms = self.max_packet_age_ms.unwrap_or(dp.max_packet_age_ms);
        cfg.ng.listen = self.ng.unwrap_or(cfg.ng.listen);
        cfg.http.listen = self.http.unwrap_or(cfg.http.listen);
        if let Some(dir) = &self.data_dir {
            cfg.storage.data_dir = dir.clone();
        }
        if let Some(url) = &self.storage_url {
            cfg.storage.url = Some(url.clone());
        }
        if let Some(sip) = self.sip {
            cfg.sip.listen_udp = Some(sip);
            cfg.sip.listen_tcp = Some(sip);
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Cmd::Run(args) => {
            let cfg = args.config()?;
            let appliance = app::Appliance::start(&cfg)?;
            appliance.run_until_signal()
        }
        Cmd::Demo(args) => demo::run(args),
    }
}

//! The running appliance: data-plane cores on their pinned threads, and a tokio runtime on the
//! remaining CPU(s) for the ng server and the HTTP port.

use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use tandem_controlplane::config::Config;
use tandem_controlplane::media::DataPlaneClient;
use tandem_controlplane::metrics::{NgMetrics, Registry};
use tandem_controlplane::ng;
use tandem_dataplane::engine::pin_current_thread;
use tandem_dataplane::DataPlane;

pub struct Appliance {
    runtime: tokio::runtime::Runtime,
    dataplane: DataPlane,
    pub ng_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub registry: Arc<Registry>,
}

impl Appliance {
    pub fn start(cfg: &Config) -> anyhow::Result<Appliance> {
        let mut dataplane = DataPlane::start(&cfg.engine()?).context("starting the data plane")?;
        if let Some(why) = &dataplane.fallback {
            tracing::warn!("{why}");
        }
        // The control plane stays off the data-plane cores' CPUs (threads inherit this mask).
        let _ = pin_current_thread(&dataplane.control_cpus);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(dataplane.control_cpus.len().max(1))
            .thread_name("control")
            .enable_all()
            .build()?;
        let cores = dataplane.take_cores();
        let core_count = cores.len();
        let per_core: Vec<_> = cores
            .iter()
            .map(|c| (c.base_port, c.capacity, c.budget))
            .collect();
        let advertise = cfg.advertised_address();
        let ng_cfg = cfg.ng.clone();
        let default_strict = cfg.dataplane.strict_source;
        let (ng_addr, http_addr, registry) = runtime.block_on(async {
            let (client, timeouts) = DataPlaneClient::new(cores, advertise)?;
            let ng_metrics = Arc::new(NgMetrics::default());
            let registry = Arc::new(Registry {
                cores: client.core_stats().to_vec(),
                ng: ng_metrics.clone(),
            });
            let ng_socket = tokio::net::UdpSocket::bind(ng_cfg.listen)
                .await
                .with_context(|| format!("binding the ng socket {}", ng_cfg.listen))?;
            let http = tokio::net::TcpListener::bind(cfg.http.listen)
                .await
                .with_context(|| format!("binding the HTTP port {}", cfg.http.listen))?;
            let addrs = (ng_socket.local_addr()?, http.local_addr()?);
            let handler = ng::handler::NgHandler::new(ng_cfg.max_calls, default_strict);
            tokio::spawn(ng::server::run(
                ng_socket, handler, client, timeouts, ng_metrics,
            ));
            let http_registry = registry.clone();
            tokio::spawn(async move {
                if let Err(e) = tandem_controlplane::http::serve(http, http_registry).await {
                    tracing::error!("HTTP server stopped: {e}");
                }
            });
            anyhow::Ok((addrs.0, addrs.1, registry))
        })?;
        eprintln!(
            "tandem: data plane {} core(s), io {}, media {}:{}-{} ({} sessions/core), ng udp {}, http {} (/metrics)",
            core_count,
            dataplane.backend_name,
            advertise,
            per_core.first().map(|c| c.0).unwrap_or(0),
            per_core.last().map(|c| c.0 as u32 + c.1 * 4 - 1).unwrap_or(0),
            per_core.first().map(|c| c.2).unwrap_or(0),
            ng_addr,
            http_addr,
        );
        Ok(Appliance {
            runtime,
            dataplane,
            ng_addr,
            http_addr,
            registry,
        })
    }

    /// Serves until SIGINT or SIGTERM, then stops the cores.
    pub fn run_until_signal(self) -> anyhow::Result<()> {
        self.runtime.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            anyhow::Ok(())
        })?;
        eprintln!("tandem: stopping");
        self.stop();
        Ok(())
    }

    pub fn stop(self) {
        self.runtime
            .shutdown_timeout(std::time::Duration::from_secs(1));
        self.dataplane.shutdown();
    }
}

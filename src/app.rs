//! The running appliance: data-plane cores on their pinned threads, and a tokio runtime on the
//! remaining CPU(s) for the ng server and the HTTP port.

use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use tandem_controlplane::api::{self, ApiState};
use tandem_controlplane::config::Config;
use tandem_controlplane::media::DataPlaneClient;
use tandem_controlplane::metrics::{NgMetrics, Registry};
use tandem_controlplane::ng;
use tandem_controlplane::sip::b2bua::Engine;
use tandem_controlplane::sip::config::DirectoryUpdate;
use tandem_controlplane::sip::metrics::SipMetrics;
use tandem_controlplane::sip::server::{self as sip_server, CallRecords, Listeners};
use tandem_controlplane::storage::Storage;
use tandem_dataplane::engine::pin_current_thread;
use tandem_dataplane::DataPlane;

pub struct Appliance {
    runtime: tokio::runtime::Runtime,
    dataplane: DataPlane,
    pub ng_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Where SIP listens (UDP, and TCP on the same port), when enabled.
    pub sip_addr: Option<SocketAddr>,
    pub registry: Arc<Registry>,
    /// The control API's shared state (storage, events), for the demo and tests.
    pub api: ApiState,
}

impl Appliance {
    pub fn start(cfg: &Config) -> anyhow::Result<Appliance> {
        let mut engine_cfg = cfg.engine()?;
        // Queue announcements: spoken prompts become clips after the hold music (cold path;
        // without espeak-ng, one warning and music only).
        let prompts = if cfg.sip.enabled {
            tandem_controlplane::prompts::load(&mut engine_cfg.clips, &cfg.storage.data_dir)
        } else {
            None
        };
        let mut dataplane = DataPlane::start(&engine_cfg).context("starting the data plane")?;
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
        let sip_cfg = cfg.sip.clone();
        let call_records = Arc::new(CallRecords::new(10_000));
        let records = call_records.clone();
        let storage_cfg = cfg.storage.clone();
        let http_cfg = cfg.http.clone();
        let admin_password = cfg
            .api
            .admin_password
            .clone()
            .or_else(|| std::env::var("TANDEM_ADMIN_PASSWORD").ok());
        let webhook_allow = cfg.api.webhook_allow.clone();
        let (ng_addr, http_addr, sip_addr, registry, api_state) = runtime.block_on(async {
            let api_state = open_storage(&storage_cfg, admin_password.as_deref(), &sip_cfg).await?;
            api_state.allow_webhook_networks(webhook_allow);
            let storage = api_state.storage.clone();
            let (client, mut timeouts) = DataPlaneClient::new(cores, advertise)?;
            let ng_metrics = Arc::new(NgMetrics::default());
            let sip_metrics = Arc::new(SipMetrics::default());
            let registry = Arc::new(Registry {
                cores: client.core_stats().to_vec(),
                ng: ng_metrics.clone(),
                sip: sip_metrics.clone(),
                api: api_state.metrics.clone(),
            });
            let (cdr_tx, cdr_rx) = tokio::sync::mpsc::channel(tandem_controlplane::cdr::QUEUE);
            tokio::spawn(tandem_controlplane::cdr::run_writer(
                storage.clone(),
                cdr_rx,
                api_state.events.clone(),
            ));
            // The ACD's events: published on the event hub, stored in the queue event log.
            let (acd_events_tx, acd_events_rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(tandem_controlplane::acd_log::run_writer(
                storage.clone(),
                acd_events_rx,
                api_state.events.clone(),
            ));
            tokio::spawn(api::webhooks::run_deliveries(
                api_state.clone(),
                api::webhooks::Retry::default(),
            ));
            // Session timeouts go to both signalling front ends; each ignores sessions it
            // does not own.
            let (ng_timeouts_tx, ng_timeouts) = tokio::sync::mpsc::channel(1024);
            let (sip_timeouts_tx, sip_timeouts) = tokio::sync::mpsc::channel(1024);
            tokio::spawn(async move {
                while let Some(t) = timeouts.recv().await {
                    let _ = ng_timeouts_tx.send(t).await;
                    let _ = sip_timeouts_tx.send(t).await;
                }
            });
            let sip_addr = if sip_cfg.enabled {
                let (listeners, addr) = bind_sip(&sip_cfg).await?;
                let mut engine_cfg = sip_cfg.clone();
                if let Some((listener, _)) = &listeners.tls {
                    engine_cfg.listen_tls = Some(listener.local_addr()?);
                }
                if engine_cfg.advertise.is_none() {
                    engine_cfg.advertise = Some(addr.to_string());
                }
                let mut engine = Engine::new(
                    engine_cfg,
                    advertise,
                    // Key for digest nonces and the seed of tags and branches: fresh per start.
                    tandem_controlplane::api::auth::random_bytes(),
                    std::time::Instant::now(),
                    sip_metrics,
                );
                engine.set_prompts(prompts);
                // Storage, seeded from the config file, is what the engine routes by.
                let directory = storage.directory().await?;
                engine.set_directory(sip_server::now(), directory.to_sip());
                let directory_tx = api_state.directory_updates.clone();
                let directory_rx = api_state.take_directory_updates();
                let changed = api_state.directory_reload.clone();
                let requested = api_state.directory_requested.clone();
                let account_seq = api_state.account_seq.clone();
                let reload_from = storage.clone();
                tokio::spawn(async move {
                    loop {
                        // The first change after a quiet spell applies at once; a burst (a
                        // provisioning script) is folded into one reload per 50 ms.
                        changed.notified().await;
                        let generation = requested.load(std::sync::atomic::Ordering::SeqCst);
                        let after = account_seq.load(std::sync::atomic::Ordering::SeqCst);
                        match reload_from.directory().await {
                            Ok(d) => {
                                let update = DirectoryUpdate::Full {
                                    directory: d.to_sip(),
                                    after,
                                    generation,
                                };
                                if directory_tx.send(update).is_err() {
                                    return;
                                }
                            }
                            Err(e) => tracing::error!("reloading the SIP directory: {e}"),
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                });
                // Agent actions and live status from the API, answered by the engine's ACD.
                let (acd_requests_tx, acd_requests_rx) = tokio::sync::mpsc::channel(1024);
                api_state.attach_acd(acd_requests_tx);
                tokio::spawn(sip_server::run(
                    engine,
                    listeners,
                    client.clone(),
                    sip_timeouts,
                    records,
                    sip_server::Wiring {
                        cdr: Some(cdr_tx),
                        events: Some(api_state.events.clone()),
                        directory: directory_rx,
                        directory_applied: Some(api_state.directory_applied.clone()),
                        acd_events: Some(acd_events_tx),
                        acd_requests: Some(acd_requests_rx),
                    },
                ));
                Some(addr)
            } else {
                None
            };
            let ng_socket = tokio::net::UdpSocket::bind(ng_cfg.listen)
                .await
                .with_context(|| format!("binding the ng socket {}", ng_cfg.listen))?;
            let http = tokio::net::TcpListener::bind(cfg.http.listen)
                .await
                .with_context(|| format!("binding the HTTP port {}", cfg.http.listen))?;
            let addrs = (ng_socket.local_addr()?, http.local_addr()?);
            let handler = ng::handler::NgHandler::new(ng_cfg.max_calls, default_strict);
            tokio::spawn(ng::server::run(
                ng_socket,
                handler,
                client,
                ng_timeouts,
                ng_metrics,
            ));
            let http_registry = registry.clone();
            let http_records = call_records.clone();
            let http_api = api_state.clone();
            let http_tls = match (&http_cfg.tls_certificate, &http_cfg.tls_private_key) {
                (Some(cert), Some(key)) => {
                    let names = vec![http_cfg.listen.ip().to_string()];
                    let setup =
                        tandem_controlplane::sip::tls::server(Some(cert), Some(key), &names)
                            .context("HTTPS certificate")?;
                    Some(setup.acceptor)
                }
                (None, None) => None,
                _ => anyhow::bail!("http.tls_certificate and http.tls_private_key go together"),
            };
            tokio::spawn(async move {
                if let Err(e) = tandem_controlplane::http::serve(
                    http,
                    http_registry,
                    http_records,
                    http_api,
                    http_tls,
                )
                .await
                {
                    tracing::error!("HTTP server stopped: {e}");
                }
            });
            anyhow::Ok((addrs.0, addrs.1, sip_addr, registry, api_state))
        })?;
        eprintln!(
            "tandem: data plane {} core(s), io {}, media {}:{}-{} ({} sessions/core), ng udp {}, http {} (/metrics), sip {}",
            core_count,
            dataplane.backend_name,
            advertise,
            per_core.first().map(|c| c.0).unwrap_or(0),
            per_core.last().map(|c| c.0 as u32 + c.1 * 4 - 1).unwrap_or(0),
            per_core.first().map(|c| c.2).unwrap_or(0),
            ng_addr,
            http_addr,
            sip_addr.map_or("off".to_string(), |a| format!("udp+tcp {a}")),
        );
        Ok(Appliance {
            runtime,
            dataplane,
            ng_addr,
            http_addr,
            sip_addr,
            registry,
            api: api_state,
        })
    }

    /// Runs `f` on the control plane's runtime (the demo's API calls, tests).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
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

/// Binds SIP's UDP socket and TCP listener; a TCP port of 0 on the UDP address follows the port
/// UDP got, so both transports share one advertised port.
async fn bind_sip(
    cfg: &tandem_controlplane::sip::config::SipConfig,
) -> anyhow::Result<(Listeners, SocketAddr)> {
    let udp = match cfg.listen_udp {
        Some(addr) => Some(
            tokio::net::UdpSocket::bind(addr)
                .await
                .with_context(|| format!("binding SIP UDP {addr}"))?,
        ),
        None => None,
    };
    let udp_addr = udp.as_ref().map(|s| s.local_addr()).transpose()?;
    let tcp = match cfg.listen_tcp {
        Some(mut addr) => {
            if let Some(u) = udp_addr {
                if addr.port() == 0 && addr.ip() == u.ip() {
                    addr.set_port(u.port());
                }
            }
            Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding SIP TCP {addr}"))?,
            )
        }
        None => None,
    };
    let tls = match cfg.listen_tls {
        Some(mut addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding SIP TLS {addr}"))?;
            addr = listener.local_addr()?;
            let names = vec!["localhost".to_string(), addr.ip().to_string()];
            let setup = tandem_controlplane::sip::tls::server(
                cfg.tls_certificate.as_deref(),
                cfg.tls_private_key.as_deref(),
                &names,
            )?;
            if setup.self_signed {
                tracing::warn!(
                    "SIP TLS on {addr} uses a self-signed certificate; set sip.tls_certificate and sip.tls_private_key"
                );
            }
            Some((listener, setup.acceptor))
        }
        None => None,
    };
    let addr = match (udp_addr, &tcp) {
        (Some(a), _) => a,
        (None, Some(t)) => t.local_addr()?,
        (None, None) => {
            anyhow::bail!("sip is enabled but neither listen_udp nor listen_tcp is set")
        }
    };
    Ok((Listeners { udp, tcp, tls }, addr))
}

/// Opens storage (creating the data directory), applies migrations, creates the first system
/// administrator and seeds the SIP directory from the config file.
async fn open_storage(
    cfg: &tandem_controlplane::config::StorageConfig,
    admin_password: Option<&str>,
    sip: &tandem_controlplane::sip::config::SipConfig,
) -> anyhow::Result<ApiState> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating the data directory {}", cfg.data_dir.display()))?;
    let url = cfg.url();
    let storage = Storage::open(&url)
        .await
        .with_context(|| format!("opening storage {}", redact(&url)))?;
    if let Some(password) = api::tenants::bootstrap_admin(&storage, admin_password)
        .await
        .map_err(|e| anyhow::anyhow!("creating the first administrator: {}", e.message))?
    {
        eprintln!(
            "tandem: created system administrator 'admin' with password {password} (shown once; log in with POST /api/v1/sessions)"
        );
    }
    let (seeded, kept) = storage.seed(sip).await?;
    if seeded > 0 {
        tracing::info!("storage: {seeded} SIP directory entries taken from the config file");
    }
    if kept > 0 {
        // Said at every start, so an operator who edits the file and restarts learns why the
        // edit did not take.
        tracing::warn!(
            "storage: {kept} SIP directory entries of the config file were already stored and were left as stored; after the first start storage wins: change them through the API"
        );
    }
    let key = session_key(&cfg.data_dir)?;
    Ok(ApiState::new(storage, key))
}

/// The key session tokens are signed with: kept in the data directory so sessions survive a
/// restart, readable by the owner only.
fn session_key(dir: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("session.key");
    if let Ok(bytes) = std::fs::read(&path) {
        if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(key);
        }
        anyhow::bail!("{} is not a 32-byte key", path.display());
    }
    let key = tandem_controlplane::api::auth::random_bytes();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&key)?;
    f.sync_all()?;
    Ok(key)
}

/// A storage URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

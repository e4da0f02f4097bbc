//! The appliance's configuration: TOML, every field optional, unknown fields rejected with the
//! line they are on. `Config::default()` is the embedded default `tandem run` starts with.

use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use tandem_dataplane::io::IoKind;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub dataplane: DataPlaneConfig,
    pub ng: NgConfig,
    pub http: HttpConfig,
    pub sip: crate::sip::config::SipConfig,
    pub storage: StorageConfig,
    pub api: ApiConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where the SQLite database, the session key and other local state live.
    pub data_dir: std::path::PathBuf,
    /// `postgres://user:pass@host/db` for PostgreSQL; absent = SQLite at `<data_dir>/tandem.db`.
    pub url: Option<String>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: "tandem-data".into(),
            url: None,
        }
    }
}

impl StorageConfig {
    pub fn url(&self) -> String {
        match &self.url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.data_dir.join("tandem.db").display()),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Password of the `admin` system administrator created on first start; absent = a random
    /// one, printed once.
    pub admin_password: Option<String>,
    /// Non-public networks webhooks may still be delivered to (`ip` or `ip/prefix`), e.g. a CRM
    /// on the LAN. Loopback, private, link-local (cloud metadata) and other non-public
    /// addresses are refused otherwise, so a tenant cannot aim the appliance at its own
    /// network.
    pub webhook_allow: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataPlaneConfig {
    /// Worker cores; absent = every CPU of the affinity mask but one.
    pub cores: Option<usize>,
    /// Address media sockets bind to.
    pub bind: IpAddr,
    /// Address written into SDP; absent = `bind` (must be set when binding a wildcard address).
    pub advertise: Option<IpAddr>,
    pub port_min: u16,
    pub port_max: u16,
    /// `portable` (epoll + recvmmsg/sendmmsg) or `uring`.
    pub io: String,
    pub batch: usize,
    pub sessions_per_core: Option<u32>,
    pub timeout_ms: u64,
    pub relatch_ms: u64,
    /// Datagrams that waited longer than this in the kernel (a stall) are dropped, not relayed.
    pub max_packet_age_ms: u64,
    /// SO_RCVBUF per media socket; bounds the backlog a stall can build (0: kernel default).
    pub socket_rcvbuf_bytes: u32,
    /// Default for legs whose ng request does not say: drop packets from anyone but the latched
    /// peer and never re-latch.
    pub strict_source: bool,
    /// Hold music for callers waiting in a queue, looped: an 8 kHz mono 16-bit WAV file, or an
    /// Ogg Vorbis or Opus file of one logical stream (8 to 96 kHz; mixed down to mono and
    /// resampled to 8 kHz once, at start). Absent: the built-in melody.
    pub hold_music: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NgConfig {
    pub listen: SocketAddr,
    /// Calls tracked at once; offers beyond it are refused.
    pub max_calls: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain and private key: with both, the HTTP port (API, metrics) speaks
    /// HTTPS only.
    pub tls_certificate: Option<std::path::PathBuf>,
    pub tls_private_key: Option<std::path::PathBuf>,
}

impl Default for DataPlaneConfig {
    fn default() -> Self {
        let engine = tandem_dataplane::Config::default();
        DataPlaneConfig {
            cores: None,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            advertise: None,
            port_min: engine.port_min,
            port_max: engine.port_max,
            io: DEFAULT_IO.to_string(),
            batch: engine.batch,
            sessions_per_core: None,
            timeout_ms: engine.timeout_ms,
            relatch_ms: engine.relatch_ms,
            max_packet_age_ms: engine.max_packet_age_ms,
            socket_rcvbuf_bytes: engine.socket_rcvbuf_bytes,
            strict_source: false,
            hold_music: None,
        }
    }
}

/// The backend that used less CPU per relayed packet in bench/RESULTS.md §0 (0.38–0.67× rtpengine's
/// against portable's 0.71–0.90×); it falls back to portable where io_uring is unavailable.
pub const DEFAULT_IO: &str = "uring";

impl Default for NgConfig {
    fn default() -> Self {
        NgConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 2223)),
            max_calls: 200_000,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_certificate: None,
            tls_private_key: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates; errors name the line and column.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<config>".into(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for net in &self.api.webhook_allow {
            let (ip, bits) = net.split_once('/').unwrap_or((net, "0"));
            if ip.parse::<IpAddr>().is_err() || bits.parse::<u8>().map_or(true, |b| b > 128) {
                return Err(ConfigError::Invalid(format!(
                    "api.webhook_allow: {net:?} is not an address or address/prefix"
                )));
            }
        }
        let dp = &self.dataplane;
        self.io_kind()?;
        if dp.port_min >= dp.port_max || dp.port_max - dp.port_min < 3 {
            return Err(ConfigError::Invalid(format!(
                "dataplane.port_min ({}) must be at least 4 below dataplane.port_max ({})",
                dp.port_min, dp.port_max
            )));
        }
        if dp.batch == 0 || dp.batch > 1024 {
            return Err(ConfigError::Invalid(
                "dataplane.batch must be 1..=1024".into(),
            ));
        }
        if dp.cores == Some(0) {
            return Err(ConfigError::Invalid(
                "dataplane.cores must be at least 1".into(),
            ));
        }
        if dp.bind.is_unspecified() && dp.advertise.is_none() {
            return Err(ConfigError::Invalid(
                "dataplane.advertise must be set when dataplane.bind is a wildcard address".into(),
            ));
        }
        self.sip
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(())
    }

    pub fn io_kind(&self) -> Result<IoKind, ConfigError> {
        self.dataplane
            .io
            .parse()
            .map_err(|e: String| ConfigError::Invalid(format!("dataplane.io: {e}")))
    }

    pub fn advertised_address(&self) -> IpAddr {
        self.dataplane.advertise.unwrap_or(self.dataplane.bind)
    }

    pub fn engine(&self) -> Result<tandem_dataplane::Config, ConfigError> {
        let dp = &self.dataplane;
        Ok(tandem_dataplane::Config {
            cores: dp.cores,
            bind: dp.bind,
            port_min: dp.port_min,
            port_max: dp.port_max,
            io: self.io_kind()?,
            batch: dp.batch,
            sessions_per_core: dp.sessions_per_core,
            timeout_ms: dp.timeout_ms,
            relatch_ms: dp.relatch_ms,
            max_packet_age_ms: dp.max_packet_age_ms,
            socket_rcvbuf_bytes: dp.socket_rcvbuf_bytes,
            clips: match &dp.hold_music {
                // Clip 0 is what queues play.
                Some(path) => vec![std::sync::Arc::new(
                    tandem_dataplane::clip::Clip::from_file(path)
                        .map_err(|e| ConfigError::Invalid(format!("dataplane.hold_music: {e}")))?,
                )],
                None => tandem_dataplane::Config::default().clips,
            },
            ..tandem_dataplane::Config::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_music_comes_from_a_wav_or_ogg_file_or_the_start_refuses_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("tandem-hold-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // One second of 8 kHz mono 16-bit PCM: RIFF header, fmt chunk, data chunk.
        let samples: Vec<i16> = (0..8000).map(|i| ((i % 40) * 400 - 8000) as i16).collect();
        let data_len = (samples.len() * 2) as u32;
        let mut wav = Vec::new();
        wav.extend_from_slice(b"RIFF");
        wav.extend_from_slice(&(36 + data_len).to_le_bytes());
        wav.extend_from_slice(b"WAVEfmt ");
        wav.extend_from_slice(&16u32.to_le_bytes());
        wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
        wav.extend_from_slice(&1u16.to_le_bytes()); // mono
        wav.extend_from_slice(&8000u32.to_le_bytes());
        wav.extend_from_slice(&16000u32.to_le_bytes());
        wav.extend_from_slice(&2u16.to_le_bytes());
        wav.extend_from_slice(&16u16.to_le_bytes());
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&data_len.to_le_bytes());
        for s in &samples {
            wav.extend_from_slice(&s.to_le_bytes());
        }
        let good = dir.join("hold.wav");
        std::fs::write(&good, &wav).unwrap();
        let mut cfg = Config::default();
        cfg.dataplane.hold_music = Some(good);
        let engine = cfg.engine().unwrap();
        assert_eq!(engine.clips.len(), 1);
        assert_eq!(engine.clips[0].duration_ms(), 1000);
        // Half a second of 44.1 kHz stereo Ogg Vorbis: 25 frames once at 8 kHz.
        let ogg = dir.join("hold.ogg");
        std::fs::write(
            &ogg,
            include_bytes!("../../media/tests/data/sine440_stereo_44k1.ogg"),
        )
        .unwrap();
        cfg.dataplane.hold_music = Some(ogg);
        assert_eq!(cfg.engine().unwrap().clips[0].duration_ms(), 500);
        let bad = dir.join("hold.mp3");
        std::fs::write(&bad, b"ID3 not a wave file").unwrap();
        cfg.dataplane.hold_music = Some(bad);
        let err = cfg.engine().unwrap_err().to_string();
        assert!(err.starts_with("dataplane.hold_music:"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn empty_file_is_the_embedded_default() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn reads_sections_and_rejects_unknown_fields_with_position() {
        let cfg = Config::parse(
            "[dataplane]\ncores = 2\nio = \"portable\"\n[ng]\nlisten = \"127.0.0.1:2300\"\n",
        )
        .unwrap();
        assert_eq!(cfg.dataplane.cores, Some(2));
        assert_eq!(cfg.io_kind().unwrap(), IoKind::Portable);
        assert_eq!(cfg.ng.listen.port(), 2300);
        let err = Config::parse("[dataplane]\ncores = 1\nportmin = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3") && err.contains("portmin"), "{err}");
        assert!(Config::parse("[dataplane]\nio = \"dpdk\"\n").is_err());
        assert!(Config::parse("[dataplane]\nport_min = 500\nport_max = 400\n").is_err());
        assert!(Config::parse("[dataplane]\nbind = \"0.0.0.0\"\n").is_err());
    }
}

#[cfg(test)]
mod example_file {
    #[test]
    fn shipped_example_parses_to_the_defaults() {
        let text = include_str!("../../deploy/tandem.example.toml");
        assert_eq!(
            super::Config::parse(text).unwrap(),
            super::Config::default()
        );
    }
}

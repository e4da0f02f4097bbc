//! `tandem-bench api`: paced HTTP load on the control API with keep-alive connections.
//!
//! Open loop: each request has a scheduled send time and its latency is measured from that time,
//! so a stalled server shows up as latency (no coordinated omission). Reads are GETs of a path;
//! writes create SIP accounts with unique names (each also writes an audit entry and reloads
//! the SIP directory, as a provisioning script would cause).

use hdrhistogram::Histogram;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub target: SocketAddr,
    pub token: String,
    /// GET this path (reads) or POST SIP accounts under this tenant (writes).
    pub path: String,
    pub write_tenant: Option<String>,
    pub rate: f64,
    pub duration: Duration,
    pub connections: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiReport {
    pub kind: &'static str,
    pub offered_rps: f64,
    pub completed: u64,
    pub achieved_rps: f64,
    pub errors: u64,
    pub non_2xx: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// One keep-alive connection: sends a request and reads one response (status, drained body).
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(target: SocketAddr) -> std::io::Result<Conn> {
        let s = TcpStream::connect(target)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn {
            writer: s.try_clone()?,
            reader: BufReader::new(s),
        })
    }

    fn request(&mut self, head_and_body: &[u8]) -> std::io::Result<u16> {
        self.writer.write_all(head_and_body)?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut length = 0usize;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("closed"));
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body)?;
        Ok(status)
    }
}

pub fn run(cfg: &ApiConfig) -> anyhow::Result<ApiReport> {
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let completed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let non_2xx = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(100);
    let interval = Duration::from_secs_f64(cfg.connections as f64 / cfg.rate);
    let per_conn = (cfg.rate * cfg.duration.as_secs_f64() / cfg.connections as f64).ceil() as u64;
    let run_id = std::process::id();
    let mut threads = Vec::new();
    for c in 0..cfg.connections {
        let cfg = cfg.clone();
        let (histogram, completed, errors, non_2xx) = (
            histogram.clone(),
            completed.clone(),
            errors.clone(),
            non_2xx.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let mut conn = Conn::open(cfg.target).ok();
            // Connections start staggered across one interval.
            let offset = interval.mul_f64(c as f64 / cfg.connections as f64);
            for i in 0..per_conn {
                let due = start + offset + interval * i as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let request = match &cfg.write_tenant {
                    None => format!(
                        "GET {} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {}\r\n\r\n",
                        cfg.path, cfg.token
                    ),
                    Some(tenant) => {
                        let body = format!(
                            "{{\"username\":\"b{run_id}-{c}-{i}\",\"password\":\"bench-password\"}}"
                        );
                        format!(
                            "POST /api/v1/tenants/{tenant}/sip-accounts HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            cfg.token,
                            body.len()
                        )
                    }
                };
                let result = match conn.as_mut() {
                    Some(c) => c.request(request.as_bytes()),
                    None => Err(std::io::Error::other("not connected")),
                };
                match result {
                    Ok(status) => {
                        if !(200..300).contains(&status) {
                            non_2xx.fetch_add(1, Ordering::Relaxed);
                        }
                        completed.fetch_add(1, Ordering::Relaxed);
                        let _ = local.record(due.elapsed().as_micros().max(1) as u64);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        conn = Conn::open(cfg.target).ok();
                    }
                }
            }
            if let Ok(mut h) = histogram.lock() {
                let _ = h.add(&local);
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-3);
    let h = histogram.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let done = completed.load(Ordering::Relaxed);
    Ok(ApiReport {
        kind: if cfg.write_tenant.is_some() {
            "write"
        } else {
            "read"
        },
        offered_rps: cfg.rate,
        completed: done,
        achieved_rps: done as f64 / elapsed,
        errors: errors.load(Ordering::Relaxed),
        non_2xx: non_2xx.load(Ordering::Relaxed),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: h.max() as f64 / 1000.0,
    })
}

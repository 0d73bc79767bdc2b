//! `auroraq doctor`: is every configured dependency reachable? A table, and a non-zero exit when
//! a required one is not.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Config;

#[derive(Debug, Serialize)]
pub struct Check {
    pub component: &'static str,
    pub target: String,
    pub required: bool,
    pub status: Status,
    pub detail: String,
}

#[derive(Debug, Serialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Failed,
    NotConfigured,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "FAILED",
            Status::NotConfigured => "not configured",
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(3);

fn check(component: &'static str, target: String, required: bool, r: Result<String, String>) -> Check {
    let (status, detail) = match r {
        Ok(d) => (Status::Ok, d),
        Err(e) => (Status::Failed, e),
    };
    Check {
        component,
        target,
        required,
        status,
        detail,
    }
}

pub async fn run(cfg: &Config) -> Vec<Check> {
    let mut out = checks(cfg).await;
    // Whatever a driver's message quotes of a URL (the URL itself, its password), the table and
    // `--json` show it redacted.
    let urls = [cfg.bus.url.as_str(), &cfg.postgres.url, &cfg.redis.url];
    for c in &mut out {
        for url in urls {
            c.detail = auroraq_util::scrub(&c.detail, url);
            c.target = auroraq_util::scrub(&c.target, url);
        }
    }
    out
}

async fn checks(cfg: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    out.push(check(
        "bus",
        redact(cfg.bus.url.as_str()),
        true,
        check_bus(cfg).await,
    ));
    out.push(
        service(
            "postgres",
            &cfg.postgres.url,
            cfg.postgres.required,
            check_postgres(&cfg.postgres.url),
        )
        .await,
    );
    out.push(
        service(
            "redis",
            &cfg.redis.url,
            cfg.redis.required,
            check_redis(&cfg.redis.url),
        )
        .await,
    );
    let lib = ort_library(&cfg.sentiment.ort_dylib);
    let lib_check = check_library(&lib);
    let runtime_ok = lib_check.is_ok();
    out.push(check(
        "onnxruntime",
        lib.display().to_string(),
        cfg.sentiment.required,
        lib_check,
    ));
    let dir = &cfg.sentiment.model_dir;
    out.push(check(
        "model",
        dir.display().to_string(),
        cfg.sentiment.required,
        check_model(dir, runtime_ok),
    ));
    out
}

async fn service(
    component: &'static str,
    url: &str,
    required: bool,
    f: impl std::future::Future<Output = Result<String, String>>,
) -> Check {
    if url.is_empty() {
        let status = if required {
            Status::Failed
        } else {
            Status::NotConfigured
        };
        return Check {
            component,
            target: "-".into(),
            required,
            status,
            detail: format!("set {component}.url"),
        };
    }
    check(component, redact(url), required, f.await)
}

/// Hides secrets (a URL's password, secret query parameters, a libpq `password=`): the
/// workspace's one redaction, re-exported for the runtime's other modules.
pub use auroraq_util::redact;

async fn check_bus(cfg: &Config) -> Result<String, String> {
    let bus = tokio::time::timeout(TIMEOUT * 2, crate::wiring::connect_bus(&cfg.bus))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("{e:#}"))?;
    let h = bus.health().await.map_err(|e| e.to_string());
    bus.close().await;
    h
}

async fn check_postgres(url: &str) -> Result<String, String> {
    // The same rules as the sink: a postgres:// URL naming its user and database.
    let pg = auroraq_sink_timescale::postgres_config(url).map_err(|e| e.to_string())?;
    let connect = pg.connect(tokio_postgres::NoTls);
    let (client, conn) = tokio::time::timeout(TIMEOUT, connect)
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let task = tokio::spawn(conn);
    let version: String = client
        .query_one("select current_setting('server_version')", &[])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    let ts: i64 = client
        .query_one(
            "select count(*) from pg_available_extensions where name = 'timescaledb'",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    task.abort();
    Ok(format!(
        "PostgreSQL {version}, timescaledb {}",
        if ts > 0 {
            "available"
        } else {
            "not available (plain partitioning will be used)"
        }
    ))
}

async fn check_redis(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("redis://").ok_or("not a redis:// URL")?;
    let hostport = rest
        .rsplit('@')
        .next()
        .unwrap_or(rest)
        .split('/')
        .next()
        .unwrap_or("");
    let addr = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:6379")
    };
    let mut s = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(&addr))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("{addr}: {e}"))?;
    s.write_all(b"*1\r\n$4\r\nPING\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(TIMEOUT, s.read(&mut buf))
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?;
    let reply = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
    if reply == "+PONG" {
        Ok(format!("PING answered at {addr}"))
    } else {
        Err(format!("unexpected reply {reply:?} (auth needed?)"))
    }
}

fn check_model(dir: &Path, runtime_ok: bool) -> Result<String, String> {
    let missing: Vec<&str> = ["model.onnx", "tokenizer.json", "config.json"]
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(format!("missing {}", missing.join(", ")));
    }
    let size = std::fs::metadata(dir.join("model.onnx"))
        .map(|m| m.len())
        .unwrap_or(0);
    #[cfg(feature = "sentiment")]
    if runtime_ok {
        // Load it for real: labels, tokenizer and session.
        let c = auroraq_sentiment::Classifier::load(dir, &auroraq_sentiment::ModelOptions::default())
            .map_err(|e| e.to_string())?;
        return Ok(format!(
            "loads: {} ({:.1} MB), labels {:?}, max length {}",
            c.model_id,
            size as f64 / 1e6,
            c.labels,
            c.max_length
        ));
    }
    let _ = runtime_ok;
    Ok(format!(
        "model.onnx ({:.1} MB), tokenizer.json, config.json",
        size as f64 / 1e6
    ))
}

/// The library the sentiment stage would load: `ORT_DYLIB_PATH`, the configured path, or the
/// project-local copy.
pub fn ort_library(configured: &Path) -> PathBuf {
    #[cfg(feature = "sentiment")]
    if let Ok(p) = auroraq_sentiment::runtime::find_library(Some(configured)) {
        return p;
    }
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| configured.to_owned())
}

fn check_library(lib: &Path) -> Result<String, String> {
    let bytes =
        std::fs::read(lib).map_err(|e| format!("{e} (run scripts/setup.sh, or set ORT_DYLIB_PATH)"))?;
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        return Err("not a shared library (no ELF header)".into());
    }
    #[cfg(feature = "sentiment")]
    {
        // Load it for real.
        auroraq_sentiment::runtime::init(Some(lib)).map_err(|e| e.to_string())?;
        Ok(format!("loads ({:.1} MB)", bytes.len() as f64 / 1e6))
    }
    #[cfg(not(feature = "sentiment"))]
    Ok(format!("ELF shared library, {:.1} MB", bytes.len() as f64 / 1e6))
}

/// Prints the table; returns whether every required check passed.
/// Whether every required check passed (the exit status of `auroraq doctor`).
pub fn all_required_ok(checks: &[Check]) -> bool {
    checks.iter().all(|c| !c.required || c.status == Status::Ok)
}

pub fn print(checks: &[Check]) -> bool {
    let w = checks
        .iter()
        .map(|c| c.target.len())
        .max()
        .unwrap_or(6)
        .clamp(6, 48);
    println!(
        "{:<12} {:<w$} {:<9} {:<15} detail",
        "component", "target", "required", "status"
    );
    for c in checks {
        let target: String = c.target.chars().take(w).collect();
        println!(
            "{:<12} {:<w$} {:<9} {:<15} {}",
            c.component,
            target,
            if c.required { "yes" } else { "no" },
            c.status.label(),
            c.detail
        );
    }
    checks.iter().all(|c| !c.required || c.status == Status::Ok)
}

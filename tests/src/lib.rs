//! Test support shared by AuroraQ's cross-crate tests.

pub mod binance_orders;
pub mod binance_server;
pub mod browser;
pub mod feedly_server;
pub mod proxy;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use auroraq_bus::{Bus, InProcBus, InProcConfig, KafkaBus, KafkaConfig, NatsBus, NatsConfig};

/// The NATS server the tests use: `AURORAQ_TEST_NATS_URL`, or the local one.
pub fn nats_url() -> String {
    std::env::var("AURORAQ_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A name no other test (in this or a concurrent run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}{}x{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos % 100_000
    )
}

/// A NATS config on its own stream and subject root, so tests never see each other's messages.
pub fn isolated_nats_config(url: &str, partitions: u32) -> NatsConfig {
    let name = unique("t");
    let mut cfg = NatsConfig::new(url);
    cfg.stream = name.to_uppercase();
    cfg.subject_root = name;
    cfg.partitions = partitions;
    cfg.max_age = Duration::from_secs(600);
    cfg
}

/// A JetStream bus on the shared server with an isolated stream (deleted on drop of the guard).
pub async fn nats_bus(partitions: u32) -> (Arc<NatsBus>, StreamGuard) {
    let cfg = isolated_nats_config(&nats_url(), partitions);
    let bus = NatsBus::connect(cfg).await.unwrap_or_else(|e| {
        panic!(
            "NATS with JetStream must run at {} for these tests: {e}",
            nats_url()
        )
    });
    let bus = Arc::new(bus);
    (bus.clone(), StreamGuard(Some(bus)))
}

/// Deletes a test stream when dropped.
pub struct StreamGuard(Option<Arc<NatsBus>>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(bus) = self.0.take() {
            // Best effort, on a small runtime of its own (the test's may be shutting down).
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    rt.block_on(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(5), bus.delete_stream()).await;
                    });
                }
            })
            .join();
        }
    }
}

/// Deletes the named stream on the shared server when dropped (for tests that let a child
/// process create it).
pub struct DeleteStreamOnDrop {
    pub stream: String,
}

impl Drop for DeleteStreamOnDrop {
    fn drop(&mut self) {
        let stream = std::mem::take(&mut self.stream);
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(async move {
                    if let Ok(c) = async_nats::connect(nats_url()).await {
                        let js = async_nats::jetstream::new(c);
                        let _ = tokio::time::timeout(Duration::from_secs(5), js.delete_stream(&stream)).await;
                    }
                });
            }
        })
        .join();
    }
}

/// The Kafka-protocol broker the tests use: `AURORAQ_TEST_KAFKA_URL`, or the one
/// `scripts/services.sh` starts (tansu on 127.0.0.1:19092).
pub fn kafka_url() -> String {
    std::env::var("AURORAQ_TEST_KAFKA_URL").unwrap_or_else(|_| "kafka://127.0.0.1:19092".to_owned())
}

/// A Kafka config under its own topic and group root, so tests never see each other's messages.
pub fn isolated_kafka_config(url: &str, partitions: u32) -> KafkaConfig {
    let mut cfg = KafkaConfig::new(url);
    cfg.root = unique("t");
    cfg.partitions = partitions;
    cfg.retention = Duration::from_secs(600);
    cfg
}

/// A Kafka bus on the shared broker under an isolated root (its topics and groups deleted on
/// drop of the guard).
pub async fn kafka_bus(partitions: u32) -> (Arc<KafkaBus>, KafkaGuard) {
    kafka_bus_with(isolated_kafka_config(&kafka_url(), partitions)).await
}

/// [`kafka_bus`] with settings of the test's own.
pub async fn kafka_bus_with(cfg: KafkaConfig) -> (Arc<KafkaBus>, KafkaGuard) {
    let bus = KafkaBus::connect(cfg).await.unwrap_or_else(|e| {
        panic!(
            "a Kafka-protocol broker must run at {} for these tests (scripts/services.sh starts one): {e}",
            kafka_url()
        )
    });
    let bus = Arc::new(bus);
    (bus.clone(), KafkaGuard(Some(bus)))
}

/// Deletes a test's Kafka topics and groups when dropped.
pub struct KafkaGuard(Option<Arc<KafkaBus>>);

impl Drop for KafkaGuard {
    fn drop(&mut self) {
        if let Some(bus) = self.0.take() {
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    rt.block_on(async move {
                        // Members stop (and commit) on the test's runtime, still running.
                        bus.close().await;
                        bus.stopped(Duration::from_secs(15)).await;
                        let _ = tokio::time::timeout(Duration::from_secs(10), bus.delete_all()).await;
                    });
                }
            })
            .join();
        }
    }
}

/// Deletes the Kafka topics and groups under `root` on the test broker when dropped (for tests
/// that let a child process create them).
pub struct DeleteKafkaRootOnDrop {
    pub root: String,
}

impl Drop for DeleteKafkaRootOnDrop {
    fn drop(&mut self) {
        let root = std::mem::take(&mut self.root);
        if root.is_empty() {
            return;
        }
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(async move {
                    let mut cfg = KafkaConfig::new(kafka_url());
                    cfg.root = root;
                    if let Ok(bus) = KafkaBus::connect(cfg).await {
                        let _ = tokio::time::timeout(Duration::from_secs(10), bus.delete_all()).await;
                        bus.close().await;
                    }
                });
            }
        })
        .join();
    }
}

pub fn inproc_bus(partitions: u32, queue_capacity: usize) -> Arc<InProcBus> {
    Arc::new(InProcBus::new(InProcConfig {
        partitions,
        queue_capacity,
        ..InProcConfig::default()
    }))
}

/// Upcasts for the generic suites.
pub fn dyn_bus<B: Bus>(b: Arc<B>) -> Arc<dyn Bus> {
    b
}

/// Polls `f` every 20 ms until it holds; fails the test, naming `what`, after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`wait_until`] for a condition that has to await (a query, a bus call): polls `f` every 20 ms
/// until it holds; fails the test, naming `what`, after `timeout`.
pub async fn wait_until_async<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while !f().await {
        assert!(t0.elapsed() < timeout, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A private `nats-server -js` on a loopback port with its own store, that a test may stop and
/// restart (the shared server must never be restarted by a test).
pub struct PrivateNats {
    pub port: u16,
    pub store: tempfile::TempDir,
    child: Option<Child>,
}

pub fn nats_server_binary() -> PathBuf {
    if let Ok(p) = std::env::var("NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    for p in [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ] {
        if std::path::Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("nats-server")
}

impl PrivateNats {
    pub fn start() -> Self {
        let store = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut s = PrivateNats {
            port: free_port(),
            store,
            child: None,
        };
        s.restart();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and store, and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(nats_server_binary())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", nats_server_binary().display()));
        self.child = Some(child);
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "nats-server did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server gracefully (SIGTERM), as an operator's restart would.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

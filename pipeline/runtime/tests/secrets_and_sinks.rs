//! Secrets in URLs never reach `doctor`'s output, and the PostgreSQL sink role stops at once, saying
//! why, on a URL it cannot use or a database that refuses it (instead of sitting idle until a
//! signal). Against the local PostgreSQL (`AURORAQ_TEST_POSTGRES_URL`, default
//! postgres://postgres@127.0.0.1:5432/postgres); ports 1 and 9 are closed on 127.0.0.1.

use std::time::Duration;

use auroraq_runtime::{doctor, roles, wiring, CancellationToken, Config};

fn admin_url() -> String {
    std::env::var("AURORAQ_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

#[tokio::test]
async fn doctor_never_shows_a_secret() {
    let mut cfg = Config::load(None, Vec::<(String, String)>::new()).expect("defaults");
    cfg.set_bus_url("nats://aq:TOPSECRET1@127.0.0.1:1")
        .expect("bus url");
    cfg.postgres.url = "postgres://postgres@127.0.0.1:1/postgres?password=TOPSECRET2".into();
    cfg.postgres.required = true;
    cfg.redis.url = "redis://:TOPSECRET3@127.0.0.1:1/0".into();
    cfg.redis.required = true;
    let checks = doctor::run(&cfg).await;
    let json = serde_json::to_string(&checks).expect("json");
    for secret in ["TOPSECRET1", "TOPSECRET2", "TOPSECRET3"] {
        assert!(!json.contains(secret), "doctor --json shows {secret}: {json}");
    }
    let bus = &checks[0];
    assert_eq!(bus.component, "bus");
    assert_eq!(bus.target, "nats://aq:***@127.0.0.1:1");
    assert!(
        bus.detail.contains("nats://aq:***@127.0.0.1:1"),
        "the failure still names the bus: {}",
        bus.detail
    );
    assert_eq!(
        checks[1].target,
        "postgres://postgres@127.0.0.1:1/postgres?password=***"
    );
    assert!(!doctor::all_required_ok(&checks));
}

#[tokio::test]
async fn doctor_refuses_a_postgres_url_without_user_as_the_sink_does() {
    let mut cfg = Config::load(None, Vec::<(String, String)>::new()).expect("defaults");
    // Set after loading (as `--url` would): the check itself must refuse it too.
    cfg.postgres.url = "postgres://127.0.0.1:5432/postgres".into();
    let checks = doctor::run(&cfg).await;
    let pg = &checks[1];
    assert_eq!(pg.status, doctor::Status::Failed, "{pg:?}");
    assert!(pg.detail.contains("names no user"), "{pg:?}");
}

/// Runs the role with `url` and no stop signal; it must end by itself within 20 s.
async fn sink_postgres_alone(url: &str) -> anyhow::Result<auroraq_sink_timescale::SinkStats> {
    let cfg = Config::load(None, Vec::<(String, String)>::new()).expect("defaults");
    let bus = wiring::connect_bus(&cfg.bus).await.expect("in-process bus");
    let stop = CancellationToken::new();
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        roles::sink_postgres(&cfg, bus, Some(url.to_owned()), stop.clone()),
    )
    .await;
    stop.cancel();
    r.unwrap_or_else(|_| panic!("`sink postgres --url {url}` did not stop by itself within 20 s"))
}

#[tokio::test]
async fn sink_postgres_stops_at_once_on_an_unusable_url() {
    for (url, why) in [
        ("mysql://x", "not a postgres:// URL"),
        (
            "host=127.0.0.1 user=postgres dbname=postgres password=TOPSECRET",
            "key/value",
        ),
        ("postgres://127.0.0.1:5432/postgres", "names no user"),
        ("postgres://postgres@127.0.0.1:5432", "names no database"),
    ] {
        let e = format!("{:#}", sink_postgres_alone(url).await.expect_err(url));
        assert!(e.contains(why), "{url}: {e}");
        assert!(!e.contains("TOPSECRET"), "{url}: {e}");
    }
}

#[tokio::test]
async fn sink_postgres_stops_at_once_when_the_database_refuses_it() {
    let base = admin_url();
    let (head, _) = base.rsplit_once('/').expect("a URL with a database");
    // A database that does not exist (3D000) and a role that does not exist (28000).
    let missing_db = format!("{head}/aq_no_such_database_here");
    let e = format!(
        "{:#}",
        sink_postgres_alone(&missing_db).await.expect_err("missing db")
    );
    assert!(
        e.contains("aq_no_such_database_here") && e.contains("does not exist"),
        "{e}"
    );
    let host = head.rsplit_once('@').map_or(head, |(_, h)| h);
    let missing_role = format!("postgres://aq_no_such_role:TOPSECRET@{host}/postgres");
    let e = format!(
        "{:#}",
        sink_postgres_alone(&missing_role)
            .await
            .expect_err("missing role")
    );
    assert!(e.contains("aq_no_such_role"), "{e}");
    assert!(!e.contains("TOPSECRET"), "{e}");
}

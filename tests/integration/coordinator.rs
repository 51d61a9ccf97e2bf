//! `prospeo coordinator` against a real PostgreSQL server started by the test (127.0.0.1): the
//! schema, the password's places, and the errors a data engineer meets first.

use serde_json::Value;

use crate::cli::{prospeo_with, stderr};
use crate::postgres::TestPostgres;

/// Runs `prospeo coordinator ARGS` against `url` with `env` (no password unless given; never
/// the developer's ~/.pgpass).
async fn coordinator(url: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut all = vec![
        "coordinator".to_string(),
        "--coordinator".to_string(),
        url.to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let mut env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if !env.iter().any(|(k, _)| k == "PGPASSFILE") {
        env.push(("PGPASSFILE".into(), "/nonexistent/pgpass".into()));
    }
    prospeo_with(all, env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_is_idempotent_and_status_shows_an_empty_coordinator() {
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let password = [("PGPASSWORD", pg.password())];
    for _ in 0..2 {
        let out = coordinator(&pg.url(), &["init"], &password).await;
        assert!(out.status.success(), "{}", stderr(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("is ready"), "{stdout}");
    }
    let out = coordinator(&pg.url(), &["status", "--json"], &password).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["schema_version"], 1);
    assert_eq!(status["answers"], 0);
    assert_eq!(status["keys"], Value::Array(vec![]));
    assert_eq!(status["coordinator"].as_str().unwrap(), pg.url());
    // The tables are the coordinator's own schema's.
    let tables = pg.psql(
        "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables WHERE table_schema = 'prospeo_coordinator'",
    );
    assert_eq!(
        tables.trim(),
        "answers,claims,key_state,schema_version,send_log,workers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_comes_from_pgpassword_or_a_private_pgpass_file_never_the_url() {
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    // No password anywhere: refused, exit 2, the server named, what to do said.
    let out = coordinator(&pg.url(), &["init"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains(&format!("127.0.0.1:{}", pg.port())),
        "{message}"
    );
    assert!(message.contains("PGPASSWORD"), "{message}");

    // A private password file works; one others can read is ignored, as libpq ignores it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgpass");
    std::fs::write(
        &file,
        format!(
            "127.0.0.1:{}:prospeo:prospeo:{}\n",
            pg.port(),
            pg.password()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let passfile = file.display().to_string();
    let out = coordinator(&pg.url(), &["init"], &[("PGPASSFILE", &passfile)]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = coordinator(&pg.url(), &["status"], &[("PGPASSFILE", &passfile)]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // A password in the URL is refused before connecting, and never echoed.
    let with_password = pg
        .url()
        .replace("prospeo@", &format!("prospeo:{}@", pg.password()));
    let out = coordinator(
        &with_password,
        &["status"],
        &[("PGPASSWORD", pg.password())],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let message = stderr(&out);
    assert!(message.contains("PGPASSWORD"), "{message}");
    assert!(!message.contains(pg.password()), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_coordinator_or_a_newer_schema_is_a_clear_error() {
    let Some(mut pg) = TestPostgres::start() else {
        return;
    };
    let password = [("PGPASSWORD", pg.password())];
    let out = coordinator(&pg.url(), &["status"], &password).await;
    assert_eq!(out.status.code(), Some(2), "no tables yet");
    assert!(
        stderr(&out).contains("prospeo coordinator init"),
        "{}",
        stderr(&out)
    );
    let out = coordinator(&pg.url(), &["init"], &password).await;
    assert!(out.status.success(), "{}", stderr(&out));

    pg.psql("UPDATE prospeo_coordinator.schema_version SET version = 99");
    let out = coordinator(&pg.url(), &["status"], &password).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("newer"), "{}", stderr(&out));

    pg.stop();
    let out = coordinator(&pg.url(), &["status"], &password).await;
    assert_eq!(out.status.code(), Some(2));
    let message = stderr(&out);
    assert!(message.contains("cannot be reached"), "{message}");
    assert!(!message.contains(pg.password()), "{message}");
}

async fn connected(pg: &TestPostgres) -> datafusion_prospeo::coordinator::Coordinator {
    use datafusion_prospeo::coordinator::{Coordinator, CoordinatorUrl};
    let url = CoordinatorUrl::parse(&pg.url()).unwrap();
    Coordinator::connect_with_password(&url, Some(pg.password().to_string()))
        .await
        .unwrap()
}

fn key() -> datafusion_prospeo::coordinator::KeyId {
    datafusion_prospeo::coordinator::KeyId::of(
        &datafusion_prospeo::api::ApiKey::new("coordinator-test-key").unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_booking_at_once_never_overbook_a_shared_window() {
    use datafusion_prospeo::api::RateLimits;
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    connected(&pg).await.init().await.unwrap();
    let limits = RateLimits::new(30, 1_000, 1_000_000);
    // Four workers, each with its own connection, book 15 requests of 10 records at once.
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let url = pg.url();
            let password = pg.password().to_string();
            tokio::spawn(async move {
                use datafusion_prospeo::coordinator::{Coordinator, CoordinatorUrl};
                let url = CoordinatorUrl::parse(&url).unwrap();
                let mut coordinator = Coordinator::connect_with_password(&url, Some(password))
                    .await
                    .unwrap();
                let mut waits = Vec::new();
                for _ in 0..15 {
                    let booking = coordinator
                        .reserve(&key(), 10, &limits, &format!("worker-{w}"))
                        .await
                        .unwrap();
                    waits.push(booking.wait);
                }
                waits
            })
        })
        .collect();
    for worker in workers {
        assert_eq!(worker.await.unwrap().len(), 15);
    }
    // 600 records at 30 a second: the bookings span 19 seconds at least.
    let span = pg.psql(
        "SELECT extract(epoch FROM max(sent_at) - min(sent_at)) >= 19 FROM prospeo_coordinator.send_log",
    );
    assert_eq!(span.trim(), "t", "the bookings span 19 s at least");
    // No one-second window of the bookings holds more than 30 records.
    let worst = pg.psql(
        "SELECT max(s) FROM (
            SELECT (SELECT sum(records) FROM prospeo_coordinator.send_log b
                    WHERE b.sent_at > a.sent_at - interval '1 second' AND b.sent_at <= a.sent_at) AS s
            FROM prospeo_coordinator.send_log a) windows",
    );
    assert_eq!(worst.trim(), "30", "the fullest one-second window");
    let booked = pg.psql("SELECT count(*), sum(records) FROM prospeo_coordinator.send_log");
    assert_eq!(booked.trim(), "60|600");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_booking_frees_its_records_and_a_block_holds_every_worker() {
    use datafusion_prospeo::api::RateLimits;
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let mut coordinator = connected(&pg).await;
    coordinator.init().await.unwrap();
    let limits = RateLimits::new(30, 1_000, 1_000_000);
    let first = coordinator.reserve(&key(), 30, &limits, "a").await.unwrap();
    assert_eq!(first.wait, std::time::Duration::ZERO, "{first:?}");
    let second = coordinator.reserve(&key(), 30, &limits, "a").await.unwrap();
    let gap = pg.psql(&format!(
        "SELECT extract(epoch FROM b.sent_at - a.sent_at) >= 1 FROM prospeo_coordinator.send_log a, prospeo_coordinator.send_log b WHERE a.id = {} AND b.id = {}",
        first.id, second.id
    ));
    assert_eq!(
        gap.trim(),
        "t",
        "the second is booked a window after the first"
    );
    coordinator.release(&second).await.unwrap();
    coordinator.release(&first).await.unwrap();
    let again = coordinator.reserve(&key(), 30, &limits, "a").await.unwrap();
    assert_eq!(
        again.wait,
        std::time::Duration::ZERO,
        "released records are free: {again:?}"
    );
    coordinator.release(&again).await.unwrap();

    // A block one worker learnt (a 429 until a reset) holds every worker of the key.
    coordinator
        .block_for(&key(), std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let mut other = connected(&pg).await;
    let blocked = other.reserve(&key(), 1, &limits, "b").await.unwrap();
    let after_block = pg.psql(&format!(
        "SELECT (SELECT sent_at FROM prospeo_coordinator.send_log WHERE id = {}) >= (SELECT blocked_until FROM prospeo_coordinator.key_state)",
        blocked.id
    ));
    assert_eq!(
        after_block.trim(),
        "t",
        "booked after the block: {blocked:?}"
    );
    // A request that can never fit a window is refused, not booked.
    assert!(other.reserve(&key(), 31, &limits, "b").await.is_err());
}

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
        assert!(!stdout.contains(pg.password()), "{stdout}");
    }
    let out = coordinator(&pg.url(), &["status", "--json"], &password).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["schema_version"], 1);
    assert_eq!(status["answers"], 0);
    assert_eq!(status["keys"], Value::Array(vec![]));
    assert_eq!(
        status["coordinator"].as_str().unwrap(),
        pg.url()
            .replace("127.0.0.1/", &format!("127.0.0.1:{}/", pg.port())),
        "the URL as given, with its port"
    );
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

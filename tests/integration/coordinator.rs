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
    // A request larger than the per-second limit is booked alone in its second, as the
    // vendor admits it.
    let big = other.reserve(&key(), 31, &limits, "b").await.unwrap();
    let alone = pg.psql(&format!(
        "SELECT (SELECT sent_at FROM prospeo_coordinator.send_log WHERE id = {}) - (SELECT sent_at FROM prospeo_coordinator.send_log WHERE id = {}) >= interval '1 second'",
        big.id, blocked.id
    ));
    assert_eq!(alone.trim(), "t", "booked alone in its second: {big:?}");
}

/// Runs `prospeo cache ARGS` with `env` (never the developer's ~/.pgpass; the harness gives
/// every run a cache file of its own through PROSPEO_CACHE unless `env` names one).
async fn cache(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut all = vec!["cache".to_string()];
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

/// Stdout and stderr of a run, which must never hold the coordinator's password.
fn without_password(out: &std::process::Output, password: &str) -> (String, String) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr(out),
    );
    assert!(!stdout.contains(password), "{stdout}");
    assert!(!stderr.contains(password), "{stderr}");
    (stdout, stderr)
}

/// `n` answers of every kind (a match with a revealed mobile, matches without, not matched,
/// invalid), stored at distinct times, keyed by distinct emails.
fn cache_answers(
    n: usize,
) -> Vec<(
    datafusion_prospeo::cache::CacheKey,
    datafusion_prospeo::cache::CacheEntry,
)> {
    use datafusion_prospeo::Datapoints;
    use datafusion_prospeo::api::wire::{EnrichFlags, Person};
    use datafusion_prospeo::cache::{CacheEntry, CacheKey, CachedAnswer};
    let revealed: Person = serde_json::from_value(serde_json::json!({
        "first_name": "Eva",
        "email": {"email": "eva@intercom.com", "revealed": true},
        "mobile": {"mobile": "+15550100", "revealed": true}
    }))
    .unwrap();
    let masked: Person = serde_json::from_value(serde_json::json!({
        "first_name": "Nicolas", "email": {"email": "nicolas@example.com", "revealed": true}
    }))
    .unwrap();
    (0..n)
        .map(|i| {
            let datapoints = Datapoints {
                email: Some(format!("p{i:05}@intercom.com")),
                first_name: Some("Eva".to_string()),
                ..Datapoints::default()
            };
            let (answer, mobile_requested, cost) = match i % 10 {
                0 => (
                    CachedAnswer::Matched {
                        person: Some(revealed.clone()),
                        company: None,
                        free_enrichment: false,
                    },
                    true,
                    10,
                ),
                1..=3 => (
                    CachedAnswer::Matched {
                        person: Some(masked.clone()),
                        company: None,
                        free_enrichment: i % 2 == 0,
                    },
                    false,
                    1,
                ),
                4 => (CachedAnswer::InvalidDatapoints, false, 0),
                _ => (CachedAnswer::NotMatched, false, 0),
            };
            let flags = EnrichFlags {
                only_verified_email: i % 3 == 0,
                ..EnrichFlags::default()
            };
            let entry = CacheEntry {
                answer,
                stored_at: std::time::SystemTime::UNIX_EPOCH
                    + std::time::Duration::from_millis(1_700_000_000_000 + i as u64 * 7),
                mobile_requested,
                cost,
            };
            (CacheKey::new(&datapoints, flags), entry)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_commands_read_export_and_clear_the_coordinators_answers_as_the_files() {
    use datafusion_prospeo::cache::{CacheKey, EncodedEntry, ResponseCache};
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let url = pg.url();
    let password = pg.password();
    let env = [("PGPASSWORD", password)];

    // Not set up yet: refused with what to do, exit 2.
    let out = cache(&["stats", "--coordinator", &url], &env).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let (_, message) = without_password(&out, password);
    assert!(message.contains("prospeo coordinator init"), "{message}");

    let mut coordinator = connected(&pg).await;
    coordinator.init().await.unwrap();

    // Empty: every count zero, the coordinator named by its URL (no password in it).
    let out = cache(&["stats", "--json", "--coordinator", &url], &env).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (stdout, _) = without_password(&out, password);
    let stats: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(stats["coordinator"], url.as_str());
    assert_eq!(stats["exists"], true);
    assert_eq!(stats["entries"], 0);
    assert_eq!(stats["file_bytes"], 0);
    assert_eq!(stats["oldest"], Value::Null);
    let out = cache(&["clear", "--coordinator", &url], &env).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (stdout, _) = without_password(&out, password);
    assert!(stdout.contains("nothing to remove"), "{stdout}");

    // The same answers in the coordinator and in a cache file; more than a page of each walk
    // (stats and clear read 10,000 rows a statement, export 8,192 answers a batch). A key put
    // twice keeps its later answer, as in the file.
    let entries = cache_answers(10_050);
    let encoded: Vec<(CacheKey, EncodedEntry)> = entries
        .iter()
        .map(|(key, entry)| (key.clone(), entry.encode()))
        .collect();
    let overwritten = (
        entries[7].0.clone(),
        entries[0].1.encode(), // a different answer, replaced by the put below
    );
    coordinator
        .put_answers(std::slice::from_ref(&overwritten))
        .await
        .unwrap();
    coordinator.put_answers(&encoded).await.unwrap();
    // Within one put, the last answer of a key wins too.
    coordinator
        .put_answers(&[overwritten.clone(), encoded[7].clone()])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("responses.redb");
    let local = ResponseCache::open(&file).unwrap();
    local.put_many(&entries).unwrap();
    let file_stats = local.stats().unwrap();
    drop(local);
    let file_arg = file.display().to_string();

    let out = cache(&["stats", "--json", "--coordinator", &url], &env).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (stdout, _) = without_password(&out, password);
    let mut stats: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(stats["entries"], 10_050);
    assert_eq!(stats["matched"], 4 * 1_005);
    assert_eq!(stats["not_matched"], 5 * 1_005);
    assert_eq!(stats["invalid_datapoints"], 1_005);
    assert_eq!(stats["with_revealed_mobile"], 1_005);
    assert_eq!(stats["unreadable"], 0);
    // Another API's answers are its own, as `enrich` keeps them: none for a sandbox's URL.
    let other = [
        "stats",
        "--json",
        "--coordinator",
        &url,
        "--base-url",
        "http://127.0.0.1:9",
    ];
    let out = cache(&other, &env).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (stdout, _) = without_password(&out, password);
    let other: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(other["entries"], 0, "{other}");
    let value_bytes = pg.psql("SELECT sum(octet_length(value)) FROM prospeo_coordinator.answers");
    assert_eq!(
        stats["file_bytes"].as_u64().unwrap().to_string(),
        value_bytes.trim()
    );
    // Every count as the file's, the oldest and newest too.
    let mut from_file = serde_json::to_value(&file_stats).unwrap();
    for value in [&mut stats, &mut from_file] {
        let object = value.as_object_mut().unwrap();
        for name in ["coordinator", "path", "exists", "file_bytes"] {
            object.remove(name);
        }
    }
    assert_eq!(stats, from_file);
    let out = cache(&["stats", "--coordinator", &url], &env).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (stdout, _) = without_password(&out, password);
    assert!(
        stdout.contains(&format!("cache                 {url}\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains("entries                    10050"),
        "{stdout}"
    );
    assert!(
        stdout.contains("revealed mobiles            1005"),
        "{stdout}"
    );

    // The export equals the file's, row for row, in every format's columns.
    let from_coordinator = dir.path().join("coordinator.parquet");
    let out = cache(
        &[
            "export",
            &from_coordinator.display().to_string(),
            "--coordinator",
            &url,
        ],
        &env,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, message) = without_password(&out, password);
    assert!(message.contains("Wrote 10050 cached answers"), "{message}");
    let from_file = dir.path().join("file.parquet");
    let out = cache(
        &[
            "export",
            &from_file.display().to_string(),
            "--cache",
            &file_arg,
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let concat = |path: &std::path::Path| {
        let batches = crate::cli::read_parquet(path);
        datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
    };
    let (coordinator_rows, file_rows) = (concat(&from_coordinator), concat(&from_file));
    assert_eq!(coordinator_rows.num_rows(), 10_050);
    assert_eq!(coordinator_rows, file_rows);

    // The library's walk: key order, bounded pages, every answer once.
    let mut pages = Vec::new();
    coordinator
        .for_each_answer_page(4_000, |page| {
            pages.push(page.to_vec());
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [4_000, 4_000, 2_050]
    );
    let mut sorted = entries.clone();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(pages.concat(), sorted);

    // A value another version wrote counts as unreadable, and is not exported.
    pg.psql("INSERT INTO prospeo_coordinator.answers (api, record_key, value) VALUES ('vendor', '\\x0102'::bytea, '\\x63'::bytea)");
    let out = cache(&["stats", "--json", "--coordinator", &url], &env).await;
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&stats["entries"], &stats["unreadable"]),
        (&10_051.into(), &1.into())
    );
    let out = cache(
        &[
            "export",
            &from_coordinator.display().to_string(),
            "--coordinator",
            &url,
        ],
        &env,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(concat(&from_coordinator).num_rows(), 10_050);

    // PROSPEO_COORDINATOR names it too; with PROSPEO_CACHE as well, which one is asked.
    let out = cache(
        &["stats", "--json"],
        &[
            ("PGPASSWORD", password),
            ("PROSPEO_COORDINATOR", &url),
            ("PROSPEO_CACHE", ""),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["entries"], 10_051);
    let out = cache(
        &["stats"],
        &[
            ("PGPASSWORD", password),
            ("PROSPEO_COORDINATOR", &url),
            ("PROSPEO_CACHE", &file_arg),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--coordinator"), "{}", stderr(&out));
    // A flag beats the other's variable.
    let out = cache(
        &["stats", "--json", "--cache", &file_arg],
        &[("PROSPEO_COORDINATOR", &url)],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["path"], file_arg.as_str());

    // Clear deletes every answer, says how many, and leaves the file alone.
    let out = cache(&["clear", "--coordinator", &url], &env).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (stdout, _) = without_password(&out, password);
    assert!(
        stdout.contains(&format!("Removed 10051 answers from the coordinator {url}")),
        "{stdout}"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM prospeo_coordinator.answers")
            .trim(),
        "0"
    );
    assert!(file.exists());
    let out = cache(&["stats", "--json", "--coordinator", &url], &env).await;
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["entries"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_commands_refuse_a_password_in_the_url_and_two_caches_at_once() {
    // Refused before anything connects: no server needed.
    let secret = "hunter2-not-a-real-one";
    for command in [
        &["stats"][..],
        &["export", "/nonexistent/out.parquet"],
        &["clear"],
    ] {
        let mut args = command.to_vec();
        let url = format!("postgres://prospeo:{secret}@127.0.0.1:1/prospeo");
        args.extend(["--coordinator", &url]);
        let out = cache(&args, &[]).await;
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let (_, message) = without_password(&out, secret);
        assert!(message.contains("PGPASSWORD"), "{message}");
        // The same from the variable.
        let out = cache(
            command,
            &[("PROSPEO_COORDINATOR", &url), ("PROSPEO_CACHE", "")],
        )
        .await;
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        without_password(&out, secret);
    }
    let out = cache(
        &[
            "clear",
            "--cache",
            "/nonexistent/responses.redb",
            "--coordinator",
            &format!("postgres://prospeo:{secret}@127.0.0.1:1/prospeo"),
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let (_, message) = without_password(&out, secret);
    assert!(message.contains("cannot be used with"), "{message}");
}

/// Two clients of the library on one key, through the coordinator: overlapping records are
/// asked once between them, each answer costs on its first asker only, and a third client finds
/// every answer stored (nothing sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_the_library_share_claims_and_answers() {
    use datafusion_prospeo::Datapoints;
    use datafusion_prospeo::api::{ApiKey, Client, EnrichFlags, RecordOutcome, RecordStatus};
    use datafusion_prospeo::coordinator::{CoordinatorPassword, CoordinatorUrl};

    use crate::common::{ALPHA, ALPHA_KEY, config, eva, nicolas, omar, strangers_from};

    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let out = coordinator(&pg.url(), &["init"], &[("PGPASSWORD", pg.password())]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let sandbox = crate::common::start(config()).await;
    let url = CoordinatorUrl::parse(&pg.url()).unwrap();
    let client = || {
        Client::builder()
            .base_url(sandbox.base_url())
            .api_key(ApiKey::new(ALPHA_KEY).unwrap())
            .coordinator(Some(url.clone()))
            .coordinator_password(CoordinatorPassword::new(pg.password()))
            .build()
            .unwrap()
    };
    let records = |values: Vec<serde_json::Value>| -> Vec<Datapoints> {
        values
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect()
    };
    // Nicolas and strangers 40..60 are in both.
    let mut first = vec![eva("a-eva"), nicolas("a-nicolas")];
    first.extend(strangers_from(0, 60));
    let mut second = vec![nicolas("b-nicolas"), omar("b-omar")];
    second.extend(strangers_from(40, 60));
    let (first, second) = (records(first), records(second));
    let (a, b) = (client(), client());
    let flags = EnrichFlags::default();
    let (answer_a, answer_b) =
        tokio::join!(a.bulk_enrich(&first, flags), b.bulk_enrich(&second, flags));
    let (answer_a, answer_b) = (answer_a.unwrap(), answer_b.unwrap());

    let stats = sandbox.stats().key(ALPHA).clone();
    assert_eq!(stats.asked_again, 0, "nothing asked twice: {stats:?}");
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    // Eva, Nicolas, Omar and strangers 0..100.
    assert_eq!(stats.records, 3 + 100, "every distinct record asked once");
    // Truthful statuses, in input order.
    let statuses = |batch: &datafusion_prospeo::api::BatchOutcome| -> Vec<RecordStatus> {
        batch.records.iter().map(RecordOutcome::status).collect()
    };
    let mut expected_a = vec![RecordStatus::Matched; 2];
    expected_a.extend([RecordStatus::NotMatched; 60]);
    assert_eq!(statuses(&answer_a), expected_a);
    let mut expected_b = vec![RecordStatus::Matched; 2];
    expected_b.extend([RecordStatus::NotMatched; 60]);
    assert_eq!(statuses(&answer_b), expected_b);
    // Nicolas is paid once, by whoever asked first.
    let (cost_a, cost_b) = (answer_a.records[1].cost(), answer_b.records[0].cost());
    assert!(
        (cost_a == 0) != (cost_b == 0),
        "one payer: {cost_a} {cost_b}"
    );
    let paid: i64 = answer_a
        .records
        .iter()
        .chain(&answer_b.records)
        .map(RecordOutcome::cost)
        .sum();
    assert_eq!(paid, stats.credits_charged);

    // A third client finds every answer stored: nothing is sent, nothing is paid.
    let c = client();
    let answer_c = c.bulk_enrich(&first, flags).await.unwrap();
    assert_eq!(statuses(&answer_c), expected_a);
    assert_eq!(c.totals().requests, 0);
    assert_eq!(answer_c.total_cost, 0);
    assert_eq!(sandbox.stats().key(ALPHA).records, stats.records);

    // Answers are kept per API: another server's (a sandbox's are never the vendor's) are not
    // served from them.
    let other = crate::common::start(config()).await;
    let elsewhere = Client::builder()
        .base_url(other.base_url())
        .api_key(ApiKey::new(ALPHA_KEY).unwrap())
        .coordinator(Some(url.clone()))
        .coordinator_password(CoordinatorPassword::new(pg.password()))
        .build()
        .unwrap();
    let answer = elsewhere.bulk_enrich(&first, flags).await.unwrap();
    assert_eq!(statuses(&answer), expected_a);
    assert_eq!(other.stats().key(ALPHA).records, first.len() as u64);
    other.stop().await.unwrap();
    sandbox.stop().await.unwrap();
}

/// Claims: one holder at a time; another worker takes a claim over only when its lease ran out,
/// and the first worker then learns, right before sending, that the records are no longer its.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_is_taken_over_only_after_its_lease_and_its_holder_learns_it_before_sending() {
    use std::time::Duration;

    use datafusion_prospeo::coordinator::{ClaimState, Clearance};

    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let mut init = connected(&pg).await;
    init.init().await.unwrap();
    let (a, b) = (connected(&pg).await, connected(&pg).await);
    let records = vec![b"person-1".to_vec(), b"person-2".to_vec()];
    let since = a.server_now().await.unwrap();
    let lease = Duration::from_secs(1);
    assert_eq!(
        a.claim(&key(), "a", &records, lease).await.unwrap(),
        [ClaimState::Mine, ClaimState::Mine]
    );
    // Held while the lease runs; claiming again is the holder's own renewal.
    assert_eq!(
        b.claim(&key(), "b", &records[..1], lease).await.unwrap(),
        [ClaimState::Held]
    );
    assert_eq!(
        a.claim(&key(), "a", &records[..1], lease).await.unwrap(),
        [ClaimState::Mine]
    );
    assert_eq!(
        a.clearance(&key(), since, "a", &records, lease)
            .await
            .unwrap(),
        Clearance::Clear
    );
    // The lease runs out (no heartbeat): the other worker takes the first record over. Waited
    // for on the database's clock, bounded.
    let mut taken = false;
    for _ in 0..50 {
        if b.claim(&key(), "b", &records[..1], lease).await.unwrap() == [ClaimState::Mine] {
            taken = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(taken, "the claim was taken over after its lease");
    assert_eq!(
        a.clearance(&key(), since, "a", &records, lease)
            .await
            .unwrap(),
        Clearance::ClaimsLost
    );
    // The new holder stores the answer and releases its claim in one transaction.
    let mut b = b;
    b.store_and_release(
        &key(),
        "b",
        &[(records[0].clone(), b"value".to_vec())],
        &records[..1],
    )
    .await
    .unwrap();
    assert_eq!(
        b.answers(&records).await.unwrap(),
        [Some(b"value".to_vec()), None]
    );
    let claims = pg.psql("SELECT string_agg(worker, ',') FROM prospeo_coordinator.claims");
    assert_eq!(claims.trim(), "a", "only a's unanswered claim is left");
    // An out-of-credits answer stops every worker that started before it.
    a.out_of_credits(&key()).await.unwrap();
    assert_eq!(
        b.clearance(&key(), since, "b", &[], lease).await.unwrap(),
        Clearance::OutOfCredits
    );
}

/// A window the vendor's headers say is used up holds every worker of the key until its reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_up_window_a_worker_learns_of_holds_every_worker() {
    use datafusion_prospeo::Datapoints;
    use datafusion_prospeo::api::{ApiKey, Client, EnrichFlags};
    use datafusion_prospeo::coordinator::{CoordinatorPassword, CoordinatorUrl};

    use crate::common::{ALPHA_KEY, config_with_limits, strangers_from};

    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let out = coordinator(&pg.url(), &["init"], &[("PGPASSWORD", pg.password())]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    // 20 records a minute: one request of 20 uses the minute up.
    let sandbox = crate::common::start(config_with_limits(20, 20, 1_000)).await;
    let client = Client::builder()
        .base_url(sandbox.base_url())
        .api_key(ApiKey::new(ALPHA_KEY).unwrap())
        .coordinator(Some(CoordinatorUrl::parse(&pg.url()).unwrap()))
        .coordinator_password(CoordinatorPassword::new(pg.password()))
        .build()
        .unwrap();
    let records: Vec<Datapoints> = strangers_from(0, 20)
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    let answer = client
        .bulk_enrich(&records, EnrichFlags::default())
        .await
        .unwrap();
    assert_eq!(answer.tally.records_sent, 20);
    // Every worker of the key now waits for the minute's reset (about 60 s from now).
    let blocked = pg.psql(
        "SELECT extract(epoch FROM blocked_until - clock_timestamp()) > 30 FROM prospeo_coordinator.key_state",
    );
    assert_eq!(blocked.trim(), "t");
    sandbox.stop().await.unwrap();
}

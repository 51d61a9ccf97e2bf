//! A real S3-compatible server for tests: `s3s-fs` serves a folder over the S3 protocol on
//! 127.0.0.1, in process, with fixed test credentials. Each top-level folder of the root is a
//! bucket, so a test can lay files out on disk and read them back over S3 (or the reverse).
//!
//! Other test modules use it through `crate::s3::S3Server`: [`S3Server::store`] for an
//! in-process `ObjectStore`, [`S3Server::env`] for a child process (the `prospeo` binary),
//! which builds its stores with `AmazonS3Builder::from_env()`.

#![allow(dead_code)] // not every test binary module uses every accessor

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use datafusion::object_store::aws::AmazonS3Builder;
use datafusion::object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

const ACCESS_KEY: &str = "prospeo-test-access-key";
const SECRET_KEY: &str = "prospeo-test-secret-key";
const REGION: &str = "us-east-1";

/// An S3 server over a folder, on 127.0.0.1 and a free port. Dropping it stops the server:
/// the listener closes and every open connection is ended.
pub struct S3Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl S3Server {
    /// Serves `root` (each top-level folder is a bucket) on 127.0.0.1, a free port, with fixed
    /// test credentials and region. Requests must be signed with those credentials.
    pub async fn start(root: &std::path::Path) -> S3Server {
        let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs over the test folder");
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        // No host parser: path-style requests only (http://127.0.0.1:PORT/bucket/key).
        let service = builder.build();

        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind 127.0.0.1:0 for the S3 server");
        let addr = listener.local_addr().expect("the S3 server's address");

        let task = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            // Connections live in this set, owned by this task: aborting the task drops the
            // set, which aborts every connection still open (keep-alive ones included).
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((socket, _)) = accepted else { continue };
                        let conn = http
                            .serve_connection(TokioIo::new(socket), service.clone())
                            .into_owned();
                        connections.spawn(async move {
                            let _ = conn.await;
                        });
                    }
                    // Reap finished connections so the set does not grow with the test.
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        S3Server { addr, task }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn access_key(&self) -> &str {
        ACCESS_KEY
    }

    pub fn secret_key(&self) -> &str {
        SECRET_KEY
    }

    pub fn region(&self) -> &str {
        REGION
    }

    /// An object store for `bucket` on this server (path-style requests, plain HTTP). Its
    /// requests time out after 10 s and are retried at most twice, so a test that goes wrong
    /// fails in seconds rather than after object_store's default three minutes of retries.
    pub fn store(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(self.endpoint())
                .with_bucket_name(bucket)
                .with_access_key_id(ACCESS_KEY)
                .with_secret_access_key(SECRET_KEY)
                .with_region(REGION)
                .with_virtual_hosted_style_request(false)
                // Replaces the builder's client options, so allow_http goes in here.
                .with_client_options(bounded_client().with_allow_http(true))
                .with_retry(bounded_retry())
                .build()
                .expect("an S3 object store for the test server"),
        )
    }

    /// The environment variables a process needs to reach this server with
    /// `AmazonS3Builder::from_env()` (object_store 0.13 reads `AWS_*` variables, lower-cased, as
    /// its config keys: `aws_endpoint`, `aws_access_key_id`, `aws_secret_access_key`,
    /// `aws_region`, `aws_allow_http`, `aws_virtual_hosted_style_request`).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
            // The default already, but a developer's own environment may say otherwise.
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn bounded_client() -> ClientOptions {
    ClientOptions::new()
        .with_timeout(Duration::from_secs(10))
        .with_connect_timeout(Duration::from_secs(5))
}

fn bounded_retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use datafusion::arrow::array::{Array, Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::object_store::aws::AmazonS3ConfigKey;
    use datafusion::object_store::path::Path as ObjectPath;
    use datafusion::object_store::{ObjectStoreExt, PutPayload};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::prelude::SessionContext;
    use futures::TryStreamExt;

    /// Bound for a whole test: a hung server or client fails the test instead of the run.
    const TEST_BOUND: Duration = Duration::from_secs(60);

    async fn bounded<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(TEST_BOUND, f)
            .await
            .expect("the test finished within its bound")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_object_put_over_s3_is_listed_read_back_and_lands_on_disk() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("bucket")).unwrap();
        let s3 = S3Server::start(root.path()).await;
        let store = s3.store("bucket");
        let path = ObjectPath::from("inputs/hello.txt");
        let body = b"hello over a real S3 server".as_slice();

        bounded(async {
            store
                .put(&path, PutPayload::from_static(body))
                .await
                .expect("put");

            let listed: Vec<_> = store
                .list(Some(&ObjectPath::from("inputs")))
                .try_collect()
                .await
                .expect("list");
            assert_eq!(listed.len(), 1, "{listed:?}");
            assert_eq!(listed[0].location, path);
            assert_eq!(listed[0].size, body.len() as u64);

            let got = store
                .get(&path)
                .await
                .expect("get")
                .bytes()
                .await
                .expect("get body");
            assert_eq!(got.as_ref(), body);
        })
        .await;

        // The server wrote the object into the served folder: this is the real thing.
        let on_disk = std::fs::read(root.path().join("bucket/inputs/hello.txt")).unwrap();
        assert_eq!(on_disk, body);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_laid_on_disk_is_read_over_s3_and_unknown_credentials_are_refused() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("bucket/dir")).unwrap();
        std::fs::write(root.path().join("bucket/dir/a.csv"), "lead_id\n1\n").unwrap();
        let s3 = S3Server::start(root.path()).await;

        bounded(async {
            let got = s3
                .store("bucket")
                .get(&ObjectPath::from("dir/a.csv"))
                .await
                .expect("get")
                .bytes()
                .await
                .unwrap();
            assert_eq!(got.as_ref(), b"lead_id\n1\n");

            let stranger = AmazonS3Builder::new()
                .with_endpoint(s3.endpoint())
                .with_bucket_name("bucket")
                .with_access_key_id("someone-else")
                .with_secret_access_key("not-the-secret")
                .with_region(s3.region())
                .with_client_options(bounded_client().with_allow_http(true))
                .with_retry(bounded_retry())
                .build()
                .unwrap();
            let refused = stranger.get(&ObjectPath::from("dir/a.csv")).await;
            assert!(
                matches!(
                    refused,
                    Err(datafusion::object_store::Error::PermissionDenied { .. })
                ),
                "a request signed with other credentials: {refused:?}"
            );
        })
        .await;
    }

    /// `env()` names exactly what `AmazonS3Builder::from_env()` reads. The process environment
    /// is shared by all tests, so this does what `from_env` does (lower-case each `AWS_*`
    /// name and parse it as a config key) without touching it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_environment_it_hands_out_reaches_it_as_from_env_would() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("bucket")).unwrap();
        std::fs::write(root.path().join("bucket/x.txt"), "x").unwrap();
        let s3 = S3Server::start(root.path()).await;

        let mut builder = AmazonS3Builder::new().with_bucket_name("bucket");
        for (name, value) in s3.env() {
            assert!(name.starts_with("AWS_"), "{name}");
            let key: AmazonS3ConfigKey = name
                .to_ascii_lowercase()
                .parse()
                .unwrap_or_else(|e| panic!("object_store does not read {name}: {e}"));
            builder = builder.with_config(key, value);
        }
        assert_eq!(
            builder.get_config_value(&AmazonS3ConfigKey::Endpoint),
            Some(s3.endpoint())
        );
        // Client options left as the environment set them (AWS_ALLOW_HTTP among them).
        let store = builder.with_retry(bounded_retry()).build().unwrap();
        let got = bounded(async {
            store
                .get(&ObjectPath::from("x.txt"))
                .await
                .expect("get")
                .bytes()
                .await
                .unwrap()
        })
        .await;
        assert_eq!(got.as_ref(), b"x");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_server_stops_it() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("bucket")).unwrap();
        std::fs::write(root.path().join("bucket/x.txt"), "x").unwrap();
        let s3 = S3Server::start(root.path()).await;
        let store = s3.store("bucket");
        let path = ObjectPath::from("x.txt");
        bounded(async { store.head(&path).await.expect("head while it runs") }).await;

        drop(s3);
        // The pooled keep-alive connection is closed with the server, and a new one is
        // refused (or reset, if it reached the backlog before the listener closed).
        let after = bounded(store.head(&path)).await;
        let err = after.expect_err("still served after drop");
        // The whole chain of causes: the top-level message only says "error sending request".
        let mut chain = err.to_string();
        let mut cause = std::error::Error::source(&err);
        while let Some(c) = cause {
            chain.push_str(&format!(" / {c}"));
            cause = c.source();
        }
        let chain = chain.to_ascii_lowercase();
        assert!(
            chain.contains("connect") || chain.contains("connection"),
            "not a connection failure: {chain}"
        );
    }

    fn leads() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("lead_id", DataType::Int64, false),
            Field::new("email", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![
                    Some("ada@example.com"),
                    None,
                    Some("grace@example.com"),
                ])),
            ],
        )
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn datafusion_reads_parquet_from_the_s3_server() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("bucket")).unwrap();
        let file = std::fs::File::create(root.path().join("bucket/leads.parquet")).unwrap();
        let batch = leads();
        let mut writer = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();

        let s3 = S3Server::start(root.path()).await;
        let ctx = SessionContext::new();
        let url = url::Url::parse("s3://bucket").unwrap();
        ctx.register_object_store(&url, s3.store("bucket"));

        let batches = bounded(async {
            ctx.read_parquet("s3://bucket/leads.parquet", Default::default())
                .await
                .expect("read_parquet over S3")
                .sort_by(vec![datafusion::prelude::col("lead_id")])
                .unwrap()
                .collect()
                .await
                .expect("collect")
        })
        .await;
        let batch =
            datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        assert_eq!(batch.num_rows(), 3);
        let ids = batch
            .column_by_name("lead_id")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(ids.values().as_ref(), [1, 2, 3]);
        // DataFusion may read Parquet strings as Utf8View: compare them as plain Utf8.
        let emails = datafusion::arrow::compute::cast(
            batch.column_by_name("email").unwrap(),
            &DataType::Utf8,
        )
        .unwrap();
        let emails = emails.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(emails.value(0), "ada@example.com");
        assert!(emails.is_null(1));
        assert_eq!(emails.value(2), "grace@example.com");
    }
}

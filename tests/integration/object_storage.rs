//! `s3://` inputs, read from a real S3-compatible server on 127.0.0.1: `s3s-fs` serving a temp
//! folder over the S3 protocol, in process.

use std::net::SocketAddr;
use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::object_store::ObjectStore;
use datafusion::object_store::aws::AmazonS3Builder;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::physical_plan::collect;
use datafusion::prelude::SessionContext;
use datafusion_prospeo::api::{ApiKey, Client};
use datafusion_prospeo::table::register_with_client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;

use crate::common::*;

const ACCESS_KEY: &str = "test-access-key";
const SECRET_KEY: &str = "test-secret-key";

/// An S3 server over `root` (each top-level folder a bucket); stops when dropped.
struct S3Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl S3Server {
    async fn start(root: &std::path::Path) -> S3Server {
        let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs over the temp folder");
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            while let Ok((socket, _)) = listener.accept().await {
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        S3Server { addr, task }
    }

    fn store(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(format!("http://{}", self.addr))
                .with_bucket_name(bucket)
                .with_access_key_id(ACCESS_KEY)
                .with_secret_access_key(SECRET_KEY)
                .with_region("us-east-1")
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false)
                .build()
                .unwrap(),
        )
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn leads() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("lead_id", DataType::Int64, false),
        Field::new("Work Email", DataType::Utf8, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec![
                Some(NICOLAS_EMAIL),
                Some("nobody@nowhere.example"),
                Some(EVA_EMAIL),
            ])),
        ],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_input_is_enriched_from_a_real_s3_server() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("crm")).unwrap();
    let file = std::fs::File::create(root.path().join("crm/leads.parquet")).unwrap();
    let batch = leads();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let s3 = S3Server::start(root.path()).await;
    let sandbox = start(config()).await;
    let client = Client::builder()
        .base_url(sandbox.base_url())
        .api_key(ApiKey::new(ALPHA_KEY).unwrap())
        .build()
        .unwrap();
    let ctx = SessionContext::new();
    register_with_client(&ctx, client);
    let url = url::Url::parse("s3://crm").unwrap();
    ctx.register_object_store(&url, s3.store("crm"));

    let df = ctx
        .sql("SELECT lead_id, prospeo_status, prospeo_person_person_id FROM enrich_person('s3://crm/leads.parquet') ORDER BY lead_id")
        .await
        .unwrap();
    let plan = df.create_physical_plan().await.unwrap();
    let batches = collect(plan, ctx.task_ctx()).await.unwrap();
    let batch = datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let status = batch
        .column(1)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let statuses: Vec<&str> = (0..status.len()).map(|i| status.value(i)).collect();
    assert_eq!(statuses, ["matched", "not_matched", "matched"]);
    let ids = batch
        .column(2)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!(ids.value(0), NICOLAS_ID);
    assert_eq!(ids.value(2), EVA_ID);
    assert_eq!(sandbox.stats().key(ALPHA).records_submitted, 3);
}

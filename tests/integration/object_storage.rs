//! `s3://` inputs, read from a real S3-compatible server on 127.0.0.1 (see `s3.rs`).

use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::physical_plan::collect;

use crate::common::*;
use crate::s3::S3Server;

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
    let ctx = crate::sql::context(&sandbox).await;
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

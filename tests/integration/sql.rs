//! `enrich_person(...)` in SQL against the sandbox over real HTTP: inputs, options, mapping,
//! pushdown (checked in the physical plan and in the sandbox's stats), order, schema, errors.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::physical_plan::{ExecutionPlan, collect, displayable};
use datafusion::prelude::SessionContext;
use datafusion_prospeo::api::{ApiKey, Client};
use datafusion_prospeo::datafusion::exec::EnrichExec;
use datafusion_prospeo::datafusion::table::register_with_client;
use datafusion_prospeo::sandbox::Sandbox;

use crate::common::*;

/// One lead: (lead_id, First Name, Last Name, Email, Company Domain, Country).
type Lead = (
    i64,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

/// Leads in a fixed order: matches by name + domain and by email, an unknown person, a row
/// below the minimum, and Eva again written differently.
const LEADS: &[Lead] = &[
    (1, "Eva", "Kiegler", "", "https://www.Intercom.com/", "US"),
    (2, "", "", "NICOLAS.B@kpmg.com", "", "FR"),
    (3, "Nobody", "Atall", "nobody@nowhere.example", "", "US"),
    (4, "Brandon", "", "", "", "US"),
    (5, "Omar", "Haddad", "", "globex.com", "FR"),
    (6, " eva ", "KIEGLER", "", "intercom.com", "US"),
];

/// The statuses of [`LEADS`], in order.
const LEADS_STATUSES: [&str; 6] = [
    "matched",
    "matched",
    "not_matched",
    "invalid_datapoints",
    "matched",
    "matched",
];

fn leads_batch(leads: &[Lead]) -> RecordBatch {
    let text = |f: fn(&Lead) -> &'static str| -> Arc<dyn Array> {
        Arc::new(StringArray::from(
            leads
                .iter()
                .map(|l| Some(f(l)).filter(|v| !v.is_empty()))
                .collect::<Vec<_>>(),
        ))
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("lead_id", DataType::Int64, false),
        Field::new("First Name", DataType::Utf8, true),
        Field::new("Last Name", DataType::Utf8, true),
        Field::new("Email", DataType::Utf8, true),
        Field::new("Company Domain", DataType::Utf8, true),
        Field::new("Country", DataType::Utf8, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(
                leads.iter().map(|l| l.0).collect::<Vec<_>>(),
            )),
            text(|l| l.1),
            text(|l| l.2),
            text(|l| l.3),
            text(|l| l.4),
            text(|l| l.5),
        ],
    )
    .unwrap()
}

fn write_parquet(path: &Path, batch: &RecordBatch) {
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

fn write_csv(path: &Path, batch: &RecordBatch) {
    let file = std::fs::File::create(path).unwrap();
    let mut writer = datafusion::arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(file);
    writer.write(batch).unwrap();
}

pub(crate) async fn context(sandbox: &Sandbox) -> SessionContext {
    let client = Client::builder()
        .base_url(sandbox.base_url())
        .api_key(ApiKey::new(ALPHA_KEY).unwrap())
        .build()
        .unwrap();
    let ctx = SessionContext::new();
    register_with_client(&ctx, client);
    ctx
}

/// The text of the error a query fails to plan with.
async fn planning_error(ctx: &SessionContext, sql: &str) -> String {
    ctx.sql(sql).await.expect_err(sql).to_string()
}

/// Runs a query, returning its physical plan (as text) and its rows.
async fn run(ctx: &SessionContext, sql: &str) -> (Arc<dyn ExecutionPlan>, Vec<RecordBatch>) {
    let df = ctx.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let plan = df.create_physical_plan().await.unwrap();
    let batches = collect(plan.clone(), ctx.task_ctx()).await.unwrap();
    (plan, batches)
}

fn column_strings(batches: &[RecordBatch], name: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let column = b
                .column_by_name(name)
                .unwrap_or_else(|| panic!("no column {name}"));
            (0..b.num_rows())
                .map(|i| {
                    if column.is_null(i) {
                        "NULL".to_string()
                    } else {
                        array_value_to_string(column, i).unwrap()
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn enrich_exec(plan: &Arc<dyn ExecutionPlan>) -> Option<&EnrichExec> {
    if let Some(exec) = plan.downcast_ref::<EnrichExec>() {
        return Some(exec);
    }
    plan.children().into_iter().find_map(enrich_exec)
}

fn plan_text(plan: &Arc<dyn ExecutionPlan>) -> String {
    displayable(plan.as_ref()).indent(true).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_parquet_file_is_enriched_row_for_row_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leads.parquet");
    write_parquet(&path, &leads_batch(LEADS));
    let sandbox = start(config()).await;
    let ctx = context(&sandbox).await;
    let sql = format!(
        "SELECT * FROM enrich_person('{}') ORDER BY lead_id",
        path.display()
    );
    let (_, batches) = run(&ctx, &sql).await;
    assert_eq!(
        column_strings(&batches, "lead_id"),
        ["1", "2", "3", "4", "5", "6"]
    );
    assert_eq!(column_strings(&batches, "prospeo_status"), LEADS_STATUSES);
    assert_eq!(
        column_strings(&batches, "prospeo_person_person_id"),
        [EVA_ID, NICOLAS_ID, "NULL", "NULL", OMAR_ID, EVA_ID]
    );
    assert_eq!(
        column_strings(&batches, "prospeo_company_domain")[0],
        "intercom.com"
    );
    // Eva twice: charged once.
    assert_eq!(
        column_strings(&batches, "prospeo_cost"),
        ["1", "1", "0", "0", "1", "0"]
    );
    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(stats.records_submitted, 5, "the invalid row was never sent");
    assert_eq!(stats.credits_charged, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_output_schema_is_the_input_then_the_enrichment_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leads.parquet");
    write_parquet(&path, &leads_batch(LEADS));
    let sandbox = start(config()).await;
    let ctx = context(&sandbox).await;
    let df = ctx
        .sql(&format!(
            "SELECT * FROM enrich_person('{}')",
            path.display()
        ))
        .await
        .unwrap();
    let schema = df.schema().as_arrow().clone();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        &names[..6],
        [
            "lead_id",
            "First Name",
            "Last Name",
            "Email",
            "Company Domain",
            "Country"
        ]
    );
    let output = datafusion_prospeo::output::OutputSchema::new("prospeo_").schema();
    assert_eq!(names.len(), 6 + output.fields().len());
    for (field, expected) in schema.fields()[6..].iter().zip(output.fields()) {
        assert_eq!(field.name(), expected.name());
        assert_eq!(field.data_type(), expected.data_type());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_with_messy_headers_and_a_glob_of_files() {
    let dir = tempfile::tempdir().unwrap();
    write_csv(&dir.path().join("part-1.csv"), &leads_batch(&LEADS[..3]));
    write_csv(&dir.path().join("part-2.csv"), &leads_batch(&LEADS[3..]));
    let sandbox = start(config()).await;
    let ctx = context(&sandbox).await;
    let glob = format!("{}/part-*.csv", dir.path().display());
    let (_, batches) = run(
        &ctx,
        &format!("SELECT lead_id, prospeo_status FROM enrich_person('{glob}') ORDER BY lead_id"),
    )
    .await;
    assert_eq!(column_strings(&batches, "prospeo_status"), LEADS_STATUSES);
    // A single CSV file too.
    let one = format!("{}/part-1.csv", dir.path().display());
    let (_, batches) = run(
        &ctx,
        &format!("SELECT \"Email\", prospeo_person_person_id FROM enrich_person('{one}')"),
    )
    .await;
    assert_eq!(
        column_strings(&batches, "prospeo_person_person_id").len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_table_is_an_input() {
    let sandbox = start(config()).await;
    let ctx = context(&sandbox).await;
    ctx.register_batch("crm_leads", leads_batch(LEADS)).unwrap();
    let (_, batches) = run(
        &ctx,
        "SELECT lead_id, prospeo_status FROM enrich_person('crm_leads') WHERE lead_id <= 2 ORDER BY lead_id",
    )
    .await;
    assert_eq!(
        column_strings(&batches, "prospeo_status"),
        ["matched", "matched"]
    );
    assert_eq!(sandbox.stats().key(ALPHA).records_submitted, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_without_enrichment_columns_is_free() {
    let sandbox = start(config()).await;
    let ctx = context(&sandbox).await;
    ctx.register_batch("crm_leads", leads_batch(LEADS)).unwrap();
    let (plan, batches) = run(&ctx, "SELECT count(*) AS n FROM enrich_person('crm_leads')").await;
    assert_eq!(column_strings(&batches, "n"), ["6"]);
    assert!(enrich_exec(&plan).is_none(), "{}", plan_text(&plan));
    let (plan, _) = run(&ctx, "SELECT \"Email\" FROM enrich_person('crm_leads')").await;
    assert!(enrich_exec(&plan).is_none(), "{}", plan_text(&plan));
    assert_eq!(sandbox.stats().key(ALPHA).requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_is_pushed_below_the_enrichment() {
    let sandbox = start(config()).await;
    let ctx = context(&sandbox).await;
    // 120 rows: more than two requests' worth.
    let many: Vec<Lead> = (0..120)
        .map(|i| LEADS[(i % 6) as usize])
        .map(|mut l| {
            l.0 = 0;
            l
        })
        .collect();
    ctx.register_batch("crm_leads", leads_batch(&many)).unwrap();
    let (plan, batches) = run(
        &ctx,
        "SELECT prospeo_status FROM enrich_person('crm_leads') LIMIT 10",
    )
    .await;
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 10);
    let exec = enrich_exec(&plan).expect("an EnrichExec");
    assert_eq!(exec.pushed().limit, Some(10));
    let stats = sandbox.stats().key(ALPHA);
    // Ten rows, of which the invalid ones are never sent: at most 10 records, one request.
    assert!(stats.records_submitted <= 10, "{stats:?}");
    assert_eq!(stats.requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_on_input_columns_run_before_enrichment_and_others_after() {
    let sandbox = start(config()).await;
    let ctx = context(&sandbox).await;
    ctx.register_batch("crm_leads", leads_batch(LEADS)).unwrap();
    let (plan, batches) = run(
        &ctx,
        "SELECT lead_id FROM enrich_person('crm_leads') WHERE \"Country\" = 'FR' AND prospeo_status = 'matched' ORDER BY lead_id",
    )
    .await;
    assert_eq!(column_strings(&batches, "lead_id"), ["2", "5"]);
    let exec = enrich_exec(&plan).expect("an EnrichExec");
    assert_eq!(exec.pushed().filters.len(), 1, "{:?}", exec.pushed());
    assert!(exec.pushed().filters[0].contains("Country"));
    let text = plan_text(&plan);
    assert!(text.contains("pushed_filters"), "{text}");
    // Only the two FR rows were sent.
    assert_eq!(sandbox.stats().key(ALPHA).records_submitted, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_come_from_set_and_from_a_literal() {
    let sandbox = start(config()).await;
    let ctx = context(&sandbox).await;
    ctx.register_batch("crm_leads", leads_batch(&LEADS[..1]))
        .unwrap();
    ctx.sql("SET prospeo.enrich_mobile = true").await.unwrap();
    let (_, batches) = run(
        &ctx,
        "SELECT prospeo_person_mobile_mobile, prospeo_cost FROM enrich_person('crm_leads')",
    )
    .await;
    assert_eq!(
        column_strings(&batches, "prospeo_person_mobile_mobile"),
        [EVA_MOBILE]
    );
    assert_eq!(column_strings(&batches, "prospeo_cost"), ["10"]);
    // A literal overrides the session for that call: another prefix.
    let (_, batches) = run(
        &ctx,
        "SELECT enriched_status FROM enrich_person('crm_leads', named_struct('prefix', 'enriched_', 'enrich_mobile', false))",
    )
    .await;
    assert_eq!(column_strings(&batches, "enriched_status"), ["matched"]);
    let (_, batches) = run(
        &ctx,
        "SELECT x_status FROM enrich_person('crm_leads', MAP {'prefix': 'x_'})",
    )
    .await;
    assert_eq!(column_strings(&batches, "x_status"), ["matched"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_mappings_override_detection() {
    let sandbox = start(config()).await;
    let ctx = context(&sandbox).await;
    ctx.sql(
        "CREATE VIEW odd AS SELECT * FROM (VALUES ('nicolas.b@kpmg.com', 'eva.kiegler@intercom.com')) AS t(\"Work Addr\", \"Email\")",
    )
    .await
    .unwrap();
    let (_, batches) = run(
        &ctx,
        "SELECT prospeo_person_person_id FROM enrich_person('odd', named_struct('map', MAP {'Work Addr': 'email', 'Email': ''}))",
    )
    .await;
    assert_eq!(
        column_strings(&batches, "prospeo_person_person_id"),
        [NICOLAS_ID]
    );
    // A column name with a comma; a session map is replaced by the call's, not added to.
    ctx.sql(
        "CREATE VIEW commas AS SELECT * FROM (VALUES ('nicolas.b@kpmg.com')) AS t(\"Mail, work\")",
    )
    .await
    .unwrap();
    ctx.sql("SET prospeo.map = 'Work Addr=email'")
        .await
        .unwrap();
    let (_, batches) = run(
        &ctx,
        "SELECT prospeo_person_person_id FROM enrich_person('commas', named_struct('map', MAP {'Mail, work': 'email'}))",
    )
    .await;
    assert_eq!(
        column_strings(&batches, "prospeo_person_person_id"),
        [NICOLAS_ID]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_mapping_options_and_pushdown_but_never_the_key() {
    let sandbox = start(config()).await;
    let ctx = context(&sandbox).await;
    ctx.register_batch("crm_leads", leads_batch(LEADS)).unwrap();
    let (_, batches) = run(
        &ctx,
        "EXPLAIN SELECT prospeo_status FROM enrich_person('crm_leads', named_struct('enrich_mobile', true)) WHERE \"Country\" = 'US' LIMIT 3",
    )
    .await;
    let text = column_strings(&batches, "plan").join("\n");
    assert!(text.contains("EnrichExec"), "{text}");
    assert!(text.contains("email<-\"Email\""), "{text}");
    assert!(text.contains("enrich_mobile=true"), "{text}");
    assert!(text.contains("pushed_limit=3"), "{text}");
    // Only the selected enrichment column is flattened.
    assert!(
        text.contains("enrichment_columns=[prospeo_status]"),
        "{text}"
    );
    assert!(!text.contains(ALPHA_KEY), "{text}");
    let (_, batches) = run(
        &ctx,
        "EXPLAIN ANALYZE SELECT prospeo_status FROM enrich_person('crm_leads')",
    )
    .await;
    let text = column_strings(&batches, "plan").join("\n");
    for metric in [
        "records_sent=5",
        "matched=4",
        "credits=3",
        "retries=0",
        "rate_limited=0",
        "quota_wait_time",
    ] {
        assert!(text.contains(metric), "{metric} missing in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planning_errors_say_what_to_do() {
    let sandbox = start(config()).await;
    let ctx = context(&sandbox).await;
    ctx.sql("CREATE VIEW notes AS SELECT * FROM (VALUES ('a', 1)) AS t(\"Notes\", \"Score\")")
        .await
        .unwrap();
    let error = planning_error(&ctx, "SELECT * FROM enrich_person('notes')").await;
    assert!(
        error.contains("Notes") && error.contains("email"),
        "{error}"
    );
    ctx.sql("CREATE VIEW clash AS SELECT * FROM (VALUES ('a@b.co', 'x')) AS t(\"Email\", \"prospeo_status\")")
        .await
        .unwrap();
    let error = planning_error(&ctx, "SELECT * FROM enrich_person('clash')").await;
    assert!(
        error.contains("prospeo_status") && error.contains("prefix"),
        "{error}"
    );
    let error = planning_error(&ctx, "SET prospeo.plan = 'platinum'").await;
    assert!(error.contains("starter, growth or pro"), "{error}");
    let error = planning_error(&ctx, "SET prospeo.nonsense = 1").await;
    assert!(error.contains("unknown option prospeo.nonsense"), "{error}");
    let error = planning_error(
        &ctx,
        "SELECT * FROM enrich_person('clash', named_struct('concurrency', 0))",
    )
    .await;
    assert!(error.contains("prospeo.concurrency"), "{error}");
    let error = planning_error(
        &ctx,
        "SELECT * FROM enrich_person('/no/such/leads.parquet')",
    )
    .await;
    assert!(error.contains("/no/such/leads.parquet"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_string_type_of_input_is_read() {
    let sandbox = start(config()).await;
    let ctx = context(&sandbox).await;
    ctx.register_batch("crm_leads", leads_batch(&LEADS[1..2]))
        .unwrap();
    for (name, expr) in [
        ("utf8view", "arrow_cast(\"Email\", 'Utf8View')"),
        ("large", "arrow_cast(\"Email\", 'LargeUtf8')"),
        (
            "dictionary",
            "arrow_cast(\"Email\", 'Dictionary(Int32, Utf8)')",
        ),
    ] {
        ctx.sql(&format!(
            "CREATE VIEW v_{name} AS SELECT {expr} AS \"Email\" FROM crm_leads"
        ))
        .await
        .unwrap();
        let (_, batches) = run(
            &ctx,
            &format!("SELECT prospeo_person_person_id FROM enrich_person('v_{name}')"),
        )
        .await;
        assert_eq!(
            column_strings(&batches, "prospeo_person_person_id"),
            [NICOLAS_ID],
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_mapped_and_selected_input_columns_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leads.parquet");
    write_parquet(&path, &leads_batch(LEADS));
    let sandbox = start(config()).await;
    let ctx = context(&sandbox).await;
    let (plan, _) = run(
        &ctx,
        &format!(
            "SELECT lead_id, prospeo_status FROM enrich_person('{}')",
            path.display()
        ),
    )
    .await;
    let text = plan_text(&plan);
    let scan = text
        .lines()
        .find(|l| l.contains("DataSourceExec"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        scan.contains("projection=[lead_id, First Name, Last Name, Email, Company Domain]"),
        "{scan}"
    );
    assert!(!scan.contains("Country"), "{scan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_stops_sending() {
    use futures::StreamExt;
    let mut config = config();
    // Slow enough answers that a request is still in flight when the stream is dropped.
    config.faults.latency = std::time::Duration::from_millis(300);
    let sandbox = start(config).await;
    let client = Client::builder()
        .base_url(sandbox.base_url())
        .api_key(ApiKey::new(ALPHA_KEY).unwrap())
        .build()
        .unwrap();
    let ctx = SessionContext::new();
    register_with_client(&ctx, client.clone());
    let many: Vec<Lead> = (0..300).map(|i| (i, "", "", "", "", "US")).collect();
    let mut batch = leads_batch(&many);
    // 300 distinct unknown people by email: six requests if run to the end.
    let emails: StringArray = (0..300)
        .map(|i| Some(format!("stranger{i}@nowhere.example")))
        .collect();
    batch = RecordBatch::try_new(batch.schema(), {
        let mut columns = batch.columns().to_vec();
        columns[3] = Arc::new(emails);
        columns
    })
    .unwrap();
    ctx.register_batch("crm_leads", batch).unwrap();
    let df = ctx
        .sql(
            "SELECT prospeo_status FROM enrich_person('crm_leads', named_struct('concurrency', 2))",
        )
        .await
        .unwrap();
    let mut stream = df.execute_stream().await.unwrap();
    let first = stream.next().await.expect("a first batch").unwrap();
    assert!(first.num_rows() > 0);
    drop(stream);
    let requests = sandbox.stats().key(ALPHA).requests;
    assert!(
        (1..6).contains(&requests),
        "{requests} requests after the stream was dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_ordering_survives_enrichment_so_its_sort_is_dropped() {
    use datafusion::datasource::MemTable;
    use datafusion::prelude::col;
    let sandbox = start(config()).await;
    let ctx = context(&sandbox).await;
    let batch = leads_batch(LEADS);
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]])
        .unwrap()
        .with_sort_order(vec![vec![col("lead_id").sort(true, false)]]);
    ctx.register_table("sorted_leads", Arc::new(table)).unwrap();

    let has_sort = |plan: &Arc<dyn ExecutionPlan>| {
        displayable(plan.as_ref())
            .indent(true)
            .to_string()
            .contains("SortExec")
    };
    // Sorted by an input column the node passes through: no sort above the node.
    let (plan, batches) = run(
        &ctx,
        "SELECT prospeo_status, lead_id FROM enrich_person('sorted_leads') ORDER BY lead_id",
    )
    .await;
    assert!(
        !has_sort(&plan),
        "{}",
        displayable(plan.as_ref()).indent(true)
    );
    assert_eq!(
        column_strings(&batches, "lead_id"),
        ["1", "2", "3", "4", "5", "6"]
    );
    // Sorted by an enrichment column: that still needs a sort.
    let (plan, batches) = run(
        &ctx,
        "SELECT lead_id, prospeo_status FROM enrich_person('sorted_leads') ORDER BY prospeo_status, lead_id",
    )
    .await;
    assert!(has_sort(&plan));
    let statuses = column_strings(&batches, "prospeo_status");
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(statuses, sorted);
    // Descending is not what the input holds: sorted.
    let (plan, batches) = run(
        &ctx,
        "SELECT lead_id FROM enrich_person('sorted_leads') WHERE prospeo_status <> 'x' ORDER BY lead_id DESC",
    )
    .await;
    assert!(has_sort(&plan));
    assert_eq!(
        column_strings(&batches, "lead_id"),
        ["6", "5", "4", "3", "2", "1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tsv_and_ndjson_globs_are_read_and_compressed_files_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let batch = leads_batch(LEADS);
    let tsv = dir.path().join("leads.tsv");
    let mut writer = datafusion::arrow::csv::WriterBuilder::new()
        .with_header(true)
        .with_delimiter(b'\t')
        .build(std::fs::File::create(&tsv).unwrap());
    writer.write(&batch).unwrap();
    drop(writer);
    for name in ["a.ndjson", "b.ndjson"] {
        let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(
            std::fs::File::create(dir.path().join(name)).unwrap(),
        );
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
    }
    std::fs::write(dir.path().join("_SUCCESS"), "").unwrap();
    let sandbox = start(config()).await;
    let ctx = context(&sandbox).await;
    let count = |input: String| {
        let ctx = ctx.clone();
        async move {
            let (_, batches) = run(
                &ctx,
                &format!(
                    "SELECT count(*) AS n, count(\"Email\") AS emails FROM enrich_person('{input}')"
                ),
            )
            .await;
            (
                column_strings(&batches, "n")[0].clone(),
                column_strings(&batches, "emails")[0].clone(),
            )
        }
    };
    let emails = LEADS.iter().filter(|l| !l.3.is_empty()).count().to_string();
    // Tab-separated: the columns are found, not one column holding whole lines.
    assert_eq!(
        count(tsv.display().to_string()).await,
        (LEADS.len().to_string(), emails.clone())
    );
    assert_eq!(
        count(format!("{}/*.ndjson", dir.path().display())).await,
        (
            (2 * LEADS.len()).to_string(),
            (2 * emails.parse::<usize>().unwrap()).to_string()
        )
    );
    let error = planning_error(
        &ctx,
        &format!(
            "SELECT * FROM enrich_person('{}/leads.csv.gz')",
            dir.path().display()
        ),
    )
    .await;
    assert!(error.contains("compressed (.gz)"), "{error}");
}

/// A row of a Salesforce accounts export: Account ID, Account Name, Parent Account, Website,
/// Phone.
type Account = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

/// A Salesforce accounts export.
fn accounts_batch() -> RecordBatch {
    let rows: [Account; 6] = [
        (
            "001A",
            Some("Intercom"),
            None,
            Some("https://www.intercom.com"),
            Some("+1 415"),
        ),
        ("001B", Some("KPMG"), Some("KPMG International"), None, None),
        ("001C", Some("Acme"), None, None, None),
        ("001D", None, Some("Globex"), None, Some("+1 555")),
        (
            "001E",
            Some("Initech Corp"),
            None,
            Some("initech.com"),
            None,
        ),
        (
            "001F",
            Some("Unknown Ltd"),
            None,
            Some("unknown-ltd.example"),
            None,
        ),
    ];
    let schema = Arc::new(Schema::new(vec![
        Field::new("Account ID", DataType::Utf8, false),
        Field::new("Account Name", DataType::Utf8, true),
        Field::new("Parent Account", DataType::Utf8, true),
        Field::new("Website", DataType::Utf8, true),
        Field::new("Phone", DataType::Utf8, true),
    ]));
    let column = |f: fn(&Account) -> Option<&'static str>| {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>())) as Arc<dyn Array>
    };
    RecordBatch::try_new(
        schema,
        vec![
            column(|r| Some(r.0)),
            column(|r| r.1),
            column(|r| r.2),
            column(|r| r.3),
            column(|r| r.4),
        ],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_company_enriches_an_accounts_export_row_for_row_in_order() {
    let sandbox = start(config()).await;
    let ctx = context(&sandbox).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("accounts.csv");
    write_csv(&path, &accounts_batch());
    let sql = format!("SELECT * FROM enrich_company('{}')", path.display());
    let (plan, batches) = run(&ctx, &sql).await;
    let schema = batches[0].schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        &names[..5],
        [
            "Account ID",
            "Account Name",
            "Parent Account",
            "Website",
            "Phone"
        ]
    );
    assert!(names.contains(&"prospeo_company_name") && names.contains(&"prospeo_status"));
    assert!(
        !names.iter().any(|n| n.starts_with("prospeo_person_")),
        "a company output has no person columns: {names:?}"
    );
    // The same company columns, typed the same, as the person output's.
    let person_sql = format!(
        "SELECT * FROM enrich_person('{}', named_struct('map', MAP {{'Account ID': 'full_name'}}))",
        path.display()
    );
    let person = ctx.sql(&person_sql).await.unwrap();
    let person_schema = person.schema().as_arrow();
    let company_columns: Vec<_> = schema
        .fields()
        .iter()
        .filter(|f| f.name().starts_with("prospeo_"))
        .collect();
    // Every enrichment column of the person output but the person's.
    let expected = person_schema
        .fields()
        .iter()
        .filter(|f| f.name().starts_with("prospeo_") && !f.name().starts_with("prospeo_person_"))
        .count();
    assert_eq!(company_columns.len(), expected);
    for field in company_columns {
        assert_eq!(
            person_schema.field_with_name(field.name()).unwrap(),
            field.as_ref()
        );
    }
    assert_eq!(
        column_strings(&batches, "Account ID"),
        ["001A", "001B", "001C", "001D", "001E", "001F"],
        "every input row once, in order"
    );
    assert_eq!(
        column_strings(&batches, "prospeo_status"),
        [
            "matched",
            "matched",
            "not_matched",
            "invalid_datapoints",
            "matched",
            "not_matched"
        ]
    );
    assert_eq!(
        column_strings(&batches, "prospeo_company_company_id"),
        ["c-intercom", "c-kpmg", "NULL", "NULL", "c-initech", "NULL"]
    );
    // The parent account never maps: row 4 has nothing of its own to match on.
    let exec = enrich_exec(&plan).expect("an EnrichExec");
    let mapped: Vec<(String, String)> = exec
        .mapping()
        .mapped()
        .iter()
        .map(|m| (m.column.clone(), m.datapoint.to_string()))
        .collect();
    assert_eq!(
        mapped,
        [
            ("Account Name".to_string(), "company_name".to_string()),
            ("Website".to_string(), "company_website".to_string())
        ]
    );
    assert!(
        plan_text(&plan).contains("endpoint=/bulk-enrich-company"),
        "{}",
        plan_text(&plan)
    );
    let costs: i64 = column_strings(&batches, "prospeo_cost")
        .iter()
        .map(|c| c.parse::<i64>().unwrap())
        .sum();
    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(costs, stats.companies.credits_charged);
    assert_eq!(
        stats.companies.records, 5,
        "the row with nothing to match on stays home"
    );
    assert_eq!(
        stats.records, stats.companies.records,
        "no person was asked"
    );

    // The same accounts as Parquet and NDJSON come out the same (the answers now from the
    // client's cache).
    let parquet = dir.path().join("accounts.parquet");
    write_parquet(&parquet, &accounts_batch());
    let ndjson = dir.path().join("accounts.ndjson");
    let mut writer =
        datafusion::arrow::json::LineDelimitedWriter::new(std::fs::File::create(&ndjson).unwrap());
    writer.write(&accounts_batch()).unwrap();
    writer.finish().unwrap();
    for other in [&parquet, &ndjson] {
        let sql = format!(
            "SELECT \"Account ID\", prospeo_status, prospeo_company_company_id FROM enrich_company('{}')",
            other.display()
        );
        let (_, same) = run(&ctx, &sql).await;
        for column in ["Account ID", "prospeo_status", "prospeo_company_company_id"] {
            assert_eq!(
                column_strings(&same, column),
                column_strings(&batches, column),
                "{}",
                other.display()
            );
        }
    }

    // count(*) and input-only columns are free; LIMIT goes below the node.
    let before = sandbox.stats().key(ALPHA).requests;
    let (plan, batches) = run(
        &ctx,
        &format!(
            "SELECT count(*) AS n FROM enrich_company('{}')",
            path.display()
        ),
    )
    .await;
    assert_eq!(column_strings(&batches, "n"), ["6"]);
    assert!(enrich_exec(&plan).is_none());
    let (plan, batches) = run(
        &ctx,
        &format!(
            "SELECT prospeo_status FROM enrich_company('{}') LIMIT 2",
            path.display()
        ),
    )
    .await;
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
    assert_eq!(enrich_exec(&plan).unwrap().pushed().limit, Some(2));
    // Both rows were answered before: served from the client's cache, nothing sent.
    assert_eq!(sandbox.stats().key(ALPHA).requests, before);
    sandbox.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_company_refuses_a_person_mapping_and_names_the_accepted_columns() {
    let sandbox = start(config()).await;
    let ctx = context(&sandbox).await;
    ctx.register_batch("crm_leads", leads_batch(LEADS)).unwrap();
    // Leads carry a company domain: that is a company datapoint, and the only one mapped.
    let (plan, batches) = run(
        &ctx,
        "SELECT lead_id, prospeo_status, prospeo_company_company_id FROM enrich_company('crm_leads')",
    )
    .await;
    let mapped: Vec<String> = enrich_exec(&plan)
        .unwrap()
        .mapping()
        .mapped()
        .iter()
        .map(|m| format!("{}<-{}", m.datapoint, m.column))
        .collect();
    assert_eq!(mapped, ["company_website<-Company Domain"]);
    assert_eq!(
        column_strings(&batches, "prospeo_status"),
        [
            "matched",
            "invalid_datapoints",
            "invalid_datapoints",
            "invalid_datapoints",
            "matched",
            "matched"
        ]
    );
    assert_eq!(
        column_strings(&batches, "prospeo_company_company_id"),
        [
            "c-intercom",
            "NULL",
            "NULL",
            "NULL",
            "c-globex",
            "c-intercom"
        ]
    );
    let err = planning_error(
        &ctx,
        "SELECT * FROM enrich_company('crm_leads', named_struct('map', MAP {'Email': 'email'}))",
    )
    .await;
    assert!(
        err.contains("enrich_company(table crm_leads)")
            && err.contains("/bulk-enrich-company does not take"),
        "{err}"
    );
    ctx.register_batch(
        "notes",
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("Notes", DataType::Utf8, true)])),
            vec![Arc::new(StringArray::from(vec![Some("x")]))],
        )
        .unwrap(),
    )
    .unwrap();
    let err = planning_error(&ctx, "SELECT * FROM enrich_company('notes')").await;
    assert!(
        err.contains("company datapoint") && err.contains("\"Account Name\""),
        "{err}"
    );
    sandbox.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_account_export_comes_out_as_generated() {
    use datafusion_prospeo::sandbox::generator::{
        AccountKind, GeneratorConfig, SampleData, generate_accounts, generate_directory,
    };
    use datafusion_prospeo::sandbox::{SandboxConfig, SandboxKey};
    let directory = Arc::new(generate_directory(&GeneratorConfig::default()));
    let mut config = SandboxConfig::new(directory.clone());
    config.keys = vec![SandboxKey::new(
        ALPHA,
        ALPHA_KEY,
        10_000,
        datafusion_prospeo::api::Plan::Pro,
    )];
    let sandbox = start(config).await;
    let ctx = context(&sandbox).await;
    let sample = SampleData::default();
    let accounts = generate_accounts(&directory, sample.directory.seed, sample.account_rows);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/accounts.csv");
    let (_, batches) = run(
        &ctx,
        &format!(
            "SELECT \"Record ID\", prospeo_status, prospeo_company_company_id, prospeo_cost FROM enrich_company('{}')",
            path.display()
        ),
    )
    .await;
    let ids = column_strings(&batches, "Record ID");
    assert_eq!(
        ids,
        accounts
            .iter()
            .map(|a| a.record_id.to_string())
            .collect::<Vec<_>>(),
        "the committed file is the generator's, every row once and in order"
    );
    let statuses = column_strings(&batches, "prospeo_status");
    let companies = column_strings(&batches, "prospeo_company_company_id");
    for ((account, status), company) in accounts.iter().zip(&statuses).zip(&companies) {
        let expected = match (account.kind, account.company) {
            (AccountKind::Nothing, _) => "invalid_datapoints",
            (_, Some(_)) => "matched",
            (_, None) => "not_matched",
        };
        assert_eq!(status, expected, "{account:?}");
        let id = account
            .company
            .and_then(|i| directory.companies()[i].company_id.clone())
            .unwrap_or_else(|| "NULL".into());
        assert_eq!(company, &id, "{account:?}");
    }
    // Each company is paid once, however many rows name it.
    let paid: i64 = column_strings(&batches, "prospeo_cost")
        .iter()
        .map(|c| c.parse::<i64>().unwrap())
        .sum();
    let distinct: std::collections::HashSet<usize> =
        accounts.iter().filter_map(|a| a.company).collect();
    assert_eq!(paid, distinct.len() as i64);
    assert_eq!(sandbox.stats().key(ALPHA).credits_charged, paid);
    sandbox.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_company_runs_input_filters_before_sending() {
    let sandbox = start(config()).await;
    let ctx = context(&sandbox).await;
    ctx.register_batch("accounts", accounts_batch()).unwrap();
    let (plan, batches) = run(
        &ctx,
        "SELECT \"Account ID\", prospeo_status FROM enrich_company('accounts') \
         WHERE \"Account ID\" IN ('001A', '001E')",
    )
    .await;
    assert_eq!(column_strings(&batches, "Account ID"), ["001A", "001E"]);
    assert_eq!(
        column_strings(&batches, "prospeo_status"),
        ["matched", "matched"]
    );
    let exec = enrich_exec(&plan).expect("an EnrichExec");
    assert_eq!(exec.pushed().filters.len(), 1, "{}", plan_text(&plan));
    // Only the two rows the filter kept were sent.
    assert_eq!(sandbox.stats().key(ALPHA).companies.records, 2);
    sandbox.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_company_maps_an_apollo_accounts_export() {
    let sandbox = start(config()).await;
    let ctx = context(&sandbox).await;
    let text =
        |values: [Option<&str>; 3]| Arc::new(StringArray::from(values.to_vec())) as Arc<dyn Array>;
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("Company", DataType::Utf8, true),
            Field::new("Website", DataType::Utf8, true),
            Field::new("Company Linkedin Url", DataType::Utf8, true),
            Field::new("Company Phone", DataType::Utf8, true),
        ])),
        vec![
            text([Some("Globex"), Some("Somebody"), None]),
            text([None, Some("http://www.initech.com"), None]),
            text([None, None, Some("https://www.linkedin.com/company/kpmg")]),
            text([Some("+1 555 0100"), None, Some("+1 555 0101")]),
        ],
    )
    .unwrap();
    ctx.register_batch("apollo_accounts", batch).unwrap();
    let (plan, batches) = run(
        &ctx,
        "SELECT prospeo_company_company_id FROM enrich_company('apollo_accounts')",
    )
    .await;
    // By name alone, by website (whatever the name says), by LinkedIn page; the phone never.
    assert_eq!(
        column_strings(&batches, "prospeo_company_company_id"),
        ["c-globex", "c-initech", "c-kpmg"]
    );
    let mapped: Vec<String> = enrich_exec(&plan)
        .unwrap()
        .mapping()
        .mapped()
        .iter()
        .map(|m| m.datapoint.to_string())
        .collect();
    assert_eq!(
        mapped,
        ["company_name", "company_website", "company_linkedin_url"]
    );
    sandbox.stop().await.unwrap();
}

/// A foreign host's session (datafusion-python's, built separately): its `prospeo.*` options
/// reach this side as the FFI extension's entries.
fn host_config(entries: &[(&str, &str)]) -> datafusion::common::config::ConfigOptions {
    use datafusion::common::config::ExtensionOptions;
    use datafusion_ffi::config::extension_options::FFI_ExtensionOptions;
    let mut extension = FFI_ExtensionOptions::default();
    for (key, value) in entries {
        extension.set(key, value).unwrap();
    }
    let mut config = datafusion::common::config::ConfigOptions::default();
    config.extensions.insert(extension);
    config
}

fn sandbox_builder(sandbox: &Sandbox) -> datafusion_prospeo::ClientBuilder {
    Client::builder()
        .base_url(sandbox.base_url())
        .api_key(ApiKey::new(ALPHA_KEY).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_hosts_table_reads_its_own_files_with_the_hosts_options_and_pushes_filters() {
    use datafusion::logical_expr::TableProviderFilterPushDown;
    use datafusion_prospeo::EnrichOptions;
    use datafusion_prospeo::api::Endpoint;
    use datafusion_prospeo::datafusion::table::EnrichFunction;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leads.csv");
    write_csv(&path, &leads_batch(LEADS));
    let sandbox = start(config()).await;
    let defaults = EnrichOptions {
        cache: false,
        ..Default::default()
    };
    let function = EnrichFunction::for_foreign_host(
        Endpoint::BulkEnrichPerson,
        Some(sandbox_builder(&sandbox)),
        defaults,
        tokio::runtime::Handle::current(),
    );
    let host = host_config(&[("prospeo.prefix", "host_")]);
    let literal = [("enrich_mobile".to_string(), "true".to_string())];
    let table = function
        .foreign_table(&path.display().to_string(), &literal, &host)
        .unwrap();
    // The host's prefix names the columns; the call's literal adds its flag.
    let schema = table.schema();
    assert!(schema.field_with_name("host_status").is_ok(), "{schema:?}");
    assert!(schema.field_with_name("prospeo_status").is_err());
    let country = datafusion::prelude::ident("Country").eq(datafusion::prelude::lit("FR"));
    assert_eq!(
        table.supports_filters_pushdown(&[&country]).unwrap(),
        [TableProviderFilterPushDown::Exact]
    );

    // The host runs the plan with a context of its own (no object stores, no options): the
    // plan runs under the table's, as one partition in input order.
    let host_ctx = SessionContext::new();
    let plan = table
        .scan(&host_ctx.state(), None, &[country], None)
        .await
        .unwrap();
    assert_eq!(plan.name(), "ProspeoExec");
    assert_eq!(plan.properties().partitioning.partition_count(), 1);
    let text = plan_text(&plan);
    assert!(
        text.contains("EnrichExec") && text.contains("Country"),
        "{text}"
    );
    let batches = collect(plan, host_ctx.task_ctx()).await.unwrap();
    assert_eq!(column_strings(&batches, "lead_id"), ["2", "5"]);
    assert_eq!(
        column_strings(&batches, "host_status"),
        ["matched", "matched"]
    );
    let stats = sandbox.stats().key(ALPHA);
    assert_eq!(stats.records_submitted, 2, "only the FR rows were sent");
    assert!(
        stats.mobile_reveals >= 1,
        "the literal's enrich_mobile was sent: {stats:?}"
    );

    // A table of the host's session is out of reach: the error says what to do instead.
    let error = function
        .foreign_table("crm_leads", &[], &host)
        .unwrap_err()
        .to_string();
    assert!(error.contains("prospeo.enrich"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_person_answers_across_the_ffi_boundary_in_input_order() {
    use datafusion::catalog::TableFunctionImpl;
    use datafusion::execution::TaskContextProvider;
    use datafusion_ffi::proto::logical_extension_codec::FFI_LogicalExtensionCodec;
    use datafusion_prospeo::EnrichOptions;
    use datafusion_prospeo::api::Endpoint;
    // Pretends the function comes from another library, so the call crosses the boundary.
    extern "C" fn another_library() -> usize {
        datafusion_ffi::get_library_marker_id() + 1
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leads.parquet");
    write_parquet(&path, &leads_batch(LEADS));
    let sandbox = start(config()).await;
    let host = Arc::new(SessionContext::new());
    let provider = Arc::clone(&host) as Arc<dyn TaskContextProvider>;
    let mut function = datafusion_prospeo::datafusion::ffi::table_function(
        Endpoint::BulkEnrichPerson,
        Some(sandbox_builder(&sandbox)),
        EnrichOptions {
            cache: false,
            ..Default::default()
        },
        tokio::runtime::Handle::current(),
        FFI_LogicalExtensionCodec::new_default(&provider),
    );
    function.library_marker_id = another_library;
    let function: Arc<dyn TableFunctionImpl> = function.into();
    host.register_udtf("enrich_person", function);

    let free = format!(
        "SELECT count(*) AS n FROM enrich_person('{}')",
        path.display()
    );
    let (_, batches) = run(&host, &free).await;
    assert_eq!(column_strings(&batches, "n"), ["6"]);
    assert_eq!(sandbox.stats().key(ALPHA).requests, 0, "count(*) is free");

    let all = format!(
        "SELECT lead_id, prospeo_status FROM enrich_person('{}')",
        path.display()
    );
    let (_, batches) = run(&host, &all).await;
    assert_eq!(
        column_strings(&batches, "lead_id"),
        ["1", "2", "3", "4", "5", "6"],
        "input order, without ORDER BY"
    );
    assert_eq!(column_strings(&batches, "prospeo_status"), LEADS_STATUSES);
    assert_eq!(sandbox.stats().key(ALPHA).records_submitted, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_with_schema_metadata_keeps_it_and_is_enriched() {
    // A pandas DataFrame handed over through Arrow carries its `pandas` metadata.
    let batch = leads_batch(LEADS);
    let metadata = std::collections::HashMap::from([("pandas".to_string(), "{}".to_string())]);
    let schema = Arc::new(
        batch
            .schema()
            .as_ref()
            .clone()
            .with_metadata(metadata.clone()),
    );
    let batch = batch.with_schema(schema).unwrap();
    let sandbox = start(config()).await;
    let ctx = context(&sandbox).await;
    ctx.register_batch("crm_leads", batch).unwrap();
    let (_, batches) = run(&ctx, "SELECT count(*) AS n FROM enrich_person('crm_leads')").await;
    assert_eq!(column_strings(&batches, "n"), ["6"]);
    let (_, batches) = run(
        &ctx,
        "SELECT lead_id, prospeo_status FROM enrich_person('crm_leads') ORDER BY lead_id",
    )
    .await;
    assert_eq!(column_strings(&batches, "prospeo_status"), LEADS_STATUSES);
    let df = ctx
        .sql("SELECT * FROM enrich_person('crm_leads')")
        .await
        .unwrap();
    assert_eq!(df.schema().as_arrow().metadata(), &metadata);
}

//! Flattening throughput: enrichment outcomes → Arrow columns, in records per second.
//!
//! The records are realistic responses: the people and companies of the sandbox directory
//! (seed 42, 400 companies, 5,000 people), matched, with one record in five not matched. They are
//! flattened in batches of 50 (one bulk request) and of 8,192 (one DataFusion batch), with every
//! column (`flatten`), with only `prospeo_status` and `prospeo_cost` (`flatten_status_cost`: no
//! person or company is looked at) and with a few person and company columns
//! (`flatten_some_columns`). `flatten_decoder` is every column the way it was done before
//! columns were built directly (arrow-json's decoder on the serialised structs), measured side by
//! side.
//!
//! Run: `cargo bench --bench flatten`. Criterion prints the throughput as `elem/s`: records per
//! second, on one core, with the binary's allocator (mimalloc).

// `criterion_group!` declares a public function without documentation.
#![allow(missing_docs)]

use std::hint::black_box;

/// The binary's allocator: flattening allocates the columns' buffers, as the binary does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion_prospeo::api::Match;
use datafusion_prospeo::api::RecordOutcome;
use datafusion_prospeo::api::wire::{Company, Person};
use datafusion_prospeo::output::{OutputProjection, OutputSchema};
use datafusion_prospeo::sandbox::generator::{GeneratorConfig, generate_directory};

/// Records flattened per measured iteration, whatever the batch size.
const RECORDS: usize = 8192;
/// One record in this many is not matched (~20%).
const NOT_MATCHED_EVERY: usize = 5;

/// `RECORDS` outcomes from the sandbox directory, cycling through its people.
fn outcomes() -> Vec<RecordOutcome> {
    let directory = generate_directory(&GeneratorConfig {
        seed: 42,
        companies: 400,
        people: 5000,
    });
    let pairs: Vec<(Person, Option<Company>)> = directory
        .people()
        .iter()
        .map(|person| (person.clone(), directory.company_of(person).cloned()))
        .collect();
    (0..RECORDS)
        .map(|i| {
            if i % NOT_MATCHED_EVERY == NOT_MATCHED_EVERY - 1 {
                return RecordOutcome::NotMatched;
            }
            let (person, company) = pairs[i % pairs.len()].clone();
            RecordOutcome::Matched(Box::new(Match {
                person: Some(person),
                company,
                free_enrichment: i.is_multiple_of(7),
                cost: 1,
            }))
        })
        .collect()
}

/// Measures `flatten` over the outcomes in batches of 50 and 8,192 rows.
fn bench_group(
    c: &mut Criterion,
    group: &str,
    flatten: impl Fn(&[RecordOutcome]) -> Result<RecordBatch, ArrowError>,
) {
    let outcomes = outcomes();
    let mut group = c.benchmark_group(group);
    group.throughput(Throughput::Elements(outcomes.len() as u64));
    for batch in [50, 8192] {
        group.bench_with_input(
            BenchmarkId::new("rows_per_batch", batch),
            &batch,
            |b, &n| {
                b.iter(|| {
                    for chunk in outcomes.chunks(n) {
                        black_box(flatten(black_box(chunk)).expect("flatten"));
                    }
                })
            },
        );
    }
    group.finish();
}

fn bench_projection(c: &mut Criterion, group: &str, projection: &OutputProjection) {
    let output = OutputSchema::default();
    bench_group(c, group, |chunk| {
        output.flatten_projected(projection, chunk)
    });
}

fn bench_decoder(c: &mut Criterion) {
    let output = OutputSchema::default();
    bench_group(c, "flatten_decoder", |chunk| {
        output.flatten_with_decoder(chunk)
    });
}

fn bench_flatten(c: &mut Criterion) {
    let output = OutputSchema::default();
    let schema = output.schema();
    let all: Vec<usize> = (0..schema.fields().len()).collect();
    let index = |name: &str| schema.index_of(name).expect("a declared column");
    bench_projection(c, "flatten", &output.projection(&all).expect("in range"));
    bench_decoder(c);
    let status_cost = [index("prospeo_status"), index("prospeo_cost")];
    bench_projection(
        c,
        "flatten_status_cost",
        &output.projection(&status_cost).expect("in range"),
    );
    let some = [
        "prospeo_person_full_name",
        "prospeo_person_email_email",
        "prospeo_person_job_history",
        "prospeo_company_name",
        "prospeo_company_revenue_range_min",
        "prospeo_status",
    ]
    .map(index);
    bench_projection(
        c,
        "flatten_some_columns",
        &output.projection(&some).expect("in range"),
    );
}

criterion_group!(benches, bench_flatten);
criterion_main!(benches);

//! Flattening throughput: enrichment outcomes → Arrow columns, in records per second.
//!
//! The records are realistic responses: the people and companies of the sandbox directory
//! (seed 42, 400 companies, 5,000 people), matched, with one record in five not matched. They are
//! flattened in batches of 50 (one bulk request) and of 8,192 (one DataFusion batch).
//!
//! Run: `cargo bench --bench flatten`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use datafusion_prospeo::api::Match;
use datafusion_prospeo::api::RecordOutcome;
use datafusion_prospeo::api::wire::{Company, Person};
use datafusion_prospeo::output::OutputSchema;
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

fn bench_flatten(c: &mut Criterion) {
    let outcomes = outcomes();
    let output = OutputSchema::default();
    let mut group = c.benchmark_group("flatten");
    group.throughput(Throughput::Elements(outcomes.len() as u64));
    for batch in [50, 8192] {
        group.bench_with_input(
            BenchmarkId::new("rows_per_batch", batch),
            &batch,
            |b, &n| {
                b.iter(|| {
                    for chunk in outcomes.chunks(n) {
                        black_box(output.flatten(black_box(chunk)).expect("flatten"));
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_flatten);
criterion_main!(benches);

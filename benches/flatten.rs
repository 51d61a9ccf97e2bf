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
use datafusion_prospeo::api::wire::{
    Company, CompanyAttributes, CompanyFunding, CompanyLocation, CompanyTechnology, FundingEvent,
    JobHistoryEntry, Person, PersonEmail, PersonLocation, PersonMobile, RevenueRange, Technology,
};
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
    let pairs: Vec<(Person, Option<Company>)> = if directory.is_empty() {
        // The generator is not written yet: stand-ins built by hand, of the same shape.
        eprintln!("flatten bench: the sandbox directory is empty, using hand-built records");
        (0..5000).map(hand_built).collect()
    } else {
        directory
            .people()
            .iter()
            .map(|person| (person.clone(), directory.company_of(person).cloned()))
            .collect()
    };
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

fn s(value: impl Into<String>) -> Option<String> {
    Some(value.into())
}

/// A person and company with every documented field filled, varied by `i`.
fn hand_built(i: usize) -> (Person, Option<Company>) {
    let company_id = format!("c-{}", i % 400);
    let revealed = i.is_multiple_of(3);
    let person = Person {
        person_id: s(format!("p-{i}")),
        first_name: s(format!("First{i}")),
        last_name: s(format!("Last{i}")),
        full_name: s(format!("First{i} Last{i}")),
        linkedin_url: s(format!("https://www.linkedin.com/in/person-{i}")),
        headline: s("Head of Growth at a B2B SaaS company"),
        current_job_title: s("Head of Growth"),
        current_job_key: s(format!("job-{i}")),
        linkedin_member_id: s(format!("{}", 100_000 + i)),
        last_job_change_detected_at: s("2024-08-27T21:18:29.577Z"),
        skills: Some(vec!["SaaS".into(), "Growth".into(), "SQL".into()]),
        email: Some(PersonEmail {
            status: s("VERIFIED"),
            revealed: Some(true),
            email: s(format!("first{i}@company{}.com", i % 400)),
            verification_method: s("SMTP"),
            email_mx_provider: s("Google"),
            ..Default::default()
        }),
        mobile: Some(PersonMobile {
            status: s("VERIFIED"),
            revealed: Some(revealed),
            mobile: s(if revealed {
                "+14155550123"
            } else {
                "+1415*******"
            }),
            mobile_national: s("(415) 555-0123"),
            mobile_international: s("+1 415-555-0123"),
            mobile_country: s("United States"),
            mobile_country_code: s("US"),
            ..Default::default()
        }),
        location: Some(PersonLocation {
            country: s("United States"),
            country_code: s("US"),
            state: s("California"),
            city: s("San Francisco"),
            time_zone: s("America/Los_Angeles"),
            time_zone_offset: Some(-7.0),
            ..Default::default()
        }),
        job_history: Some(
            (0..3)
                .map(|j| JobHistoryEntry {
                    title: s(format!("Role {j}")),
                    company_name: s(format!("Company {j}")),
                    logo_url: s("https://cdn.example.com/logo.png"),
                    current: Some(j == 0),
                    start_year: Some(2015 + j),
                    start_month: Some(3),
                    end_year: (j > 0).then_some(2016 + j),
                    end_month: (j > 0).then_some(9),
                    duration_in_months: Some(18),
                    departments: Some(vec!["Marketing".into()]),
                    seniority: s("Head"),
                    company_id: s(if j == 0 {
                        company_id.clone()
                    } else {
                        format!("old-{j}")
                    }),
                    job_key: s(format!("job-{i}-{j}")),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    };
    let company = Company {
        company_id: s(company_id),
        name: s(format!("Company {}", i % 400)),
        website: s(format!("https://company{}.com", i % 400)),
        domain: s(format!("company{}.com", i % 400)),
        description: s("A long description of what the company does. ".repeat(6)),
        r#type: s("Private"),
        industry: s("Software Development"),
        employee_range: s("51-200"),
        linkedin_url: s(format!(
            "https://www.linkedin.com/company/company{}",
            i % 400
        )),
        revenue_range_printed: s("$10M-$50M"),
        employee_count: Some(120),
        founded: Some(2011),
        keywords: Some(vec!["saas".into(), "b2b".into(), "analytics".into()]),
        sic_codes: Some(vec!["7372".into()]),
        location: Some(CompanyLocation {
            country: s("United States"),
            country_code: s("US"),
            city: s("San Francisco"),
            raw_address: s("1 Market St, San Francisco, CA"),
            ..Default::default()
        }),
        revenue_range: Some(RevenueRange {
            min: Some(10_000_000),
            max: Some(50_000_000),
            ..Default::default()
        }),
        attributes: Some(CompanyAttributes {
            is_b2b: Some(true),
            has_demo: Some(true),
            has_pricing: Some(false),
            ..Default::default()
        }),
        funding: Some(CompanyFunding {
            count: Some(2),
            total_funding: Some(30_000_000),
            latest_funding_date: s("2021-01-01T00:00:00"),
            funding_events: Some(vec![FundingEvent {
                amount: Some(20_000_000),
                amount_printed: s("$20M"),
                raised_at: s("2021-01-01T00:00:00"),
                stage: s("Series B"),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        technology: Some(CompanyTechnology {
            count: Some(12),
            technology_names: Some(vec!["React".into(), "AWS".into()]),
            technology_list: Some(vec![Technology {
                name: s("React"),
                category: s("JavaScript frameworks"),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    (person, Some(company))
}

criterion_group!(benches, bench_flatten);
criterion_main!(benches);

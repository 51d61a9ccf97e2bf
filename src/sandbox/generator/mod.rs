//! Deterministic generator of the sandbox directory and of sample lead files.
//!
//! The sandbox needs a vendor to emulate: a directory of people and companies realistic enough
//! that every documented field of the person and company objects has values, that the vendor
//! page's example request behaves as the page says, and that the awkward cases of real data
//! exist (companies sharing a name, people sharing a name, missing emails and mobiles). The lead
//! files are what a sales team feeds the connector: mostly people of the directory, written as
//! messily as CRM exports are, plus unknown people, rows below the vendor's minimum and
//! duplicates.
//!
//! Every random choice comes from a `SplitMix64` stream keyed by the seed, never from the
//! clock or from hash-map iteration order (hash sets are only asked "is this taken?"), so one
//! seed gives byte-identical output on every run and platform. Each company and person has its
//! own stream (`SplitMix64::for_item`), and the only state shared between people is a set of
//! taken email addresses, so a directory of a million people costs linear time.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
use datafusion::arrow::csv::WriterBuilder;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::errors::ParquetError;

use crate::datapoints::{Datapoints, MatchRoute};
use crate::rng::SplitMix64;
use crate::sandbox::directory::{Directory, DirectoryError, Lookup};
use crate::vendor::wire::{
    Company, CompanyAttributes, CompanyEmailTech, CompanyFunding, CompanyJobPostings,
    CompanyLocation, CompanyPhoneHq, CompanyTechnology, FundingEvent, JobHistoryEntry, Person,
    PersonEmail, PersonLocation, PersonMobile, RevenueRange, Technology,
};

mod accounts;
mod words;

pub use accounts::{ACCOUNT_HEADERS, Account, AccountKind, accounts_batch, generate_accounts};
use words::*;

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/// How big a directory to generate, and from which seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneratorConfig {
    /// Seed of every random choice: the same seed gives the same directory, byte for byte.
    pub seed: u64,
    /// Number of companies. Raised to 8 when smaller: the vendor page's example companies and
    /// two pairs of same-name companies are always present.
    pub companies: usize,
    /// Number of people. Raised to 8 when smaller: the vendor page's example people and two
    /// pairs of same-name people are always present, first.
    pub people: usize,
}

impl Default for GeneratorConfig {
    /// Seed 42, 40 companies, 240 people: small enough to read, big enough for every case.
    fn default() -> Self {
        GeneratorConfig {
            seed: 42,
            companies: 40,
            people: 240,
        }
    }
}

/// One row of a lead file, as a sales team would export it (values possibly messy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lead {
    /// The CRM's id of the row.
    pub lead_id: i64,
    /// `First Name`.
    pub first_name: Option<String>,
    /// `Last Name`.
    pub last_name: Option<String>,
    /// `Email`: the work email.
    pub email: Option<String>,
    /// `LinkedIn URL`: the person's profile.
    pub linkedin_url: Option<String>,
    /// `Company`: the company's name.
    pub company: Option<String>,
    /// `Company Domain`: the company's website or domain.
    pub company_domain: Option<String>,
    /// `Company LinkedIn`: the company's LinkedIn page.
    pub company_linkedin_url: Option<String>,
    /// `Prospeo ID`: a `person_id` from the vendor's search.
    pub person_id: Option<String>,
    /// `Country`: the person's country. Not a matching datapoint; there to filter on.
    pub country: Option<String>,
    /// What the row is meant to exercise. Never written to the lead files.
    pub expected: LeadKind,
}

/// What a lead row is meant to exercise: the route it matches by, or why it does not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadKind {
    /// Matches one person by the LinkedIn URL.
    ByLinkedin,
    /// Matches one person by the email.
    ByEmail,
    /// Matches one person by first and last name plus the company's website.
    ByNameAndWebsite,
    /// Matches one person by first and last name plus the company's LinkedIn page.
    ByNameAndCompanyLinkedin,
    /// Matches one person by first and last name plus the company's name.
    ByNameAndCompanyName,
    /// Matches one person by the vendor's `person_id`.
    ByPersonId,
    /// A plausible person who is not in the directory: meets the minimum, matches nobody.
    Unknown,
    /// Below the vendor's minimum requirement (e.g. only a first name, or only a company).
    Invalid,
    /// The same person as an earlier matching row, written differently.
    Duplicate,
}

/// Builds a directory of `config.companies` companies and `config.people` people (see
/// [`GeneratorConfig`] for the minimums). The first people are the vendor page's examples:
/// Eva Kiegler at intercom.com, nicolas.b@kpmg.com, Nicole Wonda at
/// `linkedin.com/company/young`, and person `6f564548455488874f48e`.
pub fn generate_directory(config: &GeneratorConfig) -> Directory {
    let company_count = config.companies.max(FIXED_COMPANIES);
    let people_count = config.people.max(FIXED_PEOPLE);
    let seed = config.seed;

    let mut book = CompanyBook::new();
    let mut companies: Vec<Company> = Vec::with_capacity(company_count);
    let mut metas = Vec::with_capacity(company_count);
    for index in 0..company_count {
        let twin_name = twin_of(index).and_then(|t| companies[t].name.clone());
        let (company, meta) = make_company(
            seed,
            index,
            SPECIAL_COMPANIES.get(index),
            twin_name.as_deref(),
            &mut book,
        );
        companies.push(company);
        metas.push(meta);
    }
    drop(book);

    let mut builder = PeopleBuilder::new(seed, &companies, &metas);
    let mut people = Vec::with_capacity(people_count);
    for index in 0..people_count {
        let (company, overrides) = builder.fixed_person(index).unwrap_or_else(|| {
            let company = builder.company_for(index);
            (company, PersonOverrides::default())
        });
        people.push(builder.make_person(index, company, &overrides));
    }
    drop(builder);

    Directory::new(companies, people)
        .expect("the generator keeps ids unique and every current company in the directory")
}

/// Writes `rows` lead rows over `directory`: mostly people of the directory (about 74%, by
/// every route), about 10% unknown people, 8% rows below the vendor's minimum and 8% duplicates
/// of earlier rows, with messy values. Deterministic in `seed`. Every row is checked against
/// the directory while it is generated: a matching row finds exactly its person, an unknown
/// row finds nobody, an invalid row fails the minimum requirement.
pub fn generate_leads(directory: &Directory, seed: u64, rows: usize) -> Vec<Lead> {
    generate_targeted_leads(directory, seed, rows)
        .into_iter()
        .map(|(lead, _)| lead)
        .collect()
}

/// The datapoints a lead row carries, unnormalised (normalise with
/// [`Datapoints::normalized`]; [`Directory::find`] does it itself).
pub fn lead_datapoints(lead: &Lead) -> Datapoints {
    Datapoints {
        first_name: lead.first_name.clone(),
        last_name: lead.last_name.clone(),
        full_name: None,
        linkedin_url: lead.linkedin_url.clone(),
        email: lead.email.clone(),
        company_name: lead.company.clone(),
        company_website: lead.company_domain.clone(),
        company_linkedin_url: lead.company_linkedin_url.clone(),
        person_id: lead.person_id.clone(),
        company_id: None,
    }
}

/// The schema of an export as a CSV reader infers it: the first column (the CRM's id) Int64,
/// every other Utf8, all nullable.
fn export_schema(headers: &[&str]) -> Schema {
    Schema::new(
        headers
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let data_type = if i == 0 {
                    DataType::Int64
                } else {
                    DataType::Utf8
                };
                Field::new(*name, data_type, true)
            })
            .collect::<Vec<_>>(),
    )
}

/// The leads as an Arrow batch with the messy headers of a CRM export (`lead_id` Int64, every
/// other column Utf8; all nullable, as a CSV reader would infer them). `expected` is left out.
pub fn leads_batch(leads: &[Lead]) -> RecordBatch {
    let schema = export_schema(&LEAD_HEADERS);
    let text = |value: fn(&Lead) -> Option<&str>| -> ArrayRef {
        Arc::new(leads.iter().map(value).collect::<StringArray>())
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            leads
                .iter()
                .map(|l| Some(l.lead_id))
                .collect::<Int64Array>(),
        ),
        text(|l| l.first_name.as_deref()),
        text(|l| l.last_name.as_deref()),
        text(|l| l.email.as_deref()),
        text(|l| l.linkedin_url.as_deref()),
        text(|l| l.company.as_deref()),
        text(|l| l.company_domain.as_deref()),
        text(|l| l.company_linkedin_url.as_deref()),
        text(|l| l.person_id.as_deref()),
        text(|l| l.country.as_deref()),
    ];
    RecordBatch::try_new(Arc::new(schema), columns)
        .expect("the columns are built to the schema, one value per lead each")
}

/// What [`write_sample_data`] generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleData {
    /// The directory; its seed also seeds the leads.
    pub directory: GeneratorConfig,
    /// Number of rows of the lead file.
    pub lead_rows: usize,
    /// Number of rows of the account file.
    pub account_rows: usize,
}

impl Default for SampleData {
    /// The default directory, 120 lead rows and 60 account rows.
    fn default() -> Self {
        SampleData {
            directory: GeneratorConfig::default(),
            lead_rows: 120,
            account_rows: 60,
        }
    }
}

/// Writes `out/directory/{companies,people}.jsonl` (via [`Directory::save`]), `out/leads.csv`
/// (with a header row), `out/leads.parquet` and `out/accounts.csv`, creating `out` when needed. Returns the
/// directory it generated.
pub fn write_sample_data(out: &Path, sample: &SampleData) -> Result<Directory, GeneratorError> {
    std::fs::create_dir_all(out).map_err(|source| GeneratorError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let directory = generate_directory(&sample.directory);
    let directory_path = out.join("directory");
    directory
        .save(&directory_path)
        .map_err(|source| GeneratorError::Directory {
            path: directory_path,
            source,
        })?;
    let leads = generate_leads(&directory, sample.directory.seed, sample.lead_rows);
    let batch = leads_batch(&leads);
    write_csv(&out.join("leads.csv"), &batch)?;
    write_parquet(&out.join("leads.parquet"), &batch)?;
    let accounts = generate_accounts(&directory, sample.directory.seed, sample.account_rows);
    write_csv(&out.join("accounts.csv"), &accounts_batch(&accounts))?;
    Ok(directory)
}

/// Why sample data could not be written. Every variant names the path it was writing.
#[derive(Debug, thiserror::Error)]
pub enum GeneratorError {
    /// Creating or writing a file or folder failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Arrow could not encode the leads (CSV).
    #[error("cannot write the leads to {path}: {source}")]
    Arrow {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: ArrowError,
    },
    /// Parquet could not encode the leads.
    #[error("cannot write the leads to {path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: ParquetError,
    },
    /// The directory could not be saved.
    #[error("cannot save the directory to {path}: {source}")]
    Directory {
        /// The folder.
        path: PathBuf,
        /// The underlying error.
        source: DirectoryError,
    },
}

// ---------------------------------------------------------------------------------------------
// Fixed records: the vendor page's examples and the deliberate ambiguities
// ---------------------------------------------------------------------------------------------

/// Record 7 of the vendor page's example request.
const EXAMPLE_PERSON_ID: &str = "6f564548455488874f48e";
/// Record 5 of the vendor page's example request.
const EXAMPLE_EMAIL: &str = "nicolas.b@kpmg.com";
/// The vendor examples (4) plus two same-name pairs (4).
const FIXED_COMPANIES: usize = 8;
/// The vendor examples (4) plus two same-name pairs of people (4).
const FIXED_PEOPLE: usize = 8;
/// "Now" for job durations and dates: a constant, never the clock, so output is reproducible.
const REFERENCE_MONTH: i64 = 2025 * 12 + 5; // June 2025, as months since year 0

/// Stream names, so that the companies, people and leads of one seed are independent.
const COMPANY_STREAM: u64 = 0x434f_4d50_414e_5931;
const PERSON_STREAM: u64 = 0x5045_5253_4f4e_5331;
const ASSIGN_STREAM: u64 = 0x4153_5349_474e_5331;
const SHARED_NAME_STREAM: u64 = 0x5348_4152_4544_4e31;
const LEAD_STREAM: u64 = 0x4c45_4144_5331_3131;
const ID_KEY_STREAM: u64 = 0x4944_4b45_5953_3131;

/// A company the vendor page's example request refers to.
struct SpecialCompany {
    name: &'static str,
    domain: &'static str,
    linkedin_slug: &'static str,
    industry: &'static str,
    city: &'static str,
    size: usize,
    company_type: &'static str,
    founded: i64,
    funded: bool,
}

/// Companies 0-3. Deloitte is there so that the page's Jonah Stones record (at Deloitte) is
/// "not matched" although his company is known, as on the page.
const SPECIAL_COMPANIES: [SpecialCompany; 4] = [
    SpecialCompany {
        name: "Intercom",
        domain: "intercom.com",
        linkedin_slug: "intercom",
        industry: "Software Development",
        city: "San Francisco",
        size: 5,
        company_type: "Private",
        founded: 2011,
        funded: true,
    },
    SpecialCompany {
        name: "KPMG",
        domain: "kpmg.com",
        linkedin_slug: "kpmg",
        industry: "Accounting",
        city: "New York",
        size: 7,
        company_type: "Partnership",
        founded: 1987,
        funded: false,
    },
    SpecialCompany {
        name: "Ernst & Young",
        domain: "ey.com",
        linkedin_slug: "young",
        industry: "Business Consulting and Services",
        city: "London",
        size: 7,
        company_type: "Partnership",
        founded: 1989,
        funded: false,
    },
    SpecialCompany {
        name: "Deloitte",
        domain: "deloitte.com",
        linkedin_slug: "deloitte",
        industry: "Business Consulting and Services",
        city: "London",
        size: 7,
        company_type: "Partnership",
        founded: 1845,
        funded: false,
    },
];

/// Companies 5 and 7 take the names of companies 4 and 6 (with other domains and pages), so a
/// company name alone is ambiguous, as the vendor warns.
fn twin_of(index: usize) -> Option<usize> {
    match index {
        5 => Some(4),
        7 => Some(6),
        _ => None,
    }
}

// Word lists and reference tables: words.rs.

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// An index into `items`, each drawn in proportion to its weight (all integers, so the draw is
/// the same on every platform).
fn weighted<T>(rng: &mut SplitMix64, items: &[T], weight: impl Fn(&T) -> u64) -> usize {
    let total: u64 = items.iter().map(&weight).sum();
    let mut ticket = rng.next_u64() % total.max(1);
    for (i, item) in items.iter().enumerate() {
        let w = weight(item);
        if ticket < w {
            return i;
        }
        ticket -= w;
    }
    items.len() - 1
}

/// `k` distinct indexes below `n`, in draw order (partial Fisher-Yates).
fn sample_indexes(rng: &mut SplitMix64, n: usize, k: usize) -> Vec<usize> {
    let mut pool: Vec<usize> = (0..n).collect();
    let k = k.min(n);
    for i in 0..k {
        let j = i + rng.index(n - i);
        pool.swap(i, j);
    }
    pool.truncate(k);
    pool
}

fn sample_strings(rng: &mut SplitMix64, items: &[&str], k: usize) -> Vec<String> {
    sample_indexes(rng, items.len(), k)
        .into_iter()
        .map(|i| items[i].to_string())
        .collect()
}

fn hex(rng: &mut SplitMix64, chars: usize) -> String {
    let mut out = String::with_capacity(chars);
    while out.len() < chars {
        let word = format!("{:016x}", rng.next_u64());
        let take = (chars - out.len()).min(16);
        out.push_str(&word[..take]);
    }
    out
}

fn digits(rng: &mut SplitMix64, count: usize) -> String {
    (0..count)
        .map(|_| char::from(b'0' + rng.index(10) as u8))
        .collect()
}

/// A bijection of `u64` (SplitMix64's finaliser): distinct inputs give distinct ids, so ids
/// built on it need no collision check however many are generated.
fn permute64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A bijection of `u32` (lowbias32), for the short suffix of LinkedIn slugs.
fn permute32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// FNV-1a: a hash that, unlike std's, is promised never to change.
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Lower-case ASCII letters and digits, accents folded, apostrophes dropped, and a space
/// where words break: `"Zoë O'Brien-Smith"` → `"zoe obrien smith"`.
fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        match c {
            'a'..='z' | '0'..='9' => out.push(c),
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => out.push('a'),
            'æ' => out.push_str("ae"),
            'ç' => out.push('c'),
            'è' | 'é' | 'ê' | 'ë' => out.push('e'),
            'ì' | 'í' | 'î' | 'ï' => out.push('i'),
            'ñ' => out.push('n'),
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' => out.push('o'),
            'ù' | 'ú' | 'û' | 'ü' => out.push('u'),
            'ß' => out.push_str("ss"),
            ' ' | '-' | '&' | '.' | '_' | ',' | '/' => out.push(' '),
            _ => {}
        }
    }
    out
}

/// `"Ernst & Young"` → `"ernst-young"`.
fn slugify(text: &str) -> String {
    fold(text).split_whitespace().collect::<Vec<_>>().join("-")
}

/// `"van der Berg"` → `"vanderberg"`.
fn compact(text: &str) -> String {
    fold(text).split_whitespace().collect()
}

/// Months since year 0 → (year, month 1-12).
fn year_month(months: i64) -> (i64, i64) {
    (months.div_euclid(12), months.rem_euclid(12) + 1)
}

/// `$45.5M`, `$1.2B`, `$750K`, computed in integers so it prints the same everywhere.
fn money(amount: i64) -> String {
    let (unit, divisor) = if amount >= 1_000_000_000 {
        ("B", 1_000_000_000)
    } else if amount >= 1_000_000 {
        ("M", 1_000_000)
    } else {
        ("K", 1_000)
    };
    let tenths = amount / (divisor / 10);
    if tenths % 10 == 0 {
        format!("${}{unit}", tenths / 10)
    } else {
        format!("${}.{}{unit}", tenths / 10, tenths % 10)
    }
}

fn postcode(rng: &mut SplitMix64, template: &str) -> String {
    template
        .chars()
        .map(|c| match c {
            '#' => char::from(b'0' + rng.index(10) as u8),
            '?' => char::from(b'A' + rng.index(26) as u8),
            other => other,
        })
        .collect()
}

fn place_index(city: &str) -> usize {
    PLACES
        .iter()
        .position(|p| p.city == city)
        .expect("special companies are in known cities")
}

fn industry_index(name: &str) -> usize {
    INDUSTRIES
        .iter()
        .position(|i| i.name == name)
        .expect("special companies are in known industries")
}

/// A phone number in E.164, national and international forms. North American numbers use
/// the 555-01xx block and British and Australian ones their regulators' drama ranges, which
/// are reserved for fiction, so the sandbox never prints a real person's number.
fn phone(rng: &mut SplitMix64, place: &Place, mobile: bool) -> (String, String, String) {
    let area = place.area;
    match place.country_code {
        "US" | "CA" => {
            let d = rng.range(0, 99);
            (
                format!("+1{area}55501{d:02}"),
                format!("({area}) 555-01{d:02}"),
                format!("+1 {area}-555-01{d:02}"),
            )
        }
        "GB" if mobile => {
            let d = rng.range(0, 999);
            (
                format!("+447700900{d:03}"),
                format!("07700 900{d:03}"),
                format!("+44 7700 900{d:03}"),
            )
        }
        "GB" => {
            let mid = if area == "20" { "7946" } else { "496" };
            let d = rng.range(0, 999);
            (
                format!("+44{area}{mid}0{d:03}"),
                format!("0{area} {mid} 0{d:03}"),
                format!("+44 {area} {mid} 0{d:03}"),
            )
        }
        "AU" if mobile => {
            let d = rng.range(0, 999);
            (
                format!("+61491570{d:03}"),
                format!("0491 570 {d:03}"),
                format!("+61 491 570 {d:03}"),
            )
        }
        "AU" => {
            let d = rng.range(0, 9999);
            (
                format!("+61{area}5550{d:04}"),
                format!("(0{area}) 5550 {d:04}"),
                format!("+61 {area} 5550 {d:04}"),
            )
        }
        "DE" if mobile => {
            let p = rng.range(1, 7);
            let n = digits(rng, 8);
            (
                format!("+4915{p}{n}"),
                format!("015{p} {n}"),
                format!("+49 15{p} {n}"),
            )
        }
        "FR" => {
            let lead = if mobile { "6" } else { area };
            let n = digits(rng, 8);
            let grouped = format!("{} {} {} {}", &n[0..2], &n[2..4], &n[4..6], &n[6..8]);
            (
                format!("+33{lead}{n}"),
                format!("0{lead} {grouped}"),
                format!("+33 {lead} {grouped}"),
            )
        }
        "NL" if mobile => {
            let n = digits(rng, 8);
            (format!("+316{n}"), format!("06 {n}"), format!("+31 6 {n}"))
        }
        "ES" => {
            let lead = if mobile { "6" } else { area };
            let full = format!("{lead}{}", digits(rng, 9 - lead.len()));
            let grouped = format!(
                "{} {} {} {}",
                &full[0..3],
                &full[3..5],
                &full[5..7],
                &full[7..9]
            );
            (
                format!("+34{full}"),
                grouped.clone(),
                format!("+34 {grouped}"),
            )
        }
        "IN" if mobile => {
            let n = format!("9{}", digits(rng, 9));
            (
                format!("+91{n}"),
                format!("0{} {}", &n[..5], &n[5..]),
                format!("+91 {} {}", &n[..5], &n[5..]),
            )
        }
        "SG" => {
            let full = format!("{}{}", if mobile { "8" } else { "6" }, digits(rng, 7));
            (
                format!("+65{full}"),
                format!("{} {}", &full[..4], &full[4..]),
                format!("+65 {} {}", &full[..4], &full[4..]),
            )
        }
        "BR" => {
            let lead = if mobile { "9" } else { "3" };
            let n = digits(rng, if mobile { 8 } else { 7 });
            let split = n.len() - 4;
            (
                format!("+55{area}{lead}{n}"),
                format!("({area}) {lead}{}-{}", &n[..split], &n[split..]),
                format!("+55 {area} {lead}{}-{}", &n[..split], &n[split..]),
            )
        }
        _ => {
            // Landlines of DE, NL and IN: trunk prefix 0, area code, subscriber number.
            let code = match place.country_code {
                "DE" => "49",
                "NL" => "31",
                _ => "91",
            };
            let n = digits(rng, 7);
            (
                format!("+{code}{area}{n}"),
                format!("0{area} {n}"),
                format!("+{code} {area} {n}"),
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Companies
// ---------------------------------------------------------------------------------------------

/// What the people generator needs to know about a company beyond the wire object.
struct CompanyMeta {
    place: usize,
    email_pattern: usize,
    size: usize,
    catch_all: bool,
    mx_provider: String,
}

/// Domains and LinkedIn slugs handed out so far: both must be unique, as they identify a
/// company for matching, while names may repeat.
struct CompanyBook {
    domains: HashSet<String>,
    slugs: HashSet<String>,
    /// Next numeric suffix to try per base, so a common name costs O(1), not a scan.
    next_suffix: HashMap<String, u64>,
}

impl CompanyBook {
    fn new() -> Self {
        CompanyBook {
            domains: SPECIAL_COMPANIES
                .iter()
                .map(|c| c.domain.to_string())
                .collect(),
            slugs: SPECIAL_COMPANIES
                .iter()
                .map(|c| c.linkedin_slug.to_string())
                .collect(),
            next_suffix: HashMap::new(),
        }
    }

    fn claim_domain(&mut self, base: &str, preferred_tld: &str) -> String {
        for tld in [preferred_tld, "com", "io", "co", "net"] {
            let domain = format!("{base}.{tld}");
            if self.domains.insert(domain.clone()) {
                return domain;
            }
        }
        for prefix in ["get", "try"] {
            let domain = format!("{prefix}{base}.com");
            if self.domains.insert(domain.clone()) {
                return domain;
            }
        }
        self.numbered(
            &format!("domain:{base}"),
            |n| format!("{base}{n}.com"),
            true,
        )
    }

    fn claim_slug(&mut self, base: &str) -> String {
        if self.slugs.insert(base.to_string()) {
            return base.to_string();
        }
        self.numbered(&format!("slug:{base}"), |n| format!("{base}-{n}"), false)
    }

    fn numbered(&mut self, key: &str, make: impl Fn(u64) -> String, domain: bool) -> String {
        let mut n = self.next_suffix.get(key).copied().unwrap_or(2);
        loop {
            let candidate = make(n);
            n += 1;
            let set = if domain {
                &mut self.domains
            } else {
                &mut self.slugs
            };
            if set.insert(candidate.clone()) {
                self.next_suffix.insert(key.to_string(), n);
                return candidate;
            }
        }
    }
}

/// 24 hex characters, unique by construction: a bijection of the index, plus random bits.
fn company_id(seed: u64, index: usize, rng: &mut SplitMix64) -> String {
    let key = SplitMix64::new(seed ^ ID_KEY_STREAM ^ COMPANY_STREAM).next_u64();
    format!(
        "{:016x}{:08x}",
        permute64(index as u64 ^ key),
        rng.next_u64() as u32
    )
}

fn company_name(rng: &mut SplitMix64, industry: &Industry) -> String {
    let base = format!("{}{}", rng.pick(NAME_PREFIXES), rng.pick(NAME_STEMS));
    if rng.chance(0.7) {
        format!("{base} {}", rng.pick(industry.type_words))
    } else {
        base
    }
}

fn maybe_bool(rng: &mut SplitMix64, p_true: f64) -> Option<bool> {
    if rng.chance(0.1) {
        None
    } else {
        Some(rng.chance(p_true))
    }
}

fn make_company(
    seed: u64,
    index: usize,
    special: Option<&SpecialCompany>,
    twin_name: Option<&str>,
    book: &mut CompanyBook,
) -> (Company, CompanyMeta) {
    let mut rng = SplitMix64::for_item(seed ^ COMPANY_STREAM, index as u64);
    let industry = &INDUSTRIES[match special {
        Some(s) => industry_index(s.industry),
        None => rng.index(INDUSTRIES.len()),
    }];
    let place_idx = match special {
        Some(s) => place_index(s.city),
        None => weighted(&mut rng, PLACES, |p| p.weight),
    };
    let place = &PLACES[place_idx];
    let name = match (special, twin_name) {
        (Some(s), _) => s.name.to_string(),
        (None, Some(twin)) => twin.to_string(),
        (None, None) => company_name(&mut rng, industry),
    };
    let domain = match special {
        Some(s) => s.domain.to_string(),
        None => {
            let tld = match rng.index(10) {
                0..=5 => "com",
                6 | 7 => place.tld,
                8 => "io",
                _ => "co",
            };
            book.claim_domain(&compact(&name), tld)
        }
    };
    let slug = match special {
        Some(s) => s.linkedin_slug.to_string(),
        None => book.claim_slug(&slugify(&name)),
    };
    let handle = domain.split('.').next().unwrap_or(&domain).to_string();
    let id = company_id(seed, index, &mut rng);

    let size = special.map_or_else(|| weighted(&mut rng, &SIZES, |b| b.weight), |s| s.size);
    let band = &SIZES[size];
    let employee_count = rng.range(band.min, band.max);
    let on_prospeo = (employee_count * rng.range(35, 90) / 100).max(1);
    let founded = special.map_or_else(
        || {
            if size >= 6 {
                rng.range(1900, 1995)
            } else {
                rng.range(1996, 2022)
            }
        },
        |s| s.founded,
    );
    let company_type = match special {
        Some(s) => s.company_type,
        None if size >= 5 && rng.chance(0.45) => "Public",
        None => match rng.index(25) {
            0 => "Non Profit",
            1 => "Partnership",
            2 => "Self Employed",
            _ => "Private",
        },
    };

    let street_number = rng.range(1, 480);
    let street = *rng.pick(&place.streets);
    let code = postcode(&mut rng, place.postcode);
    let line = match place.country_code {
        "US" | "CA" | "GB" | "AU" | "IN" | "SG" | "FR" => format!("{street_number} {street}"),
        _ => format!("{street} {street_number}"),
    };
    let raw_address = match place.country_code {
        "US" | "CA" | "AU" => format!(
            "{line}, {}, {} {code}, {}",
            place.city, place.state, place.country
        ),
        "GB" | "SG" => format!("{line}, {} {code}, {}", place.city, place.country),
        _ => format!("{line}, {code} {}, {}", place.city, place.country),
    };

    let mx_provider = MX_PROVIDERS[weighted(&mut rng, &MX_PROVIDERS, |m| m.1)]
        .0
        .to_string();
    let catch_all = rng.chance(0.2);
    let phone_hq = rng.chance(0.9).then(|| {
        let (e164, national, international) = phone(&mut rng, place, false);
        CompanyPhoneHq {
            phone_hq: Some(e164),
            phone_hq_national: Some(national),
            phone_hq_international: Some(international),
            phone_hq_country: Some(place.country.to_string()),
            phone_hq_country_code: Some(place.country_code.to_string()),
            ..Default::default()
        }
    });

    let (revenue_range, revenue_printed) = if special.is_some() || rng.chance(0.9) {
        let (min, max, printed) = REVENUE[*rng.pick(band.revenue)];
        (
            Some(RevenueRange {
                min: Some(min),
                max: Some(max),
                ..Default::default()
            }),
            Some(printed.to_string()),
        )
    } else {
        (None, None)
    };

    let attributes = (!rng.chance(0.15)).then(|| CompanyAttributes {
        is_b2b: maybe_bool(&mut rng, 0.7),
        has_demo: maybe_bool(&mut rng, 0.5),
        has_free_trial: maybe_bool(&mut rng, 0.4),
        has_downloadable: maybe_bool(&mut rng, 0.2),
        has_mobile_apps: maybe_bool(&mut rng, 0.3),
        has_online_reviews: maybe_bool(&mut rng, 0.6),
        has_pricing: maybe_bool(&mut rng, 0.5),
        ..Default::default()
    });

    let funded = special.map_or_else(|| founded >= 1998 && rng.chance(0.6), |s| s.funded);
    let funding = if funded {
        make_funding(&mut rng, founded, &slug)
    } else {
        None
    };

    let technology = rng.chance(0.92).then(|| {
        let k = rng.range(3, 12) as usize;
        let picks = sample_indexes(&mut rng, TECHNOLOGIES.len(), k);
        // The vendor counts technologies it does not list: the count may exceed the list.
        let unlisted = if rng.chance(0.35) {
            rng.range(1, 40)
        } else {
            0
        };
        CompanyTechnology {
            count: Some(picks.len() as i64 + unlisted),
            technology_names: Some(
                picks
                    .iter()
                    .map(|&i| TECHNOLOGIES[i].0.to_string())
                    .collect(),
            ),
            technology_list: Some(
                picks
                    .iter()
                    .map(|&i| Technology {
                        name: Some(TECHNOLOGIES[i].0.to_string()),
                        category: Some(TECHNOLOGIES[i].1.to_string()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    });

    let job_postings = rng.chance(0.9).then(|| {
        let active = if rng.chance(0.25) {
            0
        } else {
            rng.range(1, 3 + band.max.min(2000) / 40)
        };
        let mut titles: Vec<String> = Vec::new();
        for _ in 0..active.min(5) {
            let department = &DEPARTMENTS[weighted(&mut rng, DEPARTMENTS, |d| d.weight)];
            let title = department.titles[rng.index(3)].to_string();
            if !titles.contains(&title) {
                titles.push(title);
            }
        }
        CompanyJobPostings {
            active_count: Some(active),
            active_titles: Some(titles),
            ..Default::default()
        }
    });

    let keyword_count = rng.range(3, 6) as usize;
    let mut keywords = sample_strings(&mut rng, industry.keywords, keyword_count);
    if rng.chance(0.3) {
        keywords.push(industry.name.to_lowercase());
    }

    let other_websites = if rng.chance(0.4) {
        let mut sites = vec![format!("https://blog.{domain}")];
        if rng.chance(0.5) {
            sites.push(format!("https://careers.{domain}"));
        }
        sites
    } else {
        Vec::new()
    };

    let offering = industry.offering;
    let audience = industry.audience;
    let description = format!(
        "{name} provides {offering} for {audience}. Founded in {founded} and headquartered in \
         {}, {}, the company has {} employees and serves customers in {} countries.",
        place.city,
        place.country,
        band.range,
        rng.range(3, 60)
    );
    let description_seo = format!("{name}: {offering} for {audience}.");
    let description_ai = format!(
        "{name} is a {} company in the {} industry, based in {}. It offers {offering} to \
         {audience}.",
        company_type.to_lowercase(),
        industry.name,
        place.city
    );
    let social = |rng: &mut SplitMix64, p: f64, url: String| rng.chance(p).then_some(url);
    let twitter_host = if rng.chance(0.3) {
        "x.com"
    } else {
        "twitter.com"
    };
    let twitter_url = social(&mut rng, 0.6, format!("https://{twitter_host}/{handle}"));
    let facebook_url = social(&mut rng, 0.5, format!("https://www.facebook.com/{handle}"));
    let instagram_url = social(
        &mut rng,
        0.35,
        format!("https://www.instagram.com/{handle}"),
    );
    let youtube_url = social(&mut rng, 0.3, format!("https://www.youtube.com/@{handle}"));
    let crunchbase_url = social(
        &mut rng,
        if funded { 0.9 } else { 0.4 },
        format!("https://www.crunchbase.com/organization/{slug}"),
    );

    let company = Company {
        company_id: Some(id.clone()),
        name: Some(name),
        website: Some(format!("https://www.{domain}")),
        domain: Some(domain.clone()),
        description: Some(description),
        description_seo: Some(description_seo),
        description_ai: Some(description_ai),
        r#type: Some(company_type.to_string()),
        industry: Some(industry.name.to_string()),
        employee_range: Some(band.range.to_string()),
        linkedin_url: Some(format!("https://www.linkedin.com/company/{slug}")),
        twitter_url,
        facebook_url,
        instagram_url,
        youtube_url,
        crunchbase_url,
        linkedin_id: Some(rng.range(10_000, 99_999_999).to_string()),
        revenue_range_printed: revenue_printed,
        logo_url: Some(format!("https://img.prospeo.test/company-logos/{id}.png")),
        employee_count: Some(employee_count),
        employee_count_on_prospeo: Some(on_prospeo),
        founded: Some(founded),
        other_websites: Some(other_websites),
        sic_codes: Some(industry.sic.iter().map(|s| s.to_string()).collect()),
        naics_codes: Some(industry.naics.iter().map(|s| s.to_string()).collect()),
        keywords: Some(keywords),
        location: Some(CompanyLocation {
            country: Some(place.country.to_string()),
            country_code: Some(place.country_code.to_string()),
            state: Some(place.state.to_string()),
            city: Some(place.city.to_string()),
            raw_address: Some(raw_address),
            ..Default::default()
        }),
        email_tech: Some(CompanyEmailTech {
            domain: Some(domain),
            mx_provider: Some(mx_provider.clone()),
            catch_all_domain: Some(catch_all),
            ..Default::default()
        }),
        phone_hq,
        revenue_range,
        attributes,
        funding,
        technology,
        job_postings,
        ..Default::default()
    };
    let email_pattern = if special.is_some() {
        0
    } else {
        weighted(&mut rng, &EMAIL_PATTERNS, |w| *w)
    };
    let meta = CompanyMeta {
        place: place_idx,
        email_pattern,
        size,
        catch_all,
        mx_provider,
    };
    (company, meta)
}

/// Rounds from the founding onwards, one stage after the other, the newest listed first.
fn make_funding(rng: &mut SplitMix64, founded: i64, slug: &str) -> Option<CompanyFunding> {
    let rounds = rng.range(1, 5) as usize;
    let mut stage = rng.index(2);
    let mut month = founded * 12 + rng.range(3, 24);
    let mut events = Vec::new();
    while events.len() < rounds && stage < STAGES.len() && month <= REFERENCE_MONTH {
        let (name, low, high) = STAGES[stage];
        // Rounds are announced in round figures.
        let amount = rng.range(low, high) / 100_000 * 100_000;
        let disclosed = !rng.chance(0.08);
        let (year, month_of_year) = year_month(month);
        let day = rng.range(1, 28);
        events.push(FundingEvent {
            amount: disclosed.then_some(amount),
            amount_printed: disclosed.then(|| money(amount)),
            raised_at: Some(format!("{year:04}-{month_of_year:02}-{day:02}T00:00:00")),
            stage: Some(name.to_string()),
            link: Some(format!(
                "https://www.crunchbase.com/funding_round/{slug}-{}--{}",
                slugify(name),
                hex(rng, 8)
            )),
            ..Default::default()
        });
        stage += 1;
        month += rng.range(10, 30);
    }
    let latest = events.last()?.clone();
    let total: i64 = events.iter().filter_map(|e| e.amount).sum();
    events.reverse();
    Some(CompanyFunding {
        count: Some(events.len() as i64),
        total_funding: (total > 0).then_some(total),
        total_funding_printed: (total > 0).then(|| money(total)),
        latest_funding_date: latest.raised_at,
        latest_funding_stage: latest.stage,
        funding_events: Some(events),
        ..Default::default()
    })
}

// ---------------------------------------------------------------------------------------------
// People
// ---------------------------------------------------------------------------------------------

/// What a fixed person (a vendor example or a same-name twin) sets instead of drawing.
#[derive(Default)]
struct PersonOverrides {
    first: Option<String>,
    last: Option<String>,
    person_id: Option<String>,
    email: Option<String>,
    email_verified: Option<bool>,
    mobile: Option<bool>,
}

struct PeopleBuilder<'a> {
    seed: u64,
    companies: &'a [Company],
    metas: &'a [CompanyMeta],
    /// Running totals of the companies' people weights, for drawing a person's company.
    cumulative: Vec<u64>,
    /// Addresses handed out: a work email identifies one person.
    emails: HashSet<String>,
    /// The shared full names of the same-name pairs: (company index, lower-case full name).
    /// Nobody else at those companies gets them, so name + website stays unambiguous.
    reserved_names: Vec<(usize, String)>,
    shared_names: [(String, String); 2],
    id_key: u64,
    slug_key: u32,
}

impl<'a> PeopleBuilder<'a> {
    fn new(seed: u64, companies: &'a [Company], metas: &'a [CompanyMeta]) -> Self {
        let mut total = 0;
        let cumulative = metas
            .iter()
            .map(|m| {
                total += SIZES[m.size].people_weight;
                total
            })
            .collect();
        let mut rng = SplitMix64::new(seed ^ SHARED_NAME_STREAM);
        let first_pair = (
            rng.pick(FIRST_NAMES).to_string(),
            rng.pick(LAST_NAMES).to_string(),
        );
        let mut second_pair = (
            rng.pick(FIRST_NAMES).to_string(),
            rng.pick(LAST_NAMES).to_string(),
        );
        if second_pair == first_pair {
            second_pair.1 = LAST_NAMES[(LAST_NAMES
                .iter()
                .position(|l| *l == second_pair.1)
                .unwrap_or(0)
                + 1)
                % LAST_NAMES.len()]
            .to_string();
        }
        let full = |p: &(String, String)| format!("{} {}", p.0, p.1).to_lowercase();
        let reserved_names = vec![
            (4, full(&first_pair)),
            (5, full(&first_pair)),
            (6, full(&second_pair)),
            (7, full(&second_pair)),
        ];
        let mut keys = SplitMix64::new(seed ^ ID_KEY_STREAM);
        PeopleBuilder {
            seed,
            companies,
            metas,
            cumulative,
            emails: HashSet::from([EXAMPLE_EMAIL.to_string()]),
            reserved_names,
            shared_names: [first_pair, second_pair],
            id_key: keys.next_u64(),
            slug_key: keys.next_u64() as u32,
        }
    }

    /// People 0-7: the vendor examples, then the two same-name pairs at the same-name
    /// companies 4/5 and 6/7.
    fn fixed_person(&self, index: usize) -> Option<(usize, PersonOverrides)> {
        let named = |first: &str, last: &str| PersonOverrides {
            first: Some(first.to_string()),
            last: Some(last.to_string()),
            email_verified: Some(true),
            ..Default::default()
        };
        let fixed = match index {
            0 => (
                0,
                PersonOverrides {
                    mobile: Some(true),
                    ..named("Eva", "Kiegler")
                },
            ),
            1 => (
                1,
                PersonOverrides {
                    email: Some(EXAMPLE_EMAIL.to_string()),
                    mobile: Some(false),
                    ..named("Nicolas", "Bertrand")
                },
            ),
            2 => (
                2,
                PersonOverrides {
                    mobile: Some(true),
                    ..named("Nicole", "Wonda")
                },
            ),
            3 => (
                3,
                PersonOverrides {
                    person_id: Some(EXAMPLE_PERSON_ID.to_string()),
                    email_verified: Some(true),
                    ..Default::default()
                },
            ),
            4..=7 => {
                let (first, last) = &self.shared_names[(index - 4) / 2];
                (index, named(first, last))
            }
            _ => return None,
        };
        Some(fixed)
    }

    /// The company of an ordinary person: one per company first, so none is empty, then
    /// drawn in proportion to head count.
    fn company_for(&self, index: usize) -> usize {
        let ordinal = index - FIXED_PEOPLE;
        if ordinal < self.companies.len() {
            return ordinal;
        }
        let mut rng = SplitMix64::for_item(self.seed ^ ASSIGN_STREAM, index as u64);
        let total = *self.cumulative.last().unwrap_or(&1);
        let ticket = rng.next_u64() % total;
        self.cumulative.partition_point(|&c| c <= ticket)
    }

    fn person_id(&self, index: usize, rng: &mut SplitMix64) -> String {
        let mut tail = rng.next_u64() & 0xF_FFFF;
        let prefix = permute64(index as u64 ^ self.id_key);
        let mut id = format!("{prefix:016x}{tail:05x}");
        if id == EXAMPLE_PERSON_ID {
            // The prefix is unique among generated ids; only the example's id is to avoid.
            tail ^= 1;
            id = format!("{prefix:016x}{tail:05x}");
        }
        id
    }

    fn claim_email(&mut self, local: &str, domain: &str) -> String {
        let mut candidate = format!("{local}@{domain}");
        let mut n = 2;
        while self.emails.contains(&candidate) {
            candidate = format!("{local}{n}@{domain}");
            n += 1;
        }
        self.emails.insert(candidate.clone());
        candidate
    }

    fn make_person(&mut self, index: usize, company_index: usize, o: &PersonOverrides) -> Person {
        let mut rng = SplitMix64::for_item(self.seed ^ PERSON_STREAM, index as u64);
        // Copies of the shared references, so `self` stays free for the email book.
        let companies = self.companies;
        let metas = self.metas;
        let company = &companies[company_index];
        let meta = &metas[company_index];

        let first = o
            .first
            .clone()
            .unwrap_or_else(|| rng.pick(FIRST_NAMES).to_string());
        let last = match &o.last {
            Some(last) => last.clone(),
            None => {
                let mut i = rng.index(LAST_NAMES.len());
                let taken = |i: usize| {
                    let full = format!("{first} {}", LAST_NAMES[i]).to_lowercase();
                    self.reserved_names
                        .iter()
                        .any(|(c, n)| *c == company_index && *n == full)
                };
                if taken(i) {
                    i = (i + 1) % LAST_NAMES.len();
                }
                LAST_NAMES[i].to_string()
            }
        };
        let full_name = format!("{first} {last}");
        let person_id = o
            .person_id
            .clone()
            .unwrap_or_else(|| self.person_id(index, &mut rng));
        let slug = format!(
            "{}-{}-{:08x}",
            slugify(&first),
            slugify(&last),
            permute32(index as u32 ^ self.slug_key)
        );

        // The current job.
        let department = &DEPARTMENTS[weighted(&mut rng, DEPARTMENTS, |d| d.weight)];
        let founder = meta.size <= 1 && rng.chance(0.08);
        let seniority = weighted(&mut rng, &SENIORITIES, |s| s.1);
        let (title, seniority_name, departments) = if founder {
            (
                "Co-Founder & CEO".to_string(),
                "Founder/Owner",
                vec!["Executive".to_string()],
            )
        } else {
            let mut departments = vec![department.name.to_string()];
            if rng.chance(0.15) {
                let other = &DEPARTMENTS[rng.index(DEPARTMENTS.len())];
                if other.name != department.name {
                    departments.push(other.name.to_string());
                }
            }
            (
                department.titles[seniority].to_string(),
                SENIORITIES[seniority].0,
                departments,
            )
        };
        let start = REFERENCE_MONTH
            - if rng.chance(0.6) {
                rng.range(1, 36)
            } else {
                rng.range(37, 144)
            };
        let job_key = hex(&mut rng, 16);
        let (start_year, start_month) = year_month(start);
        let mut job_history = vec![JobHistoryEntry {
            title: Some(title.clone()),
            company_name: company.name.clone(),
            logo_url: company.logo_url.clone(),
            current: Some(true),
            start_year: Some(start_year),
            start_month: Some(start_month),
            end_year: None,
            end_month: None,
            duration_in_months: Some(REFERENCE_MONTH - start + 1),
            departments: Some(departments),
            seniority: Some(seniority_name.to_string()),
            company_id: company.company_id.clone(),
            job_key: Some(job_key.clone()),
            ..Default::default()
        }];

        // Earlier jobs, going back in time, one step down the ladder at most each time.
        let mut next_start = start;
        let mut level = seniority;
        for _ in 0..rng.range(0, 3) {
            let end = next_start - rng.range(1, 3);
            let begin = end - rng.range(6, 60) + 1;
            if begin < 1995 * 12 {
                break;
            }
            level = level.saturating_sub(rng.index(2));
            let dept = if rng.chance(0.8) {
                department
            } else {
                &DEPARTMENTS[rng.index(DEPARTMENTS.len())]
            };
            let (name, id, logo) = if rng.chance(0.5) {
                let mut other = rng.index(companies.len());
                if other == company_index {
                    other = (other + 1) % companies.len();
                }
                let c = &companies[other];
                (c.name.clone(), c.company_id.clone(), c.logo_url.clone())
            } else {
                // A company outside the directory; its id is a hash of its name, so the
                // same former employer has the same id in everyone's history.
                let industry = &INDUSTRIES[rng.index(INDUSTRIES.len())];
                let name = company_name(&mut rng, industry);
                let h = stable_hash(&name);
                let id = format!("{:016x}{:08x}", permute64(h), permute64(!h) as u32);
                let logo = format!("https://img.prospeo.test/company-logos/{id}.png");
                (Some(name), Some(id), Some(logo))
            };
            let (start_year, start_month) = year_month(begin);
            let (end_year, end_month) = year_month(end);
            job_history.push(JobHistoryEntry {
                title: Some(dept.titles[level].to_string()),
                company_name: name,
                logo_url: logo,
                current: Some(false),
                start_year: Some(start_year),
                start_month: Some(start_month),
                end_year: Some(end_year),
                end_month: Some(end_month),
                duration_in_months: Some(end - begin + 1),
                departments: Some(vec![dept.name.to_string()]),
                seniority: Some(SENIORITIES[level].0.to_string()),
                company_id: id,
                job_key: Some(hex(&mut rng, 16)),
                ..Default::default()
            });
            next_start = begin;
        }

        // Email: the company's convention, verified for about three people in four.
        let verified = o.email_verified.unwrap_or_else(|| rng.chance(0.75));
        let email = if verified {
            let domain = company.domain.as_deref().unwrap_or("example.com");
            let address = match &o.email {
                Some(address) => address.clone(),
                None => {
                    let f = compact(&first);
                    let l = compact(&last);
                    let fi = &f[..f.len().min(1)];
                    let li = &l[..l.len().min(1)];
                    let local = match meta.email_pattern {
                        0 => format!("{f}.{l}"),
                        1 => format!("{fi}{l}"),
                        2 => format!("{f}{l}"),
                        3 => format!("{f}_{l}"),
                        4 => format!("{f}.{li}"),
                        _ => f.clone(),
                    };
                    self.claim_email(&local, domain)
                }
            };
            // BounceBan is how catch-all domains get verified at all.
            let method = if meta.catch_all || rng.chance(0.1) {
                "BOUNCEBAN"
            } else {
                "SMTP"
            };
            PersonEmail {
                status: Some("VERIFIED".to_string()),
                revealed: Some(true),
                email: Some(address),
                verification_method: Some(method.to_string()),
                email_mx_provider: Some(meta.mx_provider.clone()),
                ..Default::default()
            }
        } else {
            PersonEmail {
                status: Some("UNAVAILABLE".to_string()),
                revealed: Some(false),
                ..Default::default()
            }
        };

        // Most people live where their company is.
        let place = &PLACES[if rng.chance(0.75) {
            meta.place
        } else {
            weighted(&mut rng, PLACES, |p| p.weight)
        }];
        let has_mobile = o.mobile.unwrap_or_else(|| rng.chance(1.0 / 3.0));
        let mobile = if has_mobile {
            let (e164, national, international) = phone(&mut rng, place, true);
            PersonMobile {
                status: Some("VERIFIED".to_string()),
                revealed: Some(true),
                mobile: Some(e164),
                mobile_national: Some(national),
                mobile_international: Some(international),
                mobile_country: Some(place.country.to_string()),
                mobile_country_code: Some(place.country_code.to_string()),
                ..Default::default()
            }
        } else {
            PersonMobile {
                status: Some("UNAVAILABLE".to_string()),
                revealed: Some(false),
                ..Default::default()
            }
        };

        let skill_count = rng.range(3, 6) as usize;
        let mut skills = sample_strings(&mut rng, department.skills, skill_count);
        if rng.chance(0.25) {
            skills.push(rng.pick(GENERIC_SKILLS).to_string());
        }
        let company_name = company.name.as_deref().unwrap_or_default();
        let headline = match rng.index(4) {
            0 | 1 => format!("{title} at {company_name}"),
            2 => format!("{title} | {}", skills.join(" · ")),
            _ => match job_history.get(1).and_then(|j| j.company_name.as_deref()) {
                Some(previous) => format!("{title} @ {company_name} · ex-{previous}"),
                None => format!("{title} @ {company_name}"),
            },
        };
        let last_job_change_detected_at = rng.chance(0.92).then(|| {
            let (y, m) = year_month((start + rng.range(0, 2)).min(REFERENCE_MONTH));
            format!(
                "{y:04}-{m:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                rng.range(1, 28),
                rng.range(0, 23),
                rng.range(0, 59),
                rng.range(0, 59),
                rng.range(0, 999)
            )
        });

        Person {
            person_id: Some(person_id),
            first_name: Some(first),
            last_name: Some(last),
            full_name: Some(full_name),
            linkedin_url: Some(format!("https://www.linkedin.com/in/{slug}")),
            headline: Some(headline),
            current_job_title: Some(title),
            current_job_key: Some(job_key),
            linkedin_member_id: Some(rng.range(10_000_000, 999_999_999).to_string()),
            last_job_change_detected_at,
            skills: Some(skills),
            email: Some(email),
            mobile: Some(mobile),
            location: Some(PersonLocation {
                country: Some(place.country.to_string()),
                country_code: Some(place.country_code.to_string()),
                state: Some(place.state.to_string()),
                city: Some(place.city.to_string()),
                time_zone: Some(place.time_zone.to_string()),
                time_zone_offset: Some(place.offset),
                ..Default::default()
            }),
            job_history: Some(job_history),
            ..Default::default()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Leads
// ---------------------------------------------------------------------------------------------

/// Every kind, so that a file of at least nine rows has each at least once.
const ALL_KINDS: [LeadKind; 9] = [
    LeadKind::ByLinkedin,
    LeadKind::ByEmail,
    LeadKind::ByNameAndWebsite,
    LeadKind::ByNameAndCompanyLinkedin,
    LeadKind::ByNameAndCompanyName,
    LeadKind::ByPersonId,
    LeadKind::Unknown,
    LeadKind::Invalid,
    LeadKind::Duplicate,
];

/// Share of each kind in a lead file, in percent, in the order of [`ALL_KINDS`].
const KIND_WEIGHTS: [u64; 9] = [20, 18, 16, 8, 6, 6, 10, 8, 8];

/// How many people to try before a row falls back to another kind.
const ATTEMPTS: usize = 64;

impl LeadKind {
    /// The minimum requirement a row of this kind meets, for the kinds that match by one.
    fn route(self) -> Option<MatchRoute> {
        match self {
            LeadKind::ByLinkedin => Some(MatchRoute::LinkedinUrl),
            LeadKind::ByEmail => Some(MatchRoute::Email),
            LeadKind::ByNameAndWebsite
            | LeadKind::ByNameAndCompanyLinkedin
            | LeadKind::ByNameAndCompanyName => Some(MatchRoute::NameAndCompany),
            LeadKind::ByPersonId => Some(MatchRoute::PersonId),
            LeadKind::Unknown | LeadKind::Invalid | LeadKind::Duplicate => None,
        }
    }

    fn is_fresh_match(self) -> bool {
        self.route().is_some()
    }
}

impl Lead {
    fn blank(expected: LeadKind) -> Lead {
        Lead {
            lead_id: 0,
            first_name: None,
            last_name: None,
            email: None,
            linkedin_url: None,
            company: None,
            company_domain: None,
            company_linkedin_url: None,
            person_id: None,
            country: None,
            expected,
        }
    }

    /// The values of the row, without its id and kind: what "written differently" compares.
    fn values(&self) -> [&Option<String>; 9] {
        [
            &self.first_name,
            &self.last_name,
            &self.email,
            &self.linkedin_url,
            &self.company,
            &self.company_domain,
            &self.company_linkedin_url,
            &self.person_id,
            &self.country,
        ]
    }
}

/// Whether a row behaves as its kind says: matching kinds find exactly `target` by their
/// route, duplicates find `target`, unknown rows meet the minimum and find nobody, invalid
/// rows fail the minimum.
fn lead_is_consistent(directory: &Directory, lead: &Lead, target: Option<usize>) -> bool {
    let datapoints = lead_datapoints(lead);
    let route = datapoints.normalized().match_route();
    let found = |t: usize| directory.find(&datapoints) == Lookup::Found(t);
    match lead.expected {
        LeadKind::Invalid => route.is_none(),
        LeadKind::Unknown => route.is_some() && directory.find(&datapoints) == Lookup::NotFound,
        LeadKind::Duplicate => route.is_some() && target.is_some_and(found),
        kind => route == kind.route() && target.is_some_and(found),
    }
}

/// Leads with the index of the person each is meant to find (none for unknown and invalid
/// rows).
fn generate_targeted_leads(
    directory: &Directory,
    seed: u64,
    rows: usize,
) -> Vec<(Lead, Option<usize>)> {
    let mut writer = LeadWriter {
        directory,
        rng: SplitMix64::new(seed ^ LEAD_STREAM),
        used: HashSet::new(),
        fresh_rows: Vec::new(),
        rows: Vec::with_capacity(rows),
    };
    let kinds = writer.plan(rows);
    let mut lead_id = 10_000 + writer.rng.range(1, 500);
    for kind in kinds {
        let (mut lead, target) = writer.row(kind);
        lead.lead_id = lead_id;
        // CRM ids have gaps where rows were deleted.
        lead_id += writer.rng.range(1, 4);
        if lead.expected.is_fresh_match() {
            writer.fresh_rows.push(writer.rows.len());
        }
        writer.rows.push((lead, target));
    }
    writer.rows
}

struct LeadWriter<'a> {
    directory: &'a Directory,
    rng: SplitMix64,
    /// People already in a row: a second row for one of them must be a Duplicate.
    used: HashSet<usize>,
    /// Rows that found their person the first time, for duplicates to copy.
    fresh_rows: Vec<usize>,
    rows: Vec<(Lead, Option<usize>)>,
}

impl LeadWriter<'_> {
    /// The kinds of the rows, shuffled, each kind at least once when there is room, and a
    /// matching row first so every duplicate has an earlier row to repeat.
    fn plan(&mut self, rows: usize) -> Vec<LeadKind> {
        let mut kinds: Vec<LeadKind> = Vec::with_capacity(rows);
        if rows >= ALL_KINDS.len() {
            kinds.extend(ALL_KINDS);
        }
        while kinds.len() < rows {
            kinds.push(ALL_KINDS[weighted(&mut self.rng, &KIND_WEIGHTS, |w| *w)]);
        }
        for i in (1..kinds.len()).rev() {
            let j = self.rng.index(i + 1);
            kinds.swap(i, j);
        }
        if let Some(first) = kinds.iter().position(|k| k.is_fresh_match()) {
            kinds.swap(0, first);
        }
        kinds
    }

    /// A row of `kind`, or of the nearest kind possible when the directory cannot give one
    /// (too few people left, nobody with an email...).
    fn row(&mut self, kind: LeadKind) -> (Lead, Option<usize>) {
        let built = match kind {
            LeadKind::Unknown => Some(self.unknown()),
            LeadKind::Invalid => Some(self.invalid()),
            LeadKind::Duplicate => self.duplicate(),
            _ => self.fresh(kind),
        };
        built
            .or_else(|| self.fresh(LeadKind::ByLinkedin))
            .or_else(|| self.duplicate())
            .unwrap_or_else(|| self.unknown())
    }

    /// A row for person `p` that matches by `kind`'s route only; `None` when the person lacks
    /// the data (e.g. no email).
    fn matched_lead(&mut self, kind: LeadKind, p: usize) -> Option<Lead> {
        let directory = self.directory;
        let person = directory.person(p);
        let company = directory.company_of(person)?;
        let rng = &mut self.rng;
        let company_name =
            |rng: &mut SplitMix64| company.name.as_deref().map(|name| messy_company(rng, name));
        let mut lead = Lead::blank(kind);
        match kind {
            LeadKind::ByLinkedin => {
                lead.linkedin_url = Some(messy_linkedin(rng, person.linkedin_url.as_deref()?));
                // Context that cannot match on its own: names without a company, or a
                // company without names.
                match rng.index(3) {
                    0 => set_names(rng, &mut lead, person),
                    1 => lead.company = company_name(rng),
                    _ => {}
                }
            }
            LeadKind::ByEmail => {
                let email = person.email.as_ref()?.email.as_deref()?;
                lead.email = Some(messy_email(rng, email));
                match rng.index(3) {
                    0 => set_names(rng, &mut lead, person),
                    1 => {
                        lead.company = company_name(rng);
                        lead.first_name = person.first_name.clone();
                    }
                    _ => {}
                }
            }
            LeadKind::ByNameAndWebsite => {
                set_names(rng, &mut lead, person);
                lead.company_domain = Some(messy_domain(rng, company.domain.as_deref()?));
                if rng.chance(0.4) {
                    lead.company = company_name(rng);
                }
            }
            LeadKind::ByNameAndCompanyLinkedin => {
                set_names(rng, &mut lead, person);
                lead.company_linkedin_url =
                    Some(messy_linkedin(rng, company.linkedin_url.as_deref()?));
                if rng.chance(0.3) {
                    lead.company = company_name(rng);
                }
            }
            LeadKind::ByNameAndCompanyName => {
                set_names(rng, &mut lead, person);
                lead.company = Some(company_name(rng)?);
            }
            LeadKind::ByPersonId => {
                let id = person.person_id.as_deref()?;
                lead.person_id = Some(if rng.chance(0.15) {
                    format!(" {id} ")
                } else {
                    id.to_string()
                });
            }
            LeadKind::Unknown | LeadKind::Invalid | LeadKind::Duplicate => return None,
        }
        // A few rows have no country, as CRM fields are often left empty.
        lead.country = if rng.chance(0.05) {
            None
        } else {
            person.location.as_ref().and_then(|l| l.country.clone())
        };
        Some(lead)
    }

    /// A row for a person not in any row yet.
    fn fresh(&mut self, kind: LeadKind) -> Option<(Lead, Option<usize>)> {
        let n = self.directory.len();
        if n == 0 {
            return None;
        }
        for _ in 0..ATTEMPTS {
            let p = self.rng.index(n);
            if self.used.contains(&p) {
                continue;
            }
            let Some(lead) = self.matched_lead(kind, p) else {
                continue;
            };
            if lead_is_consistent(self.directory, &lead, Some(p)) {
                self.used.insert(p);
                return Some((lead, Some(p)));
            }
        }
        None
    }

    /// An earlier matched person again, by any route, written differently from that row.
    fn duplicate(&mut self) -> Option<(Lead, Option<usize>)> {
        if self.fresh_rows.is_empty() {
            return None;
        }
        const ROUTES: [LeadKind; 5] = [
            LeadKind::ByLinkedin,
            LeadKind::ByEmail,
            LeadKind::ByNameAndWebsite,
            LeadKind::ByNameAndCompanyLinkedin,
            LeadKind::ByPersonId,
        ];
        for _ in 0..ATTEMPTS {
            let row = *self.rng.pick(&self.fresh_rows);
            let (earlier, target) = self.rows[row].clone();
            let p = target?;
            // Half the time the same route as the first row, written another way.
            let route = if self.rng.chance(0.5) {
                earlier.expected
            } else {
                *self.rng.pick(&ROUTES)
            };
            let Some(mut lead) = self.matched_lead(route, p) else {
                continue;
            };
            lead.expected = LeadKind::Duplicate;
            if lead.values() != earlier.values()
                && lead_is_consistent(self.directory, &lead, Some(p))
            {
                return Some((lead, Some(p)));
            }
        }
        None
    }

    /// A plausible person the directory does not know: names from the same lists, at a known
    /// company, with an email or profile of the usual shape.
    fn unknown(&mut self) -> (Lead, Option<usize>) {
        let directory = self.directory;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let rng = &mut self.rng;
            let first = *rng.pick(FIRST_NAMES);
            let last = *rng.pick(LAST_NAMES);
            let company = (!directory.companies().is_empty())
                .then(|| rng.pick(directory.companies()))
                .filter(|_| attempt < ATTEMPTS);
            let place = &PLACES[weighted(rng, PLACES, |p| p.weight)];
            let mut lead = Lead::blank(LeadKind::Unknown);
            lead.country = Some(place.country.to_string());
            // After many misses (a directory dense with names), fall back to an id, which
            // is never taken by chance.
            let form = if company.is_none() { 4 } else { rng.index(5) };
            match (form, company) {
                (0, Some(c)) => {
                    lead.first_name = Some(messy_name(rng, first));
                    lead.last_name = Some(messy_name(rng, last));
                    lead.company_domain = c.domain.as_deref().map(|d| messy_domain(rng, d));
                }
                (1, Some(c)) => {
                    let domain = c.domain.as_deref().unwrap_or("example.com");
                    let email = format!("{}.{}@{domain}", compact(first), compact(last));
                    lead.email = Some(messy_email(rng, &email));
                    lead.company = c.name.clone();
                }
                (2, _) => {
                    let url = format!(
                        "https://www.linkedin.com/in/{}-{}-{}",
                        slugify(first),
                        slugify(last),
                        hex(rng, 6)
                    );
                    lead.linkedin_url = Some(messy_linkedin(rng, &url));
                    lead.first_name = Some(first.to_string());
                    lead.last_name = Some(last.to_string());
                }
                (3, Some(c)) => {
                    lead.first_name = Some(messy_name(rng, first));
                    lead.last_name = Some(messy_name(rng, last));
                    lead.company_linkedin_url =
                        c.linkedin_url.as_deref().map(|u| messy_linkedin(rng, u));
                }
                _ => lead.person_id = Some(hex(rng, 21)),
            }
            if lead_is_consistent(directory, &lead, None) {
                return (lead, None);
            }
        }
    }

    /// A row below the minimum requirement, as CRM rows half filled in are.
    fn invalid(&mut self) -> (Lead, Option<usize>) {
        let directory = self.directory;
        let rng = &mut self.rng;
        let person = (!directory.is_empty()).then(|| directory.person(rng.index(directory.len())));
        let company = person.and_then(|p| directory.company_of(p));
        let first = person
            .and_then(|p| p.first_name.clone())
            .unwrap_or_else(|| rng.pick(FIRST_NAMES).to_string());
        let last = person
            .and_then(|p| p.last_name.clone())
            .unwrap_or_else(|| rng.pick(LAST_NAMES).to_string());
        let company_name = company.and_then(|c| c.name.clone());
        let domain = company.and_then(|c| c.domain.clone());
        let mut lead = Lead::blank(LeadKind::Invalid);
        lead.country = person
            .and_then(|p| p.location.as_ref())
            .and_then(|l| l.country.clone());
        match rng.index(6) {
            0 => lead.first_name = Some(first),
            1 => {
                lead.company = company_name;
                lead.company_domain = domain.map(|d| messy_domain(rng, &d));
            }
            2 => {
                lead.first_name = Some(first);
                lead.company_domain = domain.map(|d| messy_domain(rng, &d));
            }
            3 => {
                lead.first_name = Some(first);
                lead.last_name = Some(last);
            }
            4 => {
                lead.last_name = Some(last);
                lead.company = company_name;
            }
            _ => {
                // Blank cells that are not empty: whitespace is no datapoint.
                lead.email = Some("   ".to_string());
                lead.linkedin_url = Some(" ".to_string());
                lead.company = company_name;
            }
        }
        debug_assert!(lead_is_consistent(directory, &lead, None));
        (lead, None)
    }
}

fn set_names(rng: &mut SplitMix64, lead: &mut Lead, person: &Person) {
    lead.first_name = person.first_name.as_deref().map(|n| messy_name(rng, n));
    lead.last_name = person.last_name.as_deref().map(|n| messy_name(rng, n));
}

fn messy_name(rng: &mut SplitMix64, name: &str) -> String {
    match rng.index(12) {
        0 => format!(" {name}"),
        1 => format!("{name} "),
        2 => name.to_uppercase(),
        3 => name.to_lowercase(),
        _ => name.to_string(),
    }
}

fn messy_company(rng: &mut SplitMix64, name: &str) -> String {
    match rng.index(10) {
        0 => format!("{name} "),
        1 => name.to_uppercase(),
        _ => name.to_string(),
    }
}

fn messy_email(rng: &mut SplitMix64, email: &str) -> String {
    match rng.index(8) {
        0 | 1 => email.to_uppercase(),
        2 => {
            // `Eva.Kiegler@Intercom.com`: each word capitalised, as people type them.
            let mut out = String::with_capacity(email.len());
            let mut capital = true;
            for c in email.chars() {
                if capital {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                capital = matches!(c, '.' | '@' | '_');
            }
            out
        }
        3 => format!(" {email} "),
        _ => email.to_string(),
    }
}

/// The URL of a LinkedIn page (`https://www.linkedin.com/in/x` or `/company/x`), in one of
/// the shapes people paste.
fn messy_linkedin(rng: &mut SplitMix64, url: &str) -> String {
    let path = url
        .split_once("linkedin.com")
        .map_or(url, |(_, path)| path)
        .trim_end_matches('/');
    match rng.index(8) {
        0 => format!("https://www.linkedin.com{path}/"),
        1 => format!("linkedin.com{path}"),
        2 => format!("www.linkedin.com{path}/"),
        3 => format!("http://linkedin.com{path}"),
        4 => format!(" https://www.linkedin.com{path} "),
        5 => format!("https://uk.linkedin.com{path}/"),
        6 => format!("https://www.linkedin.com{path}/about/"),
        _ => format!("https://www.linkedin.com{path}"),
    }
}

fn messy_domain(rng: &mut SplitMix64, domain: &str) -> String {
    match rng.index(7) {
        0 => format!("https://www.{domain}"),
        1 => format!("www.{domain}"),
        2 => format!("https://{domain}/"),
        3 => domain.to_uppercase(),
        4 => format!("http://www.{domain}/"),
        5 => format!(" {domain}"),
        _ => domain.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

fn write_csv(path: &Path, batch: &RecordBatch) -> Result<(), GeneratorError> {
    let io = |source| GeneratorError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::create(path).map_err(io)?;
    let mut writer = WriterBuilder::new()
        .with_header(true)
        .build(BufWriter::new(file));
    writer
        .write(batch)
        .map_err(|source| GeneratorError::Arrow {
            path: path.to_path_buf(),
            source,
        })?;
    writer.into_inner().flush().map_err(io)
}

fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<(), GeneratorError> {
    let file = File::create(path).map_err(|source| GeneratorError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let parquet = |source| GeneratorError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).map_err(parquet)?;
    writer.write(batch).map_err(parquet)?;
    writer.close().map_err(parquet)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::datapoints::{Datapoint, canonical_domain, normalize};

    fn default_directory() -> Directory {
        generate_directory(&GeneratorConfig::default())
    }

    fn directory_json(directory: &Directory) -> String {
        serde_json::to_string(&(directory.companies(), directory.people())).unwrap()
    }

    fn record(fields: &[(Datapoint, &str)]) -> Datapoints {
        let mut datapoints = Datapoints::default();
        for (datapoint, value) in fields {
            datapoints.set(*datapoint, Some(value.to_string()));
        }
        datapoints
    }

    fn found<'a>(directory: &'a Directory, datapoints: &Datapoints) -> &'a Person {
        match directory.find(datapoints) {
            Lookup::Found(i) => directory.person(i),
            other => panic!("{datapoints:?}: {other:?}"),
        }
    }

    fn verified_email(person: &Person) -> bool {
        person.email.as_ref().and_then(|e| e.status.as_deref()) == Some("VERIFIED")
    }

    fn has_mobile(person: &Person) -> bool {
        person.mobile.as_ref().and_then(|m| m.status.as_deref()) == Some("VERIFIED")
    }

    #[test]
    fn the_same_seed_gives_the_same_data_and_another_seed_other_data() {
        let config = GeneratorConfig::default();
        let a = generate_directory(&config);
        let b = generate_directory(&config);
        assert_eq!(directory_json(&a), directory_json(&b));
        assert_eq!(generate_leads(&a, 42, 120), generate_leads(&b, 42, 120));

        let other = generate_directory(&GeneratorConfig { seed: 43, ..config });
        assert_ne!(directory_json(&a), directory_json(&other));
        assert_ne!(generate_leads(&a, 42, 120), generate_leads(&a, 43, 120));
    }

    /// Every documented property of the person and company objects, as JSON paths.
    const PERSON_PATHS: &[&str] = &[
        "person_id",
        "first_name",
        "last_name",
        "full_name",
        "linkedin_url",
        "headline",
        "current_job_title",
        "current_job_key",
        "linkedin_member_id",
        "last_job_change_detected_at",
        "skills",
        "email",
        "email.status",
        "email.revealed",
        "email.email",
        "email.verification_method",
        "email.email_mx_provider",
        "mobile",
        "mobile.status",
        "mobile.revealed",
        "mobile.mobile",
        "mobile.mobile_national",
        "mobile.mobile_international",
        "mobile.mobile_country",
        "mobile.mobile_country_code",
        "location",
        "location.country",
        "location.country_code",
        "location.state",
        "location.city",
        "location.time_zone",
        "location.time_zone_offset",
        "job_history",
        "job_history[].title",
        "job_history[].company_name",
        "job_history[].logo_url",
        "job_history[].current",
        "job_history[].start_year",
        "job_history[].start_month",
        "job_history[].end_year",
        "job_history[].end_month",
        "job_history[].duration_in_months",
        "job_history[].departments",
        "job_history[].seniority",
        "job_history[].company_id",
        "job_history[].job_key",
    ];

    const COMPANY_PATHS: &[&str] = &[
        "company_id",
        "name",
        "website",
        "domain",
        "description",
        "description_seo",
        "description_ai",
        "type",
        "industry",
        "employee_range",
        "linkedin_url",
        "twitter_url",
        "facebook_url",
        "instagram_url",
        "youtube_url",
        "crunchbase_url",
        "linkedin_id",
        "revenue_range_printed",
        "logo_url",
        "employee_count",
        "employee_count_on_prospeo",
        "founded",
        "other_websites",
        "sic_codes",
        "naics_codes",
        "keywords",
        "location.country",
        "location.country_code",
        "location.state",
        "location.city",
        "location.raw_address",
        "email_tech.domain",
        "email_tech.mx_provider",
        "email_tech.catch_all_domain",
        "phone_hq.phone_hq",
        "phone_hq.phone_hq_national",
        "phone_hq.phone_hq_international",
        "phone_hq.phone_hq_country",
        "phone_hq.phone_hq_country_code",
        "revenue_range.min",
        "revenue_range.max",
        "attributes.is_b2b",
        "attributes.has_demo",
        "attributes.has_free_trial",
        "attributes.has_downloadable",
        "attributes.has_mobile_apps",
        "attributes.has_online_reviews",
        "attributes.has_pricing",
        "funding.count",
        "funding.total_funding",
        "funding.total_funding_printed",
        "funding.latest_funding_date",
        "funding.latest_funding_stage",
        "funding.funding_events",
        "funding.funding_events[].amount",
        "funding.funding_events[].amount_printed",
        "funding.funding_events[].raised_at",
        "funding.funding_events[].stage",
        "funding.funding_events[].link",
        "technology.count",
        "technology.technology_names",
        "technology.technology_list[].name",
        "technology.technology_list[].category",
        "job_postings.active_count",
        "job_postings.active_titles",
    ];

    /// The paths of every non-null, non-empty value under `value`.
    fn populated_paths(value: &Value, prefix: &str, paths: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    if child.is_null() || child.as_array().is_some_and(|a| a.is_empty()) {
                        continue;
                    }
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    populated_paths(child, &path, paths);
                    paths.insert(path);
                }
            }
            Value::Array(items) => {
                for item in items {
                    populated_paths(item, &format!("{prefix}[]"), paths);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn every_documented_field_has_values_somewhere() {
        let directory = default_directory();
        let mut person_paths = BTreeSet::new();
        for person in directory.people() {
            populated_paths(
                &serde_json::to_value(person).unwrap(),
                "",
                &mut person_paths,
            );
        }
        let mut company_paths = BTreeSet::new();
        for company in directory.companies() {
            populated_paths(
                &serde_json::to_value(company).unwrap(),
                "",
                &mut company_paths,
            );
        }
        let missing: Vec<_> = PERSON_PATHS
            .iter()
            .filter(|p| !person_paths.contains(**p))
            .chain(
                COMPANY_PATHS
                    .iter()
                    .filter(|p| !company_paths.contains(**p)),
            )
            .collect();
        assert!(missing.is_empty(), "never populated: {missing:?}");
    }

    #[test]
    fn values_have_the_documented_shapes() {
        let directory = default_directory();
        let companies = directory.companies();
        let ids: BTreeSet<_> = companies.iter().map(|c| c.company_id.clone()).collect();
        assert_eq!(ids.len(), companies.len());
        for company in companies {
            let id = company.company_id.as_deref().unwrap();
            assert!(
                id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "{id}"
            );
            let domain = company.domain.as_deref().unwrap();
            assert_eq!(
                company.website.as_deref(),
                Some(&*format!("https://www.{domain}"))
            );
            if let Some(funding) = &company.funding {
                for event in funding.funding_events.as_deref().unwrap() {
                    let at = event.raised_at.as_deref().unwrap();
                    assert!(at.len() == 19 && at.ends_with("T00:00:00"), "{at}");
                }
            }
            if let Some(technology) = &company.technology {
                let listed = technology.technology_list.as_ref().unwrap().len() as i64;
                assert!(technology.count.unwrap() >= listed);
            }
        }
        let big_revenue = companies
            .iter()
            .filter_map(|c| c.revenue_range.as_ref())
            .any(|r| r.max.unwrap() >= 1_000_000_000 && r.max.unwrap() <= 10_000_000_000);
        assert!(big_revenue, "no company with revenue in the billions");
        let funded = companies.iter().filter(|c| c.funding.is_some()).count();
        assert!(
            (10..=30).contains(&funded),
            "{funded} of 40 companies funded"
        );

        let mut emails = BTreeSet::new();
        for person in directory.people() {
            let id = person.person_id.as_deref().unwrap();
            assert!(
                id.len() == 21 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "{id}"
            );
            let jobs = person.job_history.as_deref().unwrap();
            assert!((1..=4).contains(&jobs.len()));
            let current: Vec<_> = jobs.iter().filter(|j| j.current == Some(true)).collect();
            assert_eq!(current.len(), 1);
            let company = directory.company_of(person).unwrap();
            assert_eq!(current[0].company_name, company.name);
            assert!(
                jobs.iter()
                    .filter(|j| j.current != Some(true))
                    .all(|j| j.end_year.is_some())
            );
            if let Some(at) = person.last_job_change_detected_at.as_deref() {
                assert!(at.len() == 24 && at.ends_with('Z'), "{at}");
            }
            if let Some(email) = person.email.as_ref().and_then(|e| e.email.as_deref()) {
                assert!(emails.insert(email.to_string()), "{email} twice");
                assert!(email.ends_with(company.domain.as_deref().unwrap()));
            }
            if has_mobile(person) {
                let mobile = person.mobile.as_ref().unwrap().mobile.as_deref().unwrap();
                assert!(mobile.starts_with('+') && mobile[1..].bytes().all(|b| b.is_ascii_digit()));
            } else {
                assert_eq!(person.mobile.as_ref().unwrap().mobile, None);
            }
        }
    }

    #[test]
    fn about_a_third_have_a_mobile_and_three_quarters_a_verified_email() {
        let directory = generate_directory(&GeneratorConfig {
            seed: 9,
            companies: 60,
            people: 3_000,
        });
        let n = directory.len() as f64;
        let mobiles = directory.people().iter().filter(|p| has_mobile(p)).count() as f64;
        let emails = directory
            .people()
            .iter()
            .filter(|p| verified_email(p))
            .count() as f64;
        assert!((0.28..0.39).contains(&(mobiles / n)), "{mobiles} mobiles");
        assert!((0.70..0.80).contains(&(emails / n)), "{emails} emails");
        for person in directory.people().iter().filter(|p| !verified_email(p)) {
            let email = person.email.as_ref().unwrap();
            assert_eq!(email.status.as_deref(), Some("UNAVAILABLE"));
            assert_eq!((email.revealed, &email.email), (Some(false), &None));
        }
    }

    #[test]
    fn the_vendor_page_example_request_behaves_as_on_the_page() {
        use Datapoint::*;
        let directory = default_directory();

        let eva = found(
            &directory,
            &record(&[(FullName, "Eva Kiegler"), (CompanyWebsite, "intercom.com")]),
        );
        assert!(verified_email(eva) && has_mobile(eva));
        assert_eq!(
            directory.company_of(eva).unwrap().domain.as_deref(),
            Some("intercom.com")
        );

        let jonah = record(&[
            (FirstName, "Jonah"),
            (LastName, "Stones"),
            (LinkedinUrl, "https://www.linkedin.com/in/jonah-stones"),
            (CompanyName, "Deloitte"),
            (CompanyWebsite, "deloitte.com"),
            (
                CompanyLinkedinUrl,
                "https://www.linkedin.com/company/deloitte",
            ),
        ]);
        assert_eq!(directory.find(&jonah), Lookup::NotFound);
        let micah = record(&[(LinkedinUrl, "https://www.linkedin.com/in/micah-sanders")]);
        assert_eq!(directory.find(&micah), Lookup::NotFound);
        assert!(
            !record(&[(FullName, "Brandon Stering")])
                .normalized()
                .meets_minimum()
        );

        let nicolas = found(&directory, &record(&[(Email, "nicolas.b@kpmg.com")]));
        assert!(verified_email(nicolas) && !has_mobile(nicolas));
        assert!(nicolas.first_name.as_deref() == Some("Nicolas"));
        assert!(nicolas.last_name.as_deref().unwrap().starts_with('B'));
        assert_eq!(
            directory.company_of(nicolas).unwrap().domain.as_deref(),
            Some("kpmg.com")
        );

        let nicole = found(
            &directory,
            &record(&[
                (FullName, "Nicole Wonda"),
                (CompanyLinkedinUrl, "https://www.linkedin.com/company/young"),
            ]),
        );
        assert!(verified_email(nicole) && has_mobile(nicole));

        let seventh = found(&directory, &record(&[(PersonId, "6f564548455488874f48e")]));
        assert!(verified_email(seventh));

        for person in directory.people() {
            assert_ne!(person.full_name.as_deref(), Some("Jonah Stones"));
            assert_ne!(
                person.linkedin_url.as_deref(),
                Some("https://www.linkedin.com/in/micah-sanders")
            );
        }
        // The examples come first, whatever the size asked for.
        let tiny = generate_directory(&GeneratorConfig {
            seed: 1,
            companies: 0,
            people: 0,
        });
        assert_eq!(
            (tiny.len(), tiny.companies().len()),
            (FIXED_PEOPLE, FIXED_COMPANIES)
        );
        assert_eq!(tiny.person(0).full_name.as_deref(), Some("Eva Kiegler"));
    }

    #[test]
    fn same_name_companies_make_name_and_company_name_ambiguous_but_not_name_and_website() {
        use Datapoint::*;
        let directory = default_directory();
        let names: Vec<_> = directory
            .companies()
            .iter()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(names[4], names[5]);
        assert_eq!(names[6], names[7]);
        assert_ne!(
            directory.companies()[4].domain,
            directory.companies()[5].domain
        );

        let mut ambiguous = 0;
        for person in directory.people() {
            let company = directory.company_of(person).unwrap();
            let full_name = person.full_name.as_deref().unwrap();
            let by_name = record(&[
                (FullName, full_name),
                (CompanyName, company.name.as_deref().unwrap()),
            ]);
            if directory.find(&by_name) == Lookup::Ambiguous {
                ambiguous += 1;
                let by_site = record(&[
                    (FullName, full_name),
                    (CompanyWebsite, company.domain.as_deref().unwrap()),
                ]);
                assert!(
                    matches!(directory.find(&by_site), Lookup::Found(_)),
                    "{full_name}"
                );
            }
        }
        assert!(
            ambiguous >= 4,
            "{ambiguous} ambiguous name + company name lookups"
        );
    }

    /// Whether the person found agrees with every value the lead carries.
    fn agrees(directory: &Directory, lead: &Lead, target: usize) -> bool {
        let query = lead_datapoints(lead).normalized();
        let person = directory.person(target);
        let company = directory.company_of(person).unwrap();
        let same = |asked: &Option<String>, known: Option<String>| {
            asked.is_none()
                || asked.as_ref().map(|a| a.to_lowercase()) == known.map(|k| k.to_lowercase())
        };
        let email = person.email.as_ref().and_then(|e| e.email.clone());
        same(&query.first_name, person.first_name.clone())
            && same(&query.last_name, person.last_name.clone())
            && same(&query.email, email)
            && same(
                &query.linkedin_url,
                person
                    .linkedin_url
                    .as_deref()
                    .and_then(|u| normalize(Datapoint::LinkedinUrl, u)),
            )
            && same(&query.person_id, person.person_id.clone())
            && same(&query.company_name, company.name.clone())
            && same(
                &query.company_website,
                company.domain.as_deref().and_then(canonical_domain),
            )
            && same(
                &query.company_linkedin_url,
                company
                    .linkedin_url
                    .as_deref()
                    .and_then(|u| normalize(Datapoint::CompanyLinkedinUrl, u)),
            )
    }

    #[test]
    fn every_lead_behaves_as_its_kind_says() {
        let directory = default_directory();
        let rows = generate_targeted_leads(&directory, 42, 120);
        assert_eq!(rows.len(), 120);
        let kinds: Vec<_> = rows.iter().map(|(l, _)| l.expected).collect();
        for kind in ALL_KINDS {
            assert!(kinds.contains(&kind), "no {kind:?} row");
        }
        let count = |kind: LeadKind| kinds.iter().filter(|k| **k == kind).count();
        assert!((5..=20).contains(&count(LeadKind::Unknown)));
        assert!((4..=16).contains(&count(LeadKind::Invalid)));
        assert!((4..=16).contains(&count(LeadKind::Duplicate)));

        let mut seen: Vec<(usize, &Lead)> = Vec::new();
        for (lead, target) in &rows {
            assert!(lead_is_consistent(&directory, lead, *target), "{lead:?}");
            let datapoints = lead_datapoints(lead);
            match lead.expected {
                LeadKind::Invalid => assert!(!datapoints.normalized().meets_minimum(), "{lead:?}"),
                LeadKind::Unknown => {
                    assert_eq!(directory.find(&datapoints), Lookup::NotFound, "{lead:?}")
                }
                kind => {
                    let target = target.unwrap();
                    assert_eq!(
                        directory.find(&datapoints),
                        Lookup::Found(target),
                        "{lead:?}"
                    );
                    assert!(agrees(&directory, lead, target), "{lead:?}");
                    let earlier: Vec<_> = seen.iter().filter(|(t, _)| *t == target).collect();
                    if kind == LeadKind::Duplicate {
                        assert!(!earlier.is_empty(), "duplicate of nobody: {lead:?}");
                        assert!(earlier.iter().all(|(_, e)| e.values() != lead.values()));
                    } else {
                        assert!(earlier.is_empty(), "a second row for one person: {lead:?}");
                        assert_eq!(datapoints.normalized().match_route(), kind.route());
                    }
                    seen.push((target, lead));
                }
            }
        }
        let ids: BTreeSet<_> = rows.iter().map(|(l, _)| l.lead_id).collect();
        assert_eq!(ids.len(), rows.len());
        let american = rows
            .iter()
            .filter(|(l, _)| l.country.as_deref() == Some("United States"));
        assert!(american.count() >= 10);
        // Messy on purpose: at least some values need normalising.
        let messy = rows
            .iter()
            .filter(|(l, _)| lead_datapoints(l).normalized() != lead_datapoints(l));
        assert!(messy.count() >= 30);
        assert_eq!(
            generate_leads(&directory, 42, 120),
            rows.into_iter().map(|(l, _)| l).collect::<Vec<_>>()
        );
    }

    #[test]
    fn leads_over_a_tiny_directory_still_hold() {
        let directory = generate_directory(&GeneratorConfig {
            seed: 5,
            companies: 0,
            people: 0,
        });
        let rows = generate_targeted_leads(&directory, 5, 60);
        assert_eq!(rows.len(), 60);
        for (lead, target) in &rows {
            assert!(lead_is_consistent(&directory, lead, *target), "{lead:?}");
        }
        assert!(generate_leads(&directory, 5, 0).is_empty());
    }

    #[test]
    fn sample_data_is_written_and_reads_back() {
        let out = tempfile::tempdir().unwrap();
        let sample = SampleData::default();
        let directory = write_sample_data(out.path(), &sample).unwrap();
        for file in [
            "directory/companies.jsonl",
            "directory/people.jsonl",
            "leads.csv",
            "leads.parquet",
            "accounts.csv",
        ] {
            assert!(out.path().join(file).is_file(), "{file} missing");
        }
        // The committed sample files are what the generator writes today.
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data");
        for file in ["leads.csv", "accounts.csv"] {
            assert_eq!(
                std::fs::read_to_string(out.path().join(file)).unwrap(),
                std::fs::read_to_string(committed.join(file)).unwrap(),
                "sample-data/{file} is stale: run `prospeo sandbox generate --out sample-data`"
            );
        }
        let csv = std::fs::read_to_string(out.path().join("leads.csv")).unwrap();
        assert_eq!(
            csv.lines().next(),
            Some(
                "lead_id,First Name,Last Name,Email,LinkedIn URL,Company,Company Domain,Company LinkedIn,Prospeo ID,Country"
            )
        );
        let loaded = Directory::load(&out.path().join("directory")).unwrap();
        assert_eq!(loaded.len(), directory.len());
        assert_eq!(directory_json(&loaded), directory_json(&directory));

        let file = File::open(out.path().join("leads.parquet")).unwrap();
        let reader =
            datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                file,
            )
            .unwrap()
            .build()
            .unwrap();
        let rows: usize = reader.map(|batch| batch.unwrap().num_rows()).sum();
        assert_eq!(rows, sample.lead_rows);
        let batch = leads_batch(&generate_leads(
            &directory,
            sample.directory.seed,
            sample.lead_rows,
        ));
        let headers: Vec<_> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(headers, LEAD_HEADERS);
    }

    #[test]
    fn a_hundred_thousand_people_generate() {
        let config = GeneratorConfig {
            seed: 3,
            companies: 2_000,
            people: 100_000,
        };
        let directory = generate_directory(&config);
        assert_eq!(directory.len(), 100_000);
        assert_eq!(directory.companies().len(), 2_000);
    }

    /// A million people: linear, but slow in a debug build. `cargo test --release -- --ignored`.
    #[test]
    #[ignore]
    fn a_million_people_generate() {
        let config = GeneratorConfig {
            seed: 3,
            companies: 40,
            people: 1_000_000,
        };
        let directory = generate_directory(&config);
        assert_eq!(directory.len(), 1_000_000);
        let rows = generate_targeted_leads(&directory, 3, 500);
        for (lead, target) in &rows {
            assert!(lead_is_consistent(&directory, lead, *target), "{lead:?}");
        }
    }
}

//! An account export for Bulk Enrich Company: rows of the directory's companies with the
//! headers of a HubSpot companies export, written as users' files are (a website with its
//! scheme and path, a LinkedIn page with a trailing slash, a name alone, companies the vendor
//! does not know, rows with nothing to match on, the same company twice).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};

use crate::datapoints::{Datapoint, Datapoints, normalize};
use crate::rng::SplitMix64;
use crate::sandbox::directory::Directory;

/// The headers of the account file, as a HubSpot companies export writes them. "Record ID" is
/// HubSpot's own id and "Phone Number" and "Industry" are not datapoints: none of them maps.
pub const ACCOUNT_HEADERS: [&str; 6] = [
    "Record ID",
    "Name",
    "Company Domain Name",
    "LinkedIn Company Page",
    "Phone Number",
    "Industry",
];

/// The stream of the account rows, apart from the directory's and the leads'.
const ACCOUNT_STREAM: u64 = 0xACC0_0175;

/// What an account row should come to, by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    /// A directory company, by its website (written with a scheme and a path).
    ByWebsite,
    /// A directory company, by its LinkedIn page (and its name).
    ByLinkedin,
    /// A directory company by its name alone: a match when no other company has the name
    /// (the vendor warns such matches may be wrong).
    ByNameOnly,
    /// A company the directory does not have.
    Unknown,
    /// A row with nothing to match on (a phone number and an industry only).
    Nothing,
    /// The same company as an earlier row, written another way.
    Duplicate,
}

/// One row of the account file.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    /// The CRM's id of the row.
    pub record_id: i64,
    /// `Name`.
    pub name: Option<String>,
    /// `Company Domain Name`.
    pub domain: Option<String>,
    /// `LinkedIn Company Page`.
    pub linkedin: Option<String>,
    /// `Phone Number`.
    pub phone: Option<String>,
    /// `Industry`.
    pub industry: Option<String>,
    /// What the row was made to be.
    pub kind: AccountKind,
    /// The directory company the row names, when it names one uniquely.
    pub company: Option<usize>,
}

impl Account {
    /// The row's datapoints, unnormalised.
    pub fn datapoints(&self) -> Datapoints {
        Datapoints {
            company_name: self.name.clone(),
            company_website: self.domain.clone(),
            company_linkedin_url: self.linkedin.clone(),
            ..Datapoints::default()
        }
    }
}

/// `rows` account rows over the directory's companies, deterministic in `seed`.
pub fn generate_accounts(directory: &Directory, seed: u64, rows: usize) -> Vec<Account> {
    let companies = directory.companies();
    let mut rng = SplitMix64::new(seed ^ ACCOUNT_STREAM);
    let mut names: HashMap<String, usize> = HashMap::new();
    for company in companies {
        if let Some(name) = company.name.as_deref().and_then(fold_name) {
            *names.entry(name).or_default() += 1;
        }
    }
    let mut order: Vec<usize> = (0..companies.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.index(i + 1));
    }
    let mut next = order.into_iter();
    let mut out: Vec<Account> = Vec::with_capacity(rows);
    let mut record_id = 7_000_000 + rng.range(1, 900);
    for row in 0..rows {
        let roll = rng.next_f64();
        let kind = match roll {
            _ if row == 0 => AccountKind::ByWebsite,
            r if r < 0.40 => AccountKind::ByWebsite,
            r if r < 0.60 => AccountKind::ByLinkedin,
            r if r < 0.72 => AccountKind::ByNameOnly,
            r if r < 0.84 => AccountKind::Unknown,
            r if r < 0.92 => AccountKind::Nothing,
            _ => AccountKind::Duplicate,
        };
        let industry = Some(rng.pick(&INDUSTRIES).to_string());
        let phone = rng
            .chance(0.5)
            .then(|| format!("+1 555 01{:02}", rng.range(0, 99)));
        let blank = |kind| Account {
            record_id,
            name: None,
            domain: None,
            linkedin: None,
            phone: phone.clone(),
            industry: industry.clone(),
            kind,
            company: None,
        };
        let known = |kind, next: &mut dyn Iterator<Item = usize>| {
            let index = next.next()?;
            let company = &companies[index];
            let mut account = blank(kind);
            account.company = Some(index);
            match kind {
                AccountKind::ByWebsite => {
                    account.name = company.name.clone();
                    account.domain = company
                        .website
                        .as_deref()
                        .or(company.domain.as_deref())
                        .map(|w| format!("{}/about", w.trim_end_matches('/')));
                }
                AccountKind::ByLinkedin => {
                    account.name = company.name.clone();
                    account.linkedin = company.linkedin_url.as_deref().map(|u| format!("{u}/"));
                }
                _ => {
                    account.name = company.name.clone();
                    let unique = company
                        .name
                        .as_deref()
                        .and_then(fold_name)
                        .is_some_and(|n| names.get(&n) == Some(&1));
                    if !unique {
                        account.company = None;
                    }
                }
            }
            Some(account)
        };
        let account = match kind {
            AccountKind::ByWebsite | AccountKind::ByLinkedin | AccountKind::ByNameOnly => {
                known(kind, &mut next).unwrap_or_else(|| unknown(blank(AccountKind::Unknown), row))
            }
            AccountKind::Unknown => unknown(blank(kind), row),
            AccountKind::Nothing => blank(kind),
            AccountKind::Duplicate => {
                let earlier = out.iter().find(|a| {
                    a.kind == AccountKind::ByWebsite && rng.chance(0.5) && a.company.is_some()
                });
                match earlier.or_else(|| out.iter().find(|a| a.kind == AccountKind::ByWebsite)) {
                    Some(earlier) => Account {
                        // The same company, its domain written bare and upper-case.
                        domain: earlier.domain.as_deref().and_then(|d| {
                            normalize(Datapoint::CompanyWebsite, d).map(|d| d.to_uppercase())
                        }),
                        name: earlier.name.clone(),
                        company: earlier.company,
                        ..blank(kind)
                    },
                    None => unknown(blank(AccountKind::Unknown), row),
                }
            }
        };
        out.push(account);
        record_id += rng.range(1, 6);
    }
    out
}

/// A company nobody knows: a made-up name and domain.
fn unknown(mut account: Account, row: usize) -> Account {
    account.kind = AccountKind::Unknown;
    account.name = Some(format!("Nowhere Holdings {row}"));
    account.domain = Some(format!("https://nowhere-holdings-{row}.example"));
    account.company = None;
    account
}

fn fold_name(name: &str) -> Option<String> {
    normalize(Datapoint::CompanyName, name).map(|n| n.to_lowercase())
}

const INDUSTRIES: [&str; 6] = [
    "Computer Software",
    "Financial Services",
    "Retail",
    "Hospital & Health Care",
    "Logistics and Supply Chain",
    "Marketing and Advertising",
];

/// The accounts as an Arrow batch with [`ACCOUNT_HEADERS`] (`Record ID` Int64, the others
/// Utf8; all nullable, as a CSV reader would infer them).
pub fn accounts_batch(accounts: &[Account]) -> RecordBatch {
    let schema = super::export_schema(&ACCOUNT_HEADERS);
    let text = |get: fn(&Account) -> &Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(
            accounts.iter().map(|a| get(a).clone()).collect::<Vec<_>>(),
        ))
    };
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from(
                accounts.iter().map(|a| a.record_id).collect::<Vec<_>>(),
            )),
            text(|a| &a.name),
            text(|a| &a.domain),
            text(|a| &a.linkedin),
            text(|a| &a.phone),
            text(|a| &a.industry),
        ],
    )
    .expect("the account columns match their schema")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::directory::Lookup;
    use crate::sandbox::generator::{GeneratorConfig, generate_directory};
    use crate::vendor::endpoint::Endpoint;

    #[test]
    fn every_row_comes_to_what_it_was_made_to_be() {
        let directory = generate_directory(&GeneratorConfig::default());
        let accounts = generate_accounts(&directory, 42, 400);
        assert_eq!(
            accounts,
            generate_accounts(&directory, 42, 400),
            "deterministic"
        );
        for kind in [
            AccountKind::ByWebsite,
            AccountKind::ByLinkedin,
            AccountKind::ByNameOnly,
            AccountKind::Unknown,
            AccountKind::Nothing,
            AccountKind::Duplicate,
        ] {
            assert!(accounts.iter().any(|a| a.kind == kind), "{kind:?}");
        }
        for account in &accounts {
            let datapoints = account.datapoints();
            let prepared = Endpoint::BulkEnrichCompany.prepare(&datapoints);
            if account.kind == AccountKind::Nothing {
                assert_eq!(prepared, None, "{account:?}");
                continue;
            }
            assert!(prepared.is_some(), "{account:?}");
            let expected = match account.company {
                Some(index) => Lookup::Found(index),
                None => Lookup::NotFound,
            };
            let found = match directory.find_company(&datapoints) {
                Lookup::Ambiguous => Lookup::NotFound,
                other => other,
            };
            assert_eq!(found, expected, "{account:?}");
            assert_eq!(
                datapoints.is_company_name_only(),
                account.kind == AccountKind::ByNameOnly,
                "{account:?}"
            );
        }
    }
}

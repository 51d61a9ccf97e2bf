//! The sandbox's directory of people and companies, and how a record is matched against it.
//!
//! Matching uses the normalisation of [`crate::datapoints`], so the sandbox and the client agree
//! on what "the same person" is. Routes are tried in the order person_id, LinkedIn URL, email,
//! name + company; the first route that finds exactly one person wins, and a route that finds
//! two people (an ambiguous match) is never taken.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::datapoints::{Datapoint, Datapoints, canonical_domain, normalize};
use crate::vendor::wire::{Company, Person};

/// File names of a directory saved on disk, one JSON object a line.
pub const COMPANIES_FILE: &str = "companies.jsonl";
/// See [`COMPANIES_FILE`].
pub const PEOPLE_FILE: &str = "people.jsonl";

/// Why a directory could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// A file could not be read or written.
    #[error("cannot read or write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A line of a directory file is not a JSON object of the expected shape.
    #[error("{path}, line {line}: not a valid JSON object: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What the JSON reader said.
        source: serde_json::Error,
    },
    /// The directory breaks a rule (a duplicate id, say).
    #[error("{0}")]
    Invalid(String),
}

/// The people and companies the sandbox knows, with the indexes it matches on.
#[derive(Debug, Default)]
pub struct Directory {
    people: Vec<Person>,
    companies: Vec<Company>,
    company_by_id: HashMap<String, usize>,
    by_person_id: HashMap<String, usize>,
    by_linkedin: HashMap<String, Vec<usize>>,
    by_email: HashMap<String, Vec<usize>>,
    by_name: HashMap<String, Vec<usize>>,
    /// Companies by normalised website domain, LinkedIn page and lower-case name.
    company_by_domain: HashMap<String, Vec<usize>>,
    company_by_linkedin: HashMap<String, Vec<usize>>,
    company_by_name: HashMap<String, Vec<usize>>,
}

/// The result of looking a record up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Exactly one person fits: their index.
    Found(usize),
    /// Nobody fits.
    NotFound,
    /// More than one person fits and no route told them apart.
    Ambiguous,
}

impl Directory {
    /// A directory over these companies and people. Every person's current company (the
    /// `job_history` entry with `current: true`) must be one of `companies`, and ids are unique.
    pub fn new(companies: Vec<Company>, people: Vec<Person>) -> Result<Self, DirectoryError> {
        let mut directory = Directory {
            people,
            companies,
            ..Default::default()
        };
        for (i, company) in directory.companies.iter().enumerate() {
            let id = company
                .company_id
                .clone()
                .ok_or_else(|| DirectoryError::Invalid(format!("company {i} has no company_id")))?;
            if directory.company_by_id.insert(id.clone(), i).is_some() {
                return Err(DirectoryError::Invalid(format!(
                    "company_id {id} appears twice"
                )));
            }
            let website = company.website.as_deref().or(company.domain.as_deref());
            let keys = [
                (
                    &mut directory.company_by_domain,
                    website.and_then(|w| normalize(Datapoint::CompanyWebsite, w)),
                ),
                (
                    &mut directory.company_by_linkedin,
                    company
                        .linkedin_url
                        .as_deref()
                        .and_then(|u| normalize(Datapoint::CompanyLinkedinUrl, u)),
                ),
                (
                    &mut directory.company_by_name,
                    company
                        .name
                        .as_deref()
                        .and_then(|n| normalize(Datapoint::CompanyName, n))
                        .map(|n| n.to_lowercase()),
                ),
            ];
            for (index, key) in keys {
                if let Some(key) = key {
                    index.entry(key).or_default().push(i);
                }
            }
        }
        for (i, person) in directory.people.iter().enumerate() {
            let id = person
                .person_id
                .clone()
                .ok_or_else(|| DirectoryError::Invalid(format!("person {i} has no person_id")))?;
            if directory.by_person_id.insert(id.clone(), i).is_some() {
                return Err(DirectoryError::Invalid(format!(
                    "person_id {id} appears twice"
                )));
            }
            if let Some(company_id) = current_company_id(person)
                && !directory.company_by_id.contains_key(company_id)
            {
                return Err(DirectoryError::Invalid(format!(
                    "person {id} works at company {company_id}, which is not in the directory"
                )));
            }
            if let Some(url) = person
                .linkedin_url
                .as_deref()
                .and_then(|u| normalize(Datapoint::LinkedinUrl, u))
            {
                directory.by_linkedin.entry(url).or_default().push(i);
            }
            if let Some(email) = person
                .email
                .as_ref()
                .and_then(|e| e.email.as_deref())
                .and_then(|e| normalize(Datapoint::Email, e))
            {
                directory.by_email.entry(email).or_default().push(i);
            }
            if let Some(name) = person_name_key(person) {
                directory.by_name.entry(name).or_default().push(i);
            }
        }
        Ok(directory)
    }

    /// Number of people.
    pub fn len(&self) -> usize {
        self.people.len()
    }

    /// Whether the directory has nobody in it.
    pub fn is_empty(&self) -> bool {
        self.people.is_empty()
    }

    /// All people, in directory order.
    pub fn people(&self) -> &[Person] {
        &self.people
    }

    /// All companies, in directory order.
    pub fn companies(&self) -> &[Company] {
        &self.companies
    }

    /// The person at `index`.
    pub fn person(&self, index: usize) -> &Person {
        &self.people[index]
    }

    /// The current company of a person, when they have one.
    pub fn company_of(&self, person: &Person) -> Option<&Company> {
        current_company_id(person)
            .and_then(|id| self.company_by_id.get(id))
            .map(|&i| &self.companies[i])
    }

    /// The company at `index`.
    pub fn company(&self, index: usize) -> &Company {
        &self.companies[index]
    }

    /// Finds the one company that `datapoints` describe (Bulk Enrich Company): by
    /// `company_id`, then the website's domain, then the LinkedIn page, then the name. Normalises
    /// them first.
    pub fn find_company(&self, datapoints: &Datapoints) -> Lookup {
        let query = datapoints.normalized();
        let name = query.company_name.as_deref().map(str::to_lowercase);
        let routes = [
            query
                .company_id
                .as_ref()
                .and_then(|id| self.company_by_id.get(id))
                .map(|&i| vec![i])
                .unwrap_or_default(),
            lookup(&self.company_by_domain, query.company_website.as_deref()),
            lookup(
                &self.company_by_linkedin,
                query.company_linkedin_url.as_deref(),
            ),
            lookup(&self.company_by_name, name.as_deref()),
        ];
        first_unique(routes.into_iter())
    }

    /// Finds the one person that `datapoints` describe. Normalises them first, so raw input
    /// values may be passed.
    pub fn find(&self, datapoints: &Datapoints) -> Lookup {
        let query = datapoints.normalized();
        let routes: [&dyn Fn() -> Vec<usize>; 4] = [
            &|| {
                query
                    .person_id
                    .as_ref()
                    .and_then(|id| self.by_person_id.get(id))
                    .map(|&i| vec![i])
                    .unwrap_or_default()
            },
            &|| lookup(&self.by_linkedin, query.linkedin_url.as_deref()),
            &|| lookup(&self.by_email, query.email.as_deref()),
            &|| self.find_by_name_and_company(&query),
        ];
        first_unique(routes.into_iter().map(|route| route()))
    }

    fn find_by_name_and_company(&self, query: &Datapoints) -> Vec<usize> {
        let name = match (&query.first_name, &query.last_name, &query.full_name) {
            (Some(first), Some(last), _) => format!("{first} {last}"),
            (_, _, Some(full)) => full.clone(),
            _ => return Vec::new(),
        };
        let candidates = lookup(&self.by_name, Some(&name.to_lowercase()));
        let website = query.company_website.as_deref();
        let linkedin = query.company_linkedin_url.as_deref();
        let company_name = query.company_name.as_deref().map(str::to_lowercase);
        // Website and company LinkedIn identify a company; its name only when nothing better
        // was given (the vendor advises against name-only matching for this reason).
        let strong = website.is_some() || linkedin.is_some();
        if !strong && company_name.is_none() {
            return Vec::new();
        }
        candidates
            .into_iter()
            .filter(|&i| {
                let Some(company) = self.company_of(&self.people[i]) else {
                    return false;
                };
                if strong {
                    let site_matches = website.is_some_and(|w| {
                        [company.domain.as_deref(), company.website.as_deref()]
                            .into_iter()
                            .flatten()
                            .filter_map(canonical_domain)
                            .any(|d| d == w)
                    });
                    let linkedin_matches = linkedin.is_some_and(|l| {
                        company
                            .linkedin_url
                            .as_deref()
                            .and_then(|u| normalize(Datapoint::CompanyLinkedinUrl, u))
                            .is_some_and(|u| u == l)
                    });
                    site_matches || linkedin_matches
                } else {
                    company
                        .name
                        .as_deref()
                        .and_then(|n| normalize(Datapoint::CompanyName, n))
                        .is_some_and(|n| Some(n.to_lowercase()) == company_name)
                }
            })
            .collect()
    }

    /// Loads a directory saved by [`Directory::save`].
    pub fn load(dir: &Path) -> Result<Self, DirectoryError> {
        let companies = read_jsonl(&dir.join(COMPANIES_FILE))?;
        let people = read_jsonl(&dir.join(PEOPLE_FILE))?;
        Directory::new(companies, people)
    }

    /// Writes the directory as two JSON-lines files in `dir`, creating it when needed.
    pub fn save(&self, dir: &Path) -> Result<(), DirectoryError> {
        std::fs::create_dir_all(dir).map_err(|source| DirectoryError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        write_jsonl(&dir.join(COMPANIES_FILE), &self.companies)?;
        write_jsonl(&dir.join(PEOPLE_FILE), &self.people)
    }
}

/// The `company_id` of the person's current job.
pub fn current_company_id(person: &Person) -> Option<&str> {
    person
        .job_history
        .as_ref()?
        .iter()
        .find(|job| job.current == Some(true))?
        .company_id
        .as_deref()
}

fn person_name_key(person: &Person) -> Option<String> {
    let name = match (&person.first_name, &person.last_name, &person.full_name) {
        (_, _, Some(full)) => full.clone(),
        (Some(first), Some(last), None) => format!("{first} {last}"),
        _ => return None,
    };
    normalize(Datapoint::FullName, &name).map(|n| n.to_lowercase())
}

/// The first route that finds exactly one entry, in order; `Ambiguous` when none does but one
/// found several. Routes are tried lazily: a later one runs only when the earlier ones failed.
fn first_unique(routes: impl Iterator<Item = Vec<usize>>) -> Lookup {
    let mut ambiguous = false;
    for found in routes {
        match found.as_slice() {
            [] => {}
            [one] => return Lookup::Found(*one),
            _ => ambiguous = true,
        }
    }
    if ambiguous {
        Lookup::Ambiguous
    } else {
        Lookup::NotFound
    }
}

fn lookup(index: &HashMap<String, Vec<usize>>, key: Option<&str>) -> Vec<usize> {
    key.and_then(|k| index.get(k)).cloned().unwrap_or_default()
}

fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, DirectoryError> {
    let file = File::open(path).map_err(|source| DirectoryError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| DirectoryError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line).map_err(|source| DirectoryError::Json {
                path: path.to_path_buf(),
                line: i + 1,
                source,
            })?,
        );
    }
    Ok(out)
}

fn write_jsonl<T: serde::Serialize>(path: &Path, items: &[T]) -> Result<(), DirectoryError> {
    let io = |source| DirectoryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut out = BufWriter::new(File::create(path).map_err(io)?);
    for item in items {
        serde_json::to_writer(&mut out, item).map_err(|e| io(e.into()))?;
        out.write_all(b"\n").map_err(io)?;
    }
    out.flush().map_err(io)
}

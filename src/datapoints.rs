//! The matching datapoints of the bulk enrich endpoints (the nine of Bulk Enrich Person, and
//! Bulk Enrich Company's `company_id` beside the three company fields they share), their
//! normalisation, and the vendor's minimum-requirement rules.
//!
//! The client and the sandbox both go through this module, so a value that the client treats
//! as "the same person" is the value the sandbox matches on (`reference/prospeo-api.md`,
//! "POST /bulk-enrich-person").

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One matching datapoint of a bulk-enrich record, named as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Datapoint {
    /// `first_name`
    FirstName,
    /// `last_name`
    LastName,
    /// `full_name`
    FullName,
    /// `linkedin_url`: the person's LinkedIn profile.
    LinkedinUrl,
    /// `email`: the person's work email.
    Email,
    /// `company_name`
    CompanyName,
    /// `company_website`
    CompanyWebsite,
    /// `company_linkedin_url`
    CompanyLinkedinUrl,
    /// `person_id`: an id from the vendor's `/search-person`.
    PersonId,
    /// `company_id`: the vendor's id of a company, from a company object returned earlier
    /// (Bulk Enrich Company only).
    CompanyId,
}

impl Datapoint {
    /// Every datapoint: the person endpoint's nine, then `company_id`.
    pub const ALL: [Datapoint; 10] = [
        Datapoint::FirstName,
        Datapoint::LastName,
        Datapoint::FullName,
        Datapoint::LinkedinUrl,
        Datapoint::Email,
        Datapoint::CompanyName,
        Datapoint::CompanyWebsite,
        Datapoint::CompanyLinkedinUrl,
        Datapoint::PersonId,
        Datapoint::CompanyId,
    ];

    /// The nine datapoints of a Bulk Enrich Person record, in the order of the vendor's page.
    pub const PERSON: [Datapoint; 9] = [
        Datapoint::FirstName,
        Datapoint::LastName,
        Datapoint::FullName,
        Datapoint::LinkedinUrl,
        Datapoint::Email,
        Datapoint::CompanyName,
        Datapoint::CompanyWebsite,
        Datapoint::CompanyLinkedinUrl,
        Datapoint::PersonId,
    ];

    /// The four datapoints of a Bulk Enrich Company record, in the order of the vendor's page.
    pub const COMPANY: [Datapoint; 4] = [
        Datapoint::CompanyName,
        Datapoint::CompanyWebsite,
        Datapoint::CompanyLinkedinUrl,
        Datapoint::CompanyId,
    ];

    /// The field name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Datapoint::FirstName => "first_name",
            Datapoint::LastName => "last_name",
            Datapoint::FullName => "full_name",
            Datapoint::LinkedinUrl => "linkedin_url",
            Datapoint::Email => "email",
            Datapoint::CompanyName => "company_name",
            Datapoint::CompanyWebsite => "company_website",
            Datapoint::CompanyLinkedinUrl => "company_linkedin_url",
            Datapoint::PersonId => "person_id",
            Datapoint::CompanyId => "company_id",
        }
    }

    /// Whether this datapoint identifies the person's company (the second half of the
    /// name-based minimum requirements).
    pub fn is_company_field(self) -> bool {
        matches!(
            self,
            Datapoint::CompanyName | Datapoint::CompanyWebsite | Datapoint::CompanyLinkedinUrl
        )
    }
}

impl fmt::Display for Datapoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a string that names no datapoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown datapoint `{0}`: expected one of first_name, last_name, full_name, linkedin_url, email, company_name, company_website, company_linkedin_url, person_id, company_id"
)]
pub struct UnknownDatapoint(pub String);

impl FromStr for Datapoint {
    type Err = UnknownDatapoint;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Datapoint::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownDatapoint(s.to_string()))
    }
}

/// The datapoints known for one person: the matching part of a bulk-enrich record.
///
/// Serialises to the wire field names, leaving absent values out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Datapoints {
    /// The person's first name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// The person's last name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// The person's full name (instead of first and last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_name: Option<String>,
    /// The person's LinkedIn profile URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linkedin_url: Option<String>,
    /// The person's work email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The name of the person's company.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_name: Option<String>,
    /// The website (or domain) of the person's company.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_website: Option<String>,
    /// The LinkedIn page of the person's company.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_linkedin_url: Option<String>,
    /// The vendor's id of the person (from an earlier answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person_id: Option<String>,
    /// The vendor's id of the company (from an earlier answer; Bulk Enrich Company only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_id: Option<String>,
}

/// Which of the vendor's minimum requirements a record meets (the first that applies, in the
/// order of the vendor's page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchRoute {
    /// first_name + last_name + a company field
    NameAndCompany,
    /// full_name + a company field
    FullNameAndCompany,
    /// linkedin_url
    LinkedinUrl,
    /// email
    Email,
    /// person_id
    PersonId,
}

impl Datapoints {
    /// The value of one datapoint.
    pub fn get(&self, datapoint: Datapoint) -> Option<&str> {
        self.slot(datapoint).as_deref()
    }

    /// Sets one datapoint (no normalisation: see [`Datapoints::normalized`]).
    pub fn set(&mut self, datapoint: Datapoint, value: Option<String>) {
        *self.slot_mut(datapoint) = value;
    }

    fn slot(&self, datapoint: Datapoint) -> &Option<String> {
        match datapoint {
            Datapoint::FirstName => &self.first_name,
            Datapoint::LastName => &self.last_name,
            Datapoint::FullName => &self.full_name,
            Datapoint::LinkedinUrl => &self.linkedin_url,
            Datapoint::Email => &self.email,
            Datapoint::CompanyName => &self.company_name,
            Datapoint::CompanyWebsite => &self.company_website,
            Datapoint::CompanyLinkedinUrl => &self.company_linkedin_url,
            Datapoint::PersonId => &self.person_id,
            Datapoint::CompanyId => &self.company_id,
        }
    }

    fn slot_mut(&mut self, datapoint: Datapoint) -> &mut Option<String> {
        match datapoint {
            Datapoint::FirstName => &mut self.first_name,
            Datapoint::LastName => &mut self.last_name,
            Datapoint::FullName => &mut self.full_name,
            Datapoint::LinkedinUrl => &mut self.linkedin_url,
            Datapoint::Email => &mut self.email,
            Datapoint::CompanyName => &mut self.company_name,
            Datapoint::CompanyWebsite => &mut self.company_website,
            Datapoint::CompanyLinkedinUrl => &mut self.company_linkedin_url,
            Datapoint::PersonId => &mut self.person_id,
            Datapoint::CompanyId => &mut self.company_id,
        }
    }

    /// The canonical form of these datapoints: what is sent to the API, what the sandbox
    /// matches on, and what identifies "the same person" for de-duplication and caching.
    ///
    /// Every value is trimmed and inner whitespace collapsed; an empty value is absent; emails
    /// are case-folded; LinkedIn URLs become `https://www.linkedin.com/in/<slug>` (or
    /// `/company/<slug>`); company websites become a bare lower-case domain.
    pub fn normalized(&self) -> Datapoints {
        let mut out = Datapoints::default();
        for datapoint in Datapoint::ALL {
            let value = self.get(datapoint).and_then(|v| normalize(datapoint, v));
            out.set(datapoint, value);
        }
        out
    }

    /// The minimum requirement this record meets, or `None` when the vendor would list it in
    /// `invalid_datapoints`. Expects normalised datapoints (an all-blank value counts as absent
    /// either way).
    pub fn match_route(&self) -> Option<MatchRoute> {
        let present = |d: Datapoint| self.get(d).is_some_and(|v| !v.trim().is_empty());
        let has_company = Datapoint::ALL
            .into_iter()
            .any(|d| d.is_company_field() && present(d));
        if present(Datapoint::FirstName) && present(Datapoint::LastName) && has_company {
            Some(MatchRoute::NameAndCompany)
        } else if present(Datapoint::FullName) && has_company {
            Some(MatchRoute::FullNameAndCompany)
        } else if present(Datapoint::LinkedinUrl) {
            Some(MatchRoute::LinkedinUrl)
        } else if present(Datapoint::Email) {
            Some(MatchRoute::Email)
        } else if present(Datapoint::PersonId) {
            Some(MatchRoute::PersonId)
        } else {
            None
        }
    }

    /// Whether the record meets the vendor's minimum requirement for matching a person.
    pub fn meets_minimum(&self) -> bool {
        self.match_route().is_some()
    }

    /// Whether the record meets Bulk Enrich Company's minimum: one of its four datapoints
    /// (reference, "POST /bulk-enrich-company"). Expects normalised datapoints.
    pub fn meets_company_minimum(&self) -> bool {
        Datapoint::COMPANY
            .into_iter()
            .any(|d| self.get(d).is_some())
    }

    /// Whether a company record carries its name and nothing else to match on: the vendor
    /// sends it, but warns that such matches may be wrong (many companies share a name).
    pub fn is_company_name_only(&self) -> bool {
        Datapoint::COMPANY
            .into_iter()
            .all(|d| (d == Datapoint::CompanyName) == self.get(d).is_some())
    }

    /// Whether no datapoint is present.
    pub fn is_empty(&self) -> bool {
        Datapoint::ALL.into_iter().all(|d| self.get(d).is_none())
    }
}

/// Normalises one value of one datapoint; `None` when nothing is left.
pub fn normalize(datapoint: Datapoint, value: &str) -> Option<String> {
    let collapsed = collapse_whitespace(value);
    if collapsed.is_empty() {
        return None;
    }
    let out = match datapoint {
        // An address without a local part and a dotted domain cannot match anyone: sending it
        // would spend quota for nothing.
        Datapoint::Email => {
            let email = collapsed.replace(' ', "").to_lowercase();
            let (local, domain) = email.rsplit_once('@')?;
            let dotted = domain.split('.').all(|label| !label.is_empty()) && domain.contains('.');
            if local.is_empty() || !dotted {
                return None;
            }
            email
        }
        Datapoint::LinkedinUrl => canonical_linkedin_url(&collapsed, "in").unwrap_or(collapsed),
        Datapoint::CompanyLinkedinUrl => {
            canonical_linkedin_url(&collapsed, "company").unwrap_or(collapsed)
        }
        Datapoint::CompanyWebsite => canonical_domain(&collapsed).unwrap_or(collapsed),
        _ => collapsed,
    };
    Some(out)
}

fn collapse_whitespace(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Strips scheme, user info, port, path, query and fragment; returns the lower-case host.
fn host_and_path(value: &str) -> (String, &str) {
    let without_scheme = value
        .split_once("://")
        .map_or(value, |(scheme, rest)| {
            if scheme.chars().all(|c| c.is_ascii_alphabetic()) {
                rest
            } else {
                value
            }
        })
        .trim_start_matches('/');
    let (authority, path) = match without_scheme.find(['/', '?', '#']) {
        Some(i) => (&without_scheme[..i], &without_scheme[i..]),
        None => (without_scheme, ""),
    };
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let host = host.split(':').next().unwrap_or(host);
    (host.trim_end_matches('.').to_ascii_lowercase(), path)
}

/// `https://www.Deloitte.com/about` → `deloitte.com`; `None` when no host can be found.
pub fn canonical_domain(value: &str) -> Option<String> {
    let (host, _) = host_and_path(value.trim());
    let host = host.strip_prefix("www.").unwrap_or(&host);
    if host.is_empty() || !host.contains('.') {
        return None;
    }
    Some(host.to_string())
}

/// `linkedin.com/in/X/`, `https://uk.linkedin.com/in/x?trk=1` → `https://www.linkedin.com/in/x`.
/// `kind` is `in` for people and `company` for companies. `None` when the value is not a
/// LinkedIn URL of that kind, in which case it is sent as given.
pub fn canonical_linkedin_url(value: &str, kind: &str) -> Option<String> {
    let (host, path) = host_and_path(value.trim());
    if host != "linkedin.com" && !host.ends_with(".linkedin.com") {
        return None;
    }
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let found_kind = segments.next()?;
    // LinkedIn also serves people at /pub/ and companies at /school/ and /showcase/; keep the
    // path kind as given when it is one of those, so distinct pages never collapse together.
    let accepted = match kind {
        "in" => ["in", "pub"].contains(&found_kind.to_ascii_lowercase().as_str()),
        _ => ["company", "school", "showcase"].contains(&found_kind.to_ascii_lowercase().as_str()),
    };
    if !accepted {
        return None;
    }
    let found_kind = found_kind.to_ascii_lowercase();
    // A legacy /pub/ address needs every segment: /pub/john-smith/1a/2b/3c and
    // /pub/john-smith/4d/5e/6f are two people. Elsewhere the slug alone names the page.
    let slug = if found_kind == "pub" {
        segments.collect::<Vec<_>>().join("/").to_lowercase()
    } else {
        segments.next()?.to_lowercase()
    };
    if slug.is_empty() {
        return None;
    }
    Some(format!("https://www.linkedin.com/{found_kind}/{slug}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &[(Datapoint, &str)]) -> Datapoints {
        let mut d = Datapoints::default();
        for (k, v) in fields {
            d.set(*k, Some(v.to_string()));
        }
        d.normalized()
    }

    /// The seven records of the vendor page's example request.
    fn vendor_example() -> Vec<Datapoints> {
        use Datapoint::*;
        vec![
            record(&[(FullName, "Eva Kiegler"), (CompanyWebsite, "intercom.com")]),
            record(&[
                (FirstName, "Jonah"),
                (LastName, "Stones"),
                (LinkedinUrl, "https://www.linkedin.com/in/jonah-stones"),
                (CompanyName, "Deloitte"),
                (CompanyWebsite, "deloitte.com"),
                (
                    CompanyLinkedinUrl,
                    "https://www.linkedin.com/company/deloitte",
                ),
            ]),
            record(&[(LinkedinUrl, "https://www.linkedin.com/in/micah-sanders")]),
            record(&[(FullName, "Brandon Stering")]),
            record(&[(Email, "nicolas.b@kpmg.com")]),
            record(&[
                (FullName, "Nicole Wonda"),
                (CompanyLinkedinUrl, "https://www.linkedin.com/company/young"),
            ]),
            record(&[(PersonId, "6f564548455488874f48e")]),
        ]
    }

    #[test]
    fn vendor_example_records_meet_the_minimum_except_record_4() {
        let routes: Vec<_> = vendor_example().iter().map(|d| d.match_route()).collect();
        assert_eq!(
            routes,
            vec![
                Some(MatchRoute::FullNameAndCompany),
                Some(MatchRoute::NameAndCompany),
                Some(MatchRoute::LinkedinUrl),
                None,
                Some(MatchRoute::Email),
                Some(MatchRoute::FullNameAndCompany),
                Some(MatchRoute::PersonId),
            ]
        );
    }

    #[test]
    fn edge_cases_of_the_minimum_requirement() {
        use Datapoint::*;
        // Whitespace-only values are absent.
        assert!(!record(&[(Email, "   "), (LinkedinUrl, "\t")]).meets_minimum());
        assert!(record(&[(Email, "   ")]).is_empty());
        // A first name needs a last name, even with a company.
        assert!(!record(&[(FirstName, "Ada"), (CompanyWebsite, "acme.com")]).meets_minimum());
        assert!(!record(&[(LastName, "Lovelace"), (CompanyName, "Acme")]).meets_minimum());
        // A name without any company field is not enough.
        assert!(!record(&[(FirstName, "Ada"), (LastName, "Lovelace")]).meets_minimum());
        // A company alone is not a person.
        assert!(!record(&[(CompanyName, "Acme")]).meets_minimum());
        assert!(!record(&[(CompanyName, "Acme"), (CompanyWebsite, "acme.com")]).meets_minimum());
        // Any single company field completes a name.
        for company in [CompanyName, CompanyWebsite, CompanyLinkedinUrl] {
            let r = record(&[
                (FirstName, "Ada"),
                (LastName, "Lovelace"),
                (company, "acme"),
            ]);
            assert_eq!(
                r.match_route(),
                Some(MatchRoute::NameAndCompany),
                "{company}"
            );
        }
        // Empty record.
        assert_eq!(Datapoints::default().match_route(), None);
    }

    #[test]
    fn normalisation_trims_folds_and_drops_empty_values() {
        use Datapoint::*;
        let r = record(&[
            (FirstName, "  Ada   Maria "),
            (Email, " Ada.Lovelace@Example.COM "),
            (CompanyName, ""),
        ]);
        assert_eq!(r.first_name.as_deref(), Some("Ada Maria"));
        assert_eq!(r.email.as_deref(), Some("ada.lovelace@example.com"));
        assert_eq!(r.company_name, None);
    }

    #[test]
    fn linkedin_urls_of_one_person_normalise_to_one_value() {
        let canonical = Some("https://www.linkedin.com/in/x".to_string());
        for url in [
            "https://www.linkedin.com/in/x/",
            "linkedin.com/in/x",
            "http://linkedin.com/in/X?trk=public_profile",
            "https://uk.linkedin.com/in/x#about",
            " www.linkedin.com/in/x/details/experience/ ",
        ] {
            assert_eq!(normalize(Datapoint::LinkedinUrl, url), canonical, "{url}");
        }
        assert_eq!(
            normalize(
                Datapoint::CompanyLinkedinUrl,
                "linkedin.com/company/Deloitte/about/"
            ),
            Some("https://www.linkedin.com/company/deloitte".to_string())
        );
        // Not a LinkedIn profile: sent as given, never mangled into one.
        assert_eq!(
            normalize(Datapoint::LinkedinUrl, "https://example.com/in/x"),
            Some("https://example.com/in/x".to_string())
        );
        assert_ne!(
            normalize(Datapoint::LinkedinUrl, "linkedin.com/in/x"),
            normalize(Datapoint::LinkedinUrl, "linkedin.com/in/y")
        );
        // Legacy /pub/ addresses: two people with one name stay two people.
        assert_eq!(
            normalize(
                Datapoint::LinkedinUrl,
                "http://www.linkedin.com/pub/John-Smith/1a/2b/3c/?trk=x"
            ),
            Some("https://www.linkedin.com/pub/john-smith/1a/2b/3c".to_string())
        );
        assert_ne!(
            normalize(
                Datapoint::LinkedinUrl,
                "linkedin.com/pub/john-smith/1a/2b/3c"
            ),
            normalize(
                Datapoint::LinkedinUrl,
                "linkedin.com/pub/john-smith/4d/5e/6f"
            )
        );
    }

    #[test]
    fn company_websites_of_one_company_normalise_to_one_domain() {
        for url in [
            "https://www.Deloitte.com/about",
            "deloitte.com",
            "DELOITTE.COM.",
            "http://deloitte.com:8080/?x=1",
            "www.deloitte.com/",
        ] {
            assert_eq!(
                normalize(Datapoint::CompanyWebsite, url),
                Some("deloitte.com".to_string()),
                "{url}"
            );
        }
        // Subdomains other than www are different sites.
        assert_eq!(
            normalize(Datapoint::CompanyWebsite, "https://uk.deloitte.com"),
            Some("uk.deloitte.com".to_string())
        );
    }

    #[test]
    fn datapoint_names_round_trip() {
        for d in Datapoint::ALL {
            assert_eq!(d.as_str().parse::<Datapoint>(), Ok(d));
        }
        assert!("phone".parse::<Datapoint>().is_err());
        let json = serde_json::to_string(&record(&[(Datapoint::Email, "A@B.CO")])).unwrap();
        assert_eq!(json, r#"{"email":"a@b.co"}"#);
    }
}

//! The endpoint seam: everything that is specific to one of the vendor's paced bulk endpoints
//! sits behind [`Endpoint`] — its path, which datapoints a record carries and the minimum it
//! must meet, which flags apply, the request's shape, the cache key's first byte, and which
//! objects its answers carry (and so which output columns it has).
//!
//! The client, the de-duplication, the cache and the enrichment node take an `Endpoint` and ask
//! it; none of them names a path or a datapoint. Every bulk endpoint answers in one shape
//! (`{error, total_cost, matched: [{identifier, ...objects}], not_matched, invalid_datapoints}`,
//! reference "POST /bulk-enrich-person" and "POST /bulk-enrich-company"), prices a match the
//! same way (1 credit, 0 when free, 10 with a revealed mobile) and draws on the same enrich
//! quota, so a second endpoint is one more variant here and nothing more in the client.

use bytes::Bytes;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::datapoints::{
    Datapoint, Datapoints, canonical_domain, canonical_linkedin_url, normalize,
};
use crate::vendor::wire::EnrichFlags;

/// One of the vendor's bulk enrichment endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `POST /bulk-enrich-person`: up to 50 persons a request, answered with the person and
    /// their current company. Its cache-key byte, `1`, is the key version of caches written
    /// before keys named their endpoint, so those entries are person answers.
    BulkEnrichPerson,
    /// `POST /bulk-enrich-company`: up to 50 companies a request, answered with the company; no
    /// flags; 1 credit a match (reference, "POST /bulk-enrich-company").
    BulkEnrichCompany,
}

/// An object an endpoint's answers carry for a matched record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Object {
    /// The person (`person`).
    Person,
    /// The company (`company`): the person's current company, or the company asked for.
    Company,
}

impl Endpoint {
    /// Every endpoint, in the order of their cache-key bytes.
    pub const ALL: [Endpoint; 2] = [Endpoint::BulkEnrichPerson, Endpoint::BulkEnrichCompany];

    /// The endpoint's path, as the vendor documents it.
    pub const fn path(self) -> &'static str {
        match self {
            Endpoint::BulkEnrichPerson => "/bulk-enrich-person",
            Endpoint::BulkEnrichCompany => "/bulk-enrich-company",
        }
    }

    /// The first byte of this endpoint's cache keys.
    pub const fn tag(self) -> u8 {
        match self {
            Endpoint::BulkEnrichPerson => 1,
            Endpoint::BulkEnrichCompany => 2,
        }
    }

    /// The endpoint a cache key's first byte names; `None` for a byte no endpoint uses (yet).
    pub const fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(Endpoint::BulkEnrichPerson),
            2 => Some(Endpoint::BulkEnrichCompany),
            _ => None,
        }
    }

    /// The datapoints a record of this endpoint carries, in the order its cache key lists them
    /// (reference: "Each record: `identifier` plus any of ..."). Any other datapoint of a
    /// record is neither sent nor part of its key.
    pub const fn datapoints(self) -> &'static [Datapoint] {
        match self {
            Endpoint::BulkEnrichPerson => &Datapoint::PERSON,
            Endpoint::BulkEnrichCompany => &Datapoint::COMPANY,
        }
    }

    /// The objects a match carries: the output columns follow from them.
    pub const fn objects(self) -> &'static [Object] {
        match self {
            Endpoint::BulkEnrichPerson => &[Object::Person, Object::Company],
            Endpoint::BulkEnrichCompany => &[Object::Company],
        }
    }

    /// The part of `flags` this endpoint takes (and that its cache keys and prices see).
    pub const fn flags(self, flags: EnrichFlags) -> EnrichFlags {
        match self {
            Endpoint::BulkEnrichPerson => flags,
            // The company endpoint takes no flags (and charges no mobile).
            Endpoint::BulkEnrichCompany => EnrichFlags {
                only_verified_email: false,
                enrich_mobile: false,
                only_verified_mobile: false,
            },
        }
    }

    /// The record as it is sent and keyed: this endpoint's datapoints, normalised
    /// ([`Datapoints::normalized`]); `None` when it does not meet the endpoint's minimum
    /// requirement, and so is never sent (the vendor would list it in `invalid_datapoints` and
    /// it would cost quota for nothing).
    ///
    /// A company record keeps a website only when it names a domain, and a LinkedIn URL only
    /// when it is a company page: alone, "N/A" or a person's profile would pass the minimum,
    /// spend quota, and match nothing (the person endpoint sends such values beside a name,
    /// and its keys stay as they were).
    pub fn prepare(self, record: &Datapoints) -> Option<Datapoints> {
        let mut prepared = Datapoints::default();
        for &datapoint in self.datapoints() {
            if let Some(value) = record.get(datapoint) {
                prepared.set(datapoint, normalize(datapoint, value));
            }
        }
        if self == Endpoint::BulkEnrichCompany {
            if prepared
                .company_website
                .as_deref()
                .is_some_and(|w| canonical_domain(w).is_none())
            {
                prepared.company_website = None;
            }
            if prepared
                .company_linkedin_url
                .as_deref()
                .is_some_and(|u| canonical_linkedin_url(u, "company").is_none())
            {
                prepared.company_linkedin_url = None;
            }
        }
        let meets = match self {
            Endpoint::BulkEnrichPerson => prepared.meets_minimum(),
            Endpoint::BulkEnrichCompany => prepared.meets_company_minimum(),
        };
        meets.then_some(prepared)
    }

    /// Whether a prepared record can match only by a name, which the vendor warns may be the
    /// wrong one (a company's `company_name` alone): it is sent, and counted as
    /// [`Tally::name_only`](crate::api::Tally::name_only).
    pub fn name_only(self, prepared: &Datapoints) -> bool {
        match self {
            Endpoint::BulkEnrichPerson => false,
            Endpoint::BulkEnrichCompany => prepared.is_company_name_only(),
        }
    }

    /// A short name for messages and EXPLAIN: `person` or `company`.
    pub const fn noun(self) -> &'static str {
        match self {
            Endpoint::BulkEnrichPerson => "person",
            Endpoint::BulkEnrichCompany => "company",
        }
    }

    /// The body of a request of `records` (prepared), identified `r0`, `r1`, ... in order: the
    /// caller's data never has to be unique, answers are mapped back by these identifiers.
    pub(crate) fn encode<'a>(
        self,
        records: impl Iterator<Item = &'a Datapoints>,
        flags: EnrichFlags,
    ) -> serde_json::Result<Bytes> {
        let request = Request {
            flags: self.flags(flags),
            takes_flags: self.takes_flags(),
            data: records
                .enumerate()
                .map(|(i, datapoints)| Record {
                    identifier: i,
                    datapoints,
                    fields: self.datapoints(),
                })
                .collect(),
        };
        serde_json::to_vec(&request).map(Bytes::from)
    }

    /// Whether the request carries flags at its top level.
    const fn takes_flags(self) -> bool {
        match self {
            Endpoint::BulkEnrichPerson => true,
            Endpoint::BulkEnrichCompany => false,
        }
    }
}

/// A bulk request body, serialised from borrowed records.
struct Request<'a> {
    flags: EnrichFlags,
    takes_flags: bool,
    data: Vec<Record<'a>>,
}

impl Serialize for Request<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if self.takes_flags {
            // As `EnrichFlags` serialises: the flags that are on, in their order.
            let EnrichFlags {
                only_verified_email,
                enrich_mobile,
                only_verified_mobile,
            } = self.flags;
            for (name, on) in [
                ("only_verified_email", only_verified_email),
                ("enrich_mobile", enrich_mobile),
                ("only_verified_mobile", only_verified_mobile),
            ] {
                if on {
                    map.serialize_entry(name, &true)?;
                }
            }
        }
        map.serialize_entry("data", &self.data)?;
        map.end()
    }
}

/// One record of a request: `identifier` and the endpoint's datapoints that are present.
struct Record<'a> {
    identifier: usize,
    datapoints: &'a Datapoints,
    fields: &'static [Datapoint],
}

impl Serialize for Record<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("identifier", &format_args!("r{}", self.identifier))?;
        for &datapoint in self.fields {
            if let Some(value) = self.datapoints.get(datapoint) {
                map.serialize_entry(datapoint.as_str(), value)?;
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vendor::wire::BulkEnrichRequest;

    fn person(email: &str) -> Datapoints {
        Datapoints {
            email: Some(email.into()),
            ..Datapoints::default()
        }
    }

    #[test]
    fn a_person_request_is_the_documented_body() {
        let records = [
            person("eva@acme.io"),
            Datapoints {
                first_name: Some("Eva".into()),
                last_name: Some("Lind".into()),
                company_website: Some("acme.io".into()),
                ..Datapoints::default()
            },
        ];
        let flags = EnrichFlags {
            only_verified_email: true,
            enrich_mobile: true,
            only_verified_mobile: false,
        };
        let body = Endpoint::BulkEnrichPerson
            .encode(records.iter(), flags)
            .unwrap();
        // What the sandbox (and the vendor) reads back: the flags at the top level, records
        // named r0, r1 with their datapoints beside the identifier.
        let parsed: BulkEnrichRequest = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed.flags, flags);
        let ids: Vec<&str> = parsed.data.iter().map(|r| r.identifier.as_str()).collect();
        assert_eq!(ids, ["r0", "r1"]);
        assert_eq!(parsed.data[0].datapoints, records[0]);
        assert_eq!(parsed.data[1].datapoints, records[1]);
        // Byte for byte what the wire types write: flags that are off are left out.
        let wire = BulkEnrichRequest {
            flags: EnrichFlags {
                only_verified_email: false,
                ..flags
            },
            data: parsed.data.clone(),
        };
        let body = Endpoint::BulkEnrichPerson
            .encode(records.iter(), wire.flags)
            .unwrap();
        assert_eq!(body, serde_json::to_vec(&wire).unwrap());
    }

    #[test]
    fn a_record_below_the_minimum_is_not_prepared() {
        let endpoint = Endpoint::BulkEnrichPerson;
        assert_eq!(
            endpoint.prepare(&person("  Eva@ACME.io ")),
            Some(person("eva@acme.io"))
        );
        let name_only = Datapoints {
            first_name: Some("Eva".into()),
            last_name: Some("Lind".into()),
            ..Datapoints::default()
        };
        assert_eq!(endpoint.prepare(&name_only), None);
        assert_eq!(endpoint.prepare(&person("   ")), None);
    }

    #[test]
    fn a_company_request_carries_only_the_four_company_datapoints_and_no_flags() {
        let record = Datapoints {
            full_name: Some("Eva Lind".into()),
            email: Some("eva@acme.io".into()),
            company_name: Some("Acme".into()),
            company_website: Some("https://www.Acme.io/about".into()),
            company_id: Some("cmp-1".into()),
            ..Datapoints::default()
        };
        let endpoint = Endpoint::BulkEnrichCompany;
        let prepared = endpoint.prepare(&record).unwrap();
        assert_eq!(
            prepared,
            Datapoints {
                company_name: Some("Acme".into()),
                company_website: Some("acme.io".into()),
                company_id: Some("cmp-1".into()),
                ..Datapoints::default()
            }
        );
        let flags = EnrichFlags {
            only_verified_email: true,
            enrich_mobile: true,
            only_verified_mobile: true,
        };
        let body = endpoint.encode([&record].into_iter(), flags).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"data": [{
                "identifier": "r0",
                "company_name": "Acme",
                "company_website": "https://www.Acme.io/about",
                "company_id": "cmp-1",
            }]})
        );
        // A website that names no domain, or a person's LinkedIn profile, cannot find a
        // company: without another datapoint the record is not sent.
        for (website, page) in [
            (Some("N/A"), None),
            (None, Some("https://www.linkedin.com/in/eva-kiegler/")),
            (Some("-"), Some("not a url")),
        ] {
            let record = Datapoints {
                company_website: website.map(str::to_string),
                company_linkedin_url: page.map(str::to_string),
                ..Datapoints::default()
            };
            assert_eq!(endpoint.prepare(&record), None, "{record:?}");
        }
        let with_name = Datapoints {
            company_name: Some("Acme".into()),
            company_website: Some("N/A".into()),
            ..Datapoints::default()
        };
        assert_eq!(
            endpoint.prepare(&with_name),
            Some(Datapoints {
                company_name: Some("Acme".into()),
                ..Datapoints::default()
            })
        );
        // A person's datapoints alone do not make a company record.
        let person_only = Datapoints {
            full_name: Some("Eva Lind".into()),
            email: Some("eva@acme.io".into()),
            ..Datapoints::default()
        };
        assert_eq!(endpoint.prepare(&person_only), None);
        // A person request never carries company_id.
        let body = Endpoint::BulkEnrichPerson
            .encode([&record].into_iter(), EnrichFlags::default())
            .unwrap();
        assert!(!String::from_utf8_lossy(&body).contains("company_id"));
    }

    #[test]
    fn tags_name_their_endpoint() {
        for endpoint in Endpoint::ALL {
            assert_eq!(Endpoint::from_tag(endpoint.tag()), Some(endpoint));
        }
        assert_eq!(Endpoint::from_tag(0), None);
        assert_eq!(Endpoint::BulkEnrichPerson.tag(), 1);
        assert_eq!(Endpoint::BulkEnrichPerson.path(), "/bulk-enrich-person");
    }
}

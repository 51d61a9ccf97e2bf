//! Answers, keys and entries the cache tests share.

use std::time::SystemTime;

use super::codec::from_unix_millis;
use super::*;
use crate::datapoints::Datapoints;
use crate::vendor::outcome::{Match, RecordOutcome};
use crate::vendor::wire::{Company, EnrichFlags, Person, PersonMobile};

pub(super) fn at(millis: i64) -> SystemTime {
    from_unix_millis(millis)
}

pub(super) fn person(mobile_revealed: bool) -> Person {
    let mut person: Person = serde_json::from_value(serde_json::json!({
        "person_id": "aa8e8c3b1f6a",
        "first_name": "Eva",
        "last_name": "Kiegler",
        "full_name": "Eva Kiegler",
        "linkedin_url": "https://www.linkedin.com/in/eva-kiegler",
        "skills": ["SaaS", "Growth"],
        "email": {"status": "VERIFIED", "revealed": true, "email": "eva@intercom.com"},
        "location": {"country": "Ireland", "time_zone_offset": 1.0},
        "a_field_added_later": {"nested": [1, 2, 3]}
    }))
    .unwrap();
    person.mobile = Some(PersonMobile {
        status: Some("VERIFIED".into()),
        revealed: Some(mobile_revealed),
        mobile: Some(if mobile_revealed {
            "+353861234567".into()
        } else {
            "+353*********".into()
        }),
        ..PersonMobile::default()
    });
    person
}

pub(super) fn company() -> Company {
    serde_json::from_value(serde_json::json!({
        "company_id": "c-1",
        "name": "Intercom",
        "domain": "intercom.com",
        "employee_count": 1200,
        "keywords": ["support", "chat"],
        "unknown_vendor_field": true
    }))
    .unwrap()
}

pub(super) fn matched(free: bool, cost: i64) -> RecordOutcome {
    RecordOutcome::Matched(Box::new(Match {
        person: Some(person(true)),
        company: Some(company()),
        free_enrichment: free,
        cost,
    }))
}

pub(super) fn datapoints(email: &str) -> Datapoints {
    Datapoints {
        email: Some(email.to_string()),
        ..Datapoints::default()
    }
}

pub(super) fn key(email: &str) -> CacheKey {
    CacheKey::new(&datapoints(email), EnrichFlags::default())
}

pub(super) fn entry(
    answer: CachedAnswer,
    mobile_requested: bool,
    stored_at: SystemTime,
) -> CacheEntry {
    CacheEntry {
        answer,
        stored_at,
        mobile_requested,
        cost: 0,
    }
}

pub(super) fn matched_answer() -> CachedAnswer {
    CachedAnswer::Matched {
        person: Some(person(false)),
        company: Some(company()),
        free_enrichment: false,
    }
}

/// One outcome of every kind the cache stores: matches (paid, free, without objects), a miss,
/// an invalid record.
pub(super) fn every_answer_kind() -> [RecordOutcome; 5] {
    [
        matched(false, 10),
        matched(true, 0),
        RecordOutcome::Matched(Box::new(Match {
            person: None,
            company: None,
            free_enrichment: false,
            cost: 1,
        })),
        RecordOutcome::NotMatched,
        RecordOutcome::InvalidDatapoints,
    ]
}

/// `entry` (a match) as version 1 wrote it: the person and company as JSON, LZ4-compressed.
pub(super) fn version_1_value(entry: &CacheEntry) -> Vec<u8> {
    use super::codec::{VALUE_HEADER_LEN, VALUE_VERSION_JSON};
    let CachedAnswer::Matched {
        person, company, ..
    } = &entry.answer
    else {
        panic!("a match");
    };
    let json =
        serde_json::to_vec(&serde_json::json!({"person": person, "company": company})).unwrap();
    let mut value = entry.encode().into_bytes()[..VALUE_HEADER_LEN].to_vec();
    value[0] = VALUE_VERSION_JSON;
    value.extend_from_slice(&(json.len() as u32).to_le_bytes());
    value.extend_from_slice(&lz4_flex::block::compress(&json));
    value
}

/// `entry` (a match) as the first build of version 2 wrote it: the compact form with each
/// object's `extra` at the bit after its last field, under `fingerprint` (that build's:
/// [`compact::first_layout_fingerprint`]).
pub(super) fn first_layout_value(entry: &CacheEntry, fingerprint: u32) -> Vec<u8> {
    use super::codec::VALUE_HEADER_LEN;
    use crate::vendor::wire::compact::{self, Writer};
    let CachedAnswer::Matched {
        person, company, ..
    } = &entry.answer
    else {
        panic!("a match");
    };
    let mut objects = Writer::first_layout();
    compact::put_option(&mut objects, person.as_ref());
    compact::put_option(&mut objects, company.as_ref());
    let objects = objects.finish();
    let mut value = entry.encode().into_bytes()[..VALUE_HEADER_LEN].to_vec();
    value.extend_from_slice(&fingerprint.to_le_bytes());
    value.extend_from_slice(&(objects.len() as u32).to_le_bytes());
    value.extend_from_slice(&lz4_flex::block::compress(&objects));
    value
}

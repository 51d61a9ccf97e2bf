//! The cache key: which endpoint was asked, and what it was asked.
//!
//! # Encoding
//!
//! Keys are byte strings. The first byte names the endpoint and the layout of the rest
//! ([`Endpoint::tag`]):
//!
//! - `1` — `/bulk-enrich-person`: a flags byte, then the endpoint's datapoints
//!   ([`Endpoint::datapoints`]: the nine of [`Datapoint::ALL`](crate::datapoints::Datapoint::ALL),
//!   in that order), each either absent (`0x00`) or present (`0x01`, a LEB128 length, the UTF-8
//!   bytes).
//!
//! Every endpoint's key has that layout over its own datapoints and the flags it takes
//! ([`Endpoint::flags`]); its first byte is [`Endpoint::tag`].
//!
//! The byte `1` was the "key version 1" of every cache written before the endpoint was part of
//! the key, and that layout is exactly the person endpoint's layout: those keys *are* person
//! keys. A cache file full of paid answers keeps serving them as person answers with one lookup
//! per record (no fallback to an older key, no migration). A new endpoint gets a new first byte,
//! so two endpoints never share an entry; a new layout for an existing endpoint also gets a new
//! byte (its old keys then simply miss).
//!
//! The encoding is injective and decodes back (for `prospeo cache export`); nothing is hashed,
//! so two records never share an entry by accident.

use crate::datapoints::Datapoints;
pub use crate::vendor::endpoint::Endpoint;
use crate::vendor::wire::EnrichFlags;

/// Key flags byte: `only_verified_email`.
const KEY_ONLY_VERIFIED_EMAIL: u8 = 0x01;
/// Key flags byte: `only_verified_mobile`.
const KEY_ONLY_VERIFIED_MOBILE: u8 = 0x02;
/// Key datapoint tag: absent.
const KEY_ABSENT: u8 = 0x00;
/// Key datapoint tag: present, followed by a LEB128 length and the bytes.
const KEY_PRESENT: u8 = 0x01;

/// The cache key: the endpoint, the normalised datapoints, and the flags that change which
/// person is returned.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub(super) Vec<u8>);
impl CacheKey {
    /// The `/bulk-enrich-person` key of a record: [`CacheKey::for_endpoint`] of
    /// [`Endpoint::BulkEnrichPerson`].
    pub fn new(datapoints: &Datapoints, flags: EnrichFlags) -> Self {
        CacheKey::for_endpoint(Endpoint::BulkEnrichPerson, datapoints, flags)
    }

    /// The key of a record asked of `endpoint`. `datapoints` must already be prepared
    /// ([`Endpoint::prepare`]): two spellings of the same record must give the same key.
    ///
    /// Includes `only_verified_email` and `only_verified_mobile` where the endpoint takes them
    /// (they change whether a person is returned), not `enrich_mobile`: a match asked without
    /// the mobile is upgraded by asking again, which [`CacheEntry::serves`] decides.
    ///
    /// [`CacheEntry::serves`]: crate::cache::CacheEntry::serves
    pub fn for_endpoint(endpoint: Endpoint, datapoints: &Datapoints, flags: EnrichFlags) -> Self {
        let flags = endpoint.flags(flags);
        let mut bytes = Vec::with_capacity(2 + 9 + 96);
        bytes.push(endpoint.tag());
        let mut flag_byte = 0;
        if flags.only_verified_email {
            flag_byte |= KEY_ONLY_VERIFIED_EMAIL;
        }
        if flags.only_verified_mobile {
            flag_byte |= KEY_ONLY_VERIFIED_MOBILE;
        }
        bytes.push(flag_byte);
        for &datapoint in endpoint.datapoints() {
            match datapoints.get(datapoint) {
                None => bytes.push(KEY_ABSENT),
                Some(value) => {
                    bytes.push(KEY_PRESENT);
                    write_leb128(&mut bytes, value.len() as u64);
                    bytes.extend_from_slice(value.as_bytes());
                }
            }
        }
        CacheKey(bytes)
    }

    /// The encoded key, as stored.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A key as stored elsewhere (the coordinator's `answers.record_key`): the bytes of
    /// [`CacheKey::as_bytes`], taken as they are.
    pub(crate) fn from_stored(bytes: Vec<u8>) -> Self {
        CacheKey(bytes)
    }

    /// The endpoint the key belongs to; `None` when the first byte names none this version
    /// knows.
    pub fn endpoint(&self) -> Option<Endpoint> {
        self.0.first().copied().and_then(Endpoint::from_tag)
    }

    /// The datapoints the key was made from (for export); `None` when the bytes are not a key
    /// of an endpoint this version knows.
    pub fn datapoints(&self) -> Option<Datapoints> {
        self.decode().map(|(datapoints, _)| datapoints)
    }

    /// The flags the key was made with; `enrich_mobile` is always false (it is not part of the
    /// key). `None` when the bytes are not a key of an endpoint this version knows.
    pub fn flags(&self) -> Option<EnrichFlags> {
        self.decode().map(|(_, flags)| flags)
    }

    fn decode(&self) -> Option<(Datapoints, EnrichFlags)> {
        let (&tag, rest) = self.0.split_first()?;
        let endpoint = Endpoint::from_tag(tag)?;
        let (&flag_byte, mut rest) = rest.split_first()?;
        if flag_byte & !(KEY_ONLY_VERIFIED_EMAIL | KEY_ONLY_VERIFIED_MOBILE) != 0 {
            return None;
        }
        let flags = EnrichFlags {
            only_verified_email: flag_byte & KEY_ONLY_VERIFIED_EMAIL != 0,
            enrich_mobile: false,
            only_verified_mobile: flag_byte & KEY_ONLY_VERIFIED_MOBILE != 0,
        };
        let mut datapoints = Datapoints::default();
        for &datapoint in endpoint.datapoints() {
            let (&tag, after_tag) = rest.split_first()?;
            rest = after_tag;
            match tag {
                KEY_ABSENT => {}
                KEY_PRESENT => {
                    let (len, after_len) = read_leb128(rest)?;
                    let len = usize::try_from(len).ok()?;
                    if after_len.len() < len {
                        return None;
                    }
                    let (value, after_value) = after_len.split_at(len);
                    let value = std::str::from_utf8(value).ok()?;
                    datapoints.set(datapoint, Some(value.to_string()));
                    rest = after_value;
                }
                _ => return None,
            }
        }
        (rest.is_empty() && endpoint.flags(flags) == flags).then_some((datapoints, flags))
    }
}

fn write_leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A LEB128 number and the bytes after it. Refuses overlong and overflowing encodings, so that
/// one number has one encoding.
fn read_leb128(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value: u64 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        let part = u64::from(byte & 0x7F);
        let shift = 7 * i as u32;
        if shift == 63 && part > 1 {
            return None;
        }
        value |= part << shift;
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return None;
            }
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapoints::Datapoint;

    fn datapoints(email: &str) -> Datapoints {
        Datapoints {
            email: Some(email.to_string()),
            ..Datapoints::default()
        }
    }

    fn key(email: &str) -> CacheKey {
        CacheKey::new(&datapoints(email), EnrichFlags::default())
    }

    #[test]
    fn the_key_encoding_is_injective() {
        let flags = EnrichFlags::default();
        let mut seen = std::collections::HashMap::new();
        let mut add = |label: &str, dp: Datapoints| {
            let key = CacheKey::new(&dp, flags);
            if let Some(previous) = seen.insert(key.clone(), label.to_string()) {
                panic!("{label} and {previous} share a key");
            }
            assert_eq!(key.datapoints(), Some(dp), "{label} does not decode back");
        };
        let with = |pairs: &[(Datapoint, &str)]| {
            let mut dp = Datapoints::default();
            for (d, v) in pairs {
                dp.set(*d, Some(v.to_string()));
            }
            dp
        };
        use Datapoint::*;
        add("nothing", Datapoints::default());
        add("empty first name", with(&[(FirstName, "")]));
        add("empty last name", with(&[(LastName, "")]));
        add("a b", with(&[(FirstName, "a"), (LastName, "b")]));
        add("ab", with(&[(FirstName, "ab")]));
        add("ab in last", with(&[(LastName, "ab")]));
        add("a, empty b", with(&[(FirstName, "a"), (LastName, "")]));
        add("separator in value", with(&[(FirstName, "a\u{1f}b")]));
        add(
            "separator split",
            with(&[(FirstName, "a"), (LastName, "\u{1f}b")]),
        );
        add(
            "nul bytes",
            with(&[(FirstName, "\0\u{1}"), (LastName, "\0")]),
        );
        add(
            "nul split",
            with(&[(FirstName, "\0"), (LastName, "\u{1}\0")]),
        );
        add("tag-like value", with(&[(Email, "\u{1}\u{3}abc")]));
        add("long value", with(&[(CompanyName, &"x".repeat(300))]));
        add("long value + 1", with(&[(CompanyName, &"x".repeat(301))]));
        add(
            "every field",
            with(&Datapoint::PERSON.map(|d| (d, d.as_str()))),
        );
        add("unicode", with(&[(FullName, "Zoë Ångström 李")]));
    }

    #[test]
    fn flags_change_the_key_except_enrich_mobile() {
        let dp = datapoints("eva@intercom.com");
        let plain = CacheKey::new(&dp, EnrichFlags::default());
        let mobile = CacheKey::new(
            &dp,
            EnrichFlags {
                enrich_mobile: true,
                ..EnrichFlags::default()
            },
        );
        assert_eq!(plain, mobile);
        let verified_email = EnrichFlags {
            only_verified_email: true,
            ..EnrichFlags::default()
        };
        let verified_mobile = EnrichFlags {
            only_verified_mobile: true,
            ..EnrichFlags::default()
        };
        let both = EnrichFlags {
            only_verified_email: true,
            enrich_mobile: true,
            only_verified_mobile: true,
        };
        let keys = [
            plain.clone(),
            CacheKey::new(&dp, verified_email),
            CacheKey::new(&dp, verified_mobile),
            CacheKey::new(&dp, both),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(
            keys[3].flags(),
            Some(EnrichFlags {
                enrich_mobile: false,
                ..both
            })
        );
        assert_eq!(keys[1].flags(), Some(verified_email));
        assert_eq!(keys[1].datapoints(), Some(dp));
    }

    #[test]
    fn malformed_keys_do_not_decode() {
        let good = key("a@b.co");
        let bytes = good.as_bytes();
        for bad in [
            &[][..],
            &bytes[..bytes.len() - 1],
            &[bytes, &[0]].concat(),
            &[&[9][..], &bytes[1..]].concat(),
            &[&bytes[..1], &[0x80], &bytes[2..]].concat(),
        ] {
            assert_eq!(CacheKey(bad.to_vec()).datapoints(), None, "{bad:?}");
        }
    }

    /// The bytes every cache written before keys named their endpoint holds ("key version 1"):
    /// they must stay the person endpoint's keys, or paid answers stop serving.
    #[test]
    fn person_keys_are_the_version_1_keys_of_older_caches() {
        let eva = Datapoints {
            first_name: Some("eva".into()),
            email: Some("eva@intercom.com".into()),
            ..Datapoints::default()
        };
        let flags = EnrichFlags {
            only_verified_email: true,
            enrich_mobile: true,
            only_verified_mobile: false,
        };
        let mut v1 = vec![1u8, 0x01, 0x01, 3];
        v1.extend_from_slice(b"eva");
        v1.extend_from_slice(&[0, 0, 0, 0x01, 16]);
        v1.extend_from_slice(b"eva@intercom.com");
        v1.extend_from_slice(&[0, 0, 0, 0]);
        let key = CacheKey::new(&eva, flags);
        assert_eq!(key.as_bytes(), v1.as_slice());
        assert_eq!(key.endpoint(), Some(Endpoint::BulkEnrichPerson));
        assert_eq!(CacheKey(v1).datapoints(), Some(eva));
        assert_eq!(Endpoint::BulkEnrichPerson.path(), "/bulk-enrich-person");
    }

    #[test]
    fn a_company_key_never_answers_a_person_key() {
        let flags = EnrichFlags {
            only_verified_email: true,
            enrich_mobile: true,
            only_verified_mobile: true,
        };
        let record = Datapoints {
            email: Some("eva@acme.io".into()),
            company_name: Some("Acme".into()),
            company_website: Some("acme.io".into()),
            company_id: Some("cmp-1".into()),
            ..Datapoints::default()
        };
        let company = CacheKey::for_endpoint(Endpoint::BulkEnrichCompany, &record, flags);
        let person = CacheKey::for_endpoint(Endpoint::BulkEnrichPerson, &record, flags);
        assert_ne!(company, person);
        assert_eq!(company.endpoint(), Some(Endpoint::BulkEnrichCompany));
        assert_eq!(company.as_bytes()[0], 2);
        // The company key holds the four company datapoints and no flags (the endpoint takes
        // none); it decodes back to them.
        assert_eq!(company.flags(), Some(EnrichFlags::default()));
        assert_eq!(
            company.datapoints(),
            Some(Datapoints {
                email: None,
                ..record.clone()
            })
        );
        assert_eq!(
            company,
            CacheKey::for_endpoint(Endpoint::BulkEnrichCompany, &record, EnrichFlags::default())
        );
        // The person key leaves company_id out: the person endpoint does not take it.
        assert_eq!(
            person.datapoints(),
            Some(Datapoints {
                company_id: None,
                ..record
            })
        );
    }

    #[test]
    fn a_key_of_an_unknown_endpoint_is_not_a_person_key() {
        let mut bytes = key("a@b.co").as_bytes().to_vec();
        bytes[0] = 0x7F;
        let other = CacheKey(bytes);
        assert_eq!(other.endpoint(), None);
        assert_eq!(other.datapoints(), None);
        assert_eq!(other.flags(), None);
        assert_ne!(other, key("a@b.co"));
    }
}

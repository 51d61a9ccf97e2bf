//! The sandbox's HTTP server: the vendor contract (`reference/prospeo-api.md`) over a
//! [`Directory`], with per-key credits and rate limits, fault injection, and a stats endpoint.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::datapoints::{Datapoint, Datapoints};
use crate::rng::SplitMix64;
use crate::sandbox::config::{SandboxConfig, SandboxKey};
use crate::sandbox::directory::{Directory, Lookup};
use crate::sandbox::quota::{QuotaReport, QuotaWindows};
use crate::vendor::plan::{QuotaWindow, headers};
use crate::vendor::wire::{
    BulkEnrichResponse, EnrichFlags, ErrorBody, ErrorCode, MAX_BULK_RECORDS, MatchedRecord, Person,
    PersonMobile,
};

/// Faults injected, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultStats {
    /// Connections closed without an answer, before processing.
    pub dropped: u64,
    /// HTML 502/503 answers, as a proxy would send, before processing.
    pub bad_gateway: u64,
    /// `INTERNAL_ERROR` answers (HTTP 400), before processing.
    pub internal_error: u64,
    /// Requests processed and charged, then answered only after the slow delay.
    pub slow: u64,
    /// Answers processed and charged whose body stopped halfway.
    #[serde(default)]
    pub cut_body: u64,
    /// Answers processed and charged, sent as HTTP 200 with a body that is not JSON.
    #[serde(default)]
    pub garbled: u64,
    /// Answers processed and charged that left one record out.
    #[serde(default)]
    pub lost_record: u64,
}

/// What one key did, as `/_sandbox/stats` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStats {
    /// Authenticated requests received, whatever their outcome.
    pub requests: u64,
    /// Requests answered with `error: false`.
    pub successful_requests: u64,
    /// Records of successful enrich requests: what counts against the rate limits.
    pub records: u64,
    /// Records of every enrich request received, including failed ones and retries.
    pub records_submitted: u64,
    /// Records that matched a person.
    pub matched: u64,
    /// Records that matched nobody.
    pub not_matched: u64,
    /// Records below the minimum requirement.
    pub invalid: u64,
    /// Credits taken from the balance.
    pub credits_charged: i64,
    /// Matches of a person this key had enriched before, not charged.
    pub free_enrichments: u64,
    /// Matches that revealed a mobile.
    pub mobile_reveals: u64,
    /// Distinct people this key has been charged for.
    pub people_charged: u64,
    /// Records asked again: records of this key's successful enrich requests (not those
    /// refused by the rate limits, a fault before processing, or a lack of credits) whose
    /// datapoints an earlier successful request of this key had already carried, matched or
    /// not (records below the minimum count neither way): what workers sent twice, whatever
    /// the identifier. "The same datapoints": the record without its `identifier`, normalised
    /// as the client normalises it for de-duplication and caching ([`Datapoints::normalized`]:
    /// trimmed, inner blanks collapsed, emails case-folded, LinkedIn URLs and websites made
    /// canonical; names keep their case), per endpoint (a person record and a company record
    /// are never the same). A record repeated within one request is not counted: nothing had
    /// answered it yet.
    #[serde(default)]
    pub asked_again: u64,
    /// Rate-limit answers sent (429, or 200 with a rate-limit code).
    pub rate_limited: u64,
    /// Error answers by `error_code`, injected faults included.
    pub errors: BTreeMap<String, u64>,
    /// Faults injected into this key's answers.
    pub faults: FaultStats,
    /// The key's credit balance now.
    pub remaining_credits: i64,
    /// The figures of `/bulk-enrich-company` alone (the figures above count both endpoints:
    /// they share the key's quota and credits).
    #[serde(default)]
    pub companies: CompanyStats,
}

/// What `/bulk-enrich-company` did for one key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanyStats {
    /// Successful requests.
    pub requests: u64,
    /// Records of successful requests.
    pub records: u64,
    /// Records that matched a company.
    pub matched: u64,
    /// Records that matched no company.
    pub not_matched: u64,
    /// Records below the minimum requirement.
    pub invalid: u64,
    /// Credits charged.
    pub credits_charged: i64,
    /// Matches of a company this key had enriched before, not charged.
    pub free_enrichments: u64,
}

/// `/_sandbox/stats`: per key (by label), plus requests with no valid key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxStats {
    /// Each key's figures, by its label.
    pub keys: BTreeMap<String, KeyStats>,
    /// Requests refused for a missing or unknown key.
    pub unauthorized: u64,
}

impl SandboxStats {
    /// The stats of the key labelled `label` (empty stats when there is none).
    pub fn key(&self, label: &str) -> KeyStats {
        self.keys.get(label).cloned().unwrap_or_default()
    }
}

struct KeyState {
    config: SandboxKey,
    credits: i64,
    used_credits: i64,
    quota: QuotaWindows,
    /// People this key has enriched, and whether their mobile has been paid for (revealed, or
    /// attempted under `charge_mobile_attempts`).
    enriched: HashMap<usize, bool>,
    /// Companies this key has enriched through `/bulk-enrich-company`.
    companies_enriched: HashSet<usize>,
    /// The records this key has had answered, by [`record_hash`]: what `asked_again` counts.
    answered: HashSet<u64>,
    stats: KeyStats,
}

struct Inner {
    keys: HashMap<String, KeyState>,
    unauthorized: u64,
    rng: SplitMix64,
    /// The rate-limit clock: real time plus `clock_offset`, or `clock_base` plus the offset
    /// when the clock is manual.
    clock_offset: Duration,
    clock_base: Option<Instant>,
}

/// State shared by every request of one sandbox.
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    directory: Arc<Directory>,
    config: SandboxConfig,
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    pub(crate) fn new(config: SandboxConfig, shutdown: watch::Receiver<bool>) -> Self {
        let keys = config
            .keys
            .iter()
            .map(|k| {
                let state = KeyState {
                    config: k.clone(),
                    credits: k.credits,
                    used_credits: 0,
                    quota: QuotaWindows::new(k.effective_limits()),
                    enriched: HashMap::new(),
                    companies_enriched: HashSet::new(),
                    answered: HashSet::new(),
                    stats: KeyStats {
                        remaining_credits: k.credits,
                        ..Default::default()
                    },
                };
                (k.key.clone(), state)
            })
            .collect();
        Shared {
            inner: Mutex::new(Inner {
                keys,
                unauthorized: 0,
                rng: SplitMix64::new(config.seed),
                clock_offset: Duration::ZERO,
                clock_base: config.manual_clock.then(Instant::now),
            }),
            directory: config.directory.clone(),
            config,
            shutdown,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the counters half-written in a way that
        // matters more than losing the sandbox, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn stats(&self) -> SandboxStats {
        let inner = self.lock();
        SandboxStats {
            keys: inner
                .keys
                .values()
                .map(|k| (k.config.label.clone(), k.stats.clone()))
                .collect(),
            unauthorized: inner.unauthorized,
        }
    }

    pub(crate) fn advance_clock(&self, by: Duration) {
        self.lock().clock_offset += by;
    }

    /// Sleeps, unless the sandbox is stopping.
    async fn pause(&self, duration: Duration) {
        if duration.is_zero() {
            return;
        }
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(duration) => {}
            _ = shutdown.wait_for(|stopping| *stopping) => {}
        }
    }
}

fn now(inner: &Inner) -> Instant {
    inner.clock_base.unwrap_or_else(Instant::now) + inner.clock_offset
}

/// The router of the sandbox.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/bulk-enrich-person", post(bulk_enrich_person))
        .route("/bulk-enrich-company", post(bulk_enrich_company))
        .route("/enrich-person", post(enrich_person))
        .route("/account-information", get(account_information))
        .route("/_sandbox/stats", get(sandbox_stats))
        .route("/_sandbox/clock", post(sandbox_clock))
        .fallback(not_found)
        .with_state(shared)
}

/// An answer of the sandbox before rate-limit headers are added.
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    fn ok(body: impl Serialize) -> Self {
        Answer {
            status: StatusCode::OK,
            body: serde_json::to_value(body).unwrap_or(Value::Null),
        }
    }

    fn error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Answer::ok(ErrorBody::new(code, message)).with_status(status)
    }

    fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

/// The faults drawn for one request.
struct Draw {
    delay: Duration,
    drop: bool,
    bad_gateway: Option<StatusCode>,
    internal_error: bool,
    slow: bool,
    damage: Option<Damage>,
}

/// How a successful bulk answer (processed and charged) is damaged on its way back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// The body stops halfway and the connection breaks.
    CutBody,
    /// HTTP 200 with the first half of the JSON text.
    Garbled,
    /// One record is left out of the answer.
    LostRecord,
}

fn draw_faults(config: &SandboxConfig, rng: &mut SplitMix64) -> Draw {
    let f = &config.faults;
    let jitter = f.latency_jitter.mul_f64(rng.next_f64());
    let drop = rng.chance(f.drop_rate);
    let bad_gateway = rng.chance(f.bad_gateway_rate).then(|| {
        if rng.chance(0.5) {
            StatusCode::BAD_GATEWAY
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        }
    });
    let internal_error = rng.chance(f.internal_error_rate);
    let slow = rng.chance(f.slow_rate);
    // Drawn after the older faults (and only when their rate is above 0), so a seed gives the
    // same older faults as before these existed.
    let damage = if rng.chance(f.cut_body_rate) {
        Some(Damage::CutBody)
    } else if rng.chance(f.garbled_rate) {
        Some(Damage::Garbled)
    } else if rng.chance(f.lost_record_rate) {
        Some(Damage::LostRecord)
    } else {
        None
    };
    Draw {
        delay: f.latency + jitter,
        drop,
        bad_gateway,
        internal_error,
        slow,
        damage,
    }
}

/// The kind of enrich request being served.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Bulk,
    Single,
    Company,
}

async fn bulk_enrich_person(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<Connection>,
    request_headers: HeaderMap,
    body: Bytes,
) -> Response {
    enrich(shared, conn, request_headers, body, Endpoint::Bulk).await
}

async fn bulk_enrich_company(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<Connection>,
    request_headers: HeaderMap,
    body: Bytes,
) -> Response {
    enrich(shared, conn, request_headers, body, Endpoint::Company).await
}

async fn enrich_person(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<Connection>,
    request_headers: HeaderMap,
    body: Bytes,
) -> Response {
    enrich(shared, conn, request_headers, body, Endpoint::Single).await
}

/// Serves both enrich endpoints: latency, auth, faults, validation, rate limit, credits,
/// matching, in that order. Failed requests never count against the rate limits.
async fn enrich(
    shared: Arc<Shared>,
    conn: Connection,
    request_headers: HeaderMap,
    body: Bytes,
    endpoint: Endpoint,
) -> Response {
    let key = api_key(&request_headers);
    let draw = draw_faults(&shared.config, &mut shared.lock().rng);
    shared.pause(draw.delay).await;

    let (answer, quota, slow, damage) = {
        let mut inner = shared.lock();
        let now = now(&inner);
        let Some(state) = key.as_deref().and_then(|k| inner.keys.get_mut(k)) else {
            inner.unauthorized += 1;
            drop(inner);
            return unauthorized();
        };
        state.stats.requests += 1;
        if draw.drop {
            state.stats.faults.dropped += 1;
            conn.kill();
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        if let Some(status) = draw.bad_gateway {
            state.stats.faults.bad_gateway += 1;
            let page = format!(
                "<html><head><title>{status}</title></head><body><h1>{status}</h1></body></html>"
            );
            return (status, [("content-type", "text/html")], page).into_response();
        }
        let answer = if draw.internal_error {
            state.stats.faults.internal_error += 1;
            Err(Answer::error(
                StatusCode::BAD_REQUEST,
                ErrorCode::InternalError,
                "injected fault: internal error",
            ))
        } else {
            serve_enrich(
                &shared.directory,
                &shared.config,
                state,
                now,
                &body,
                endpoint,
            )
        };
        let slow = draw.slow && answer.is_ok();
        let damage = draw
            .damage
            .filter(|_| endpoint != Endpoint::Single && answer.is_ok());
        let mut answer = answer.unwrap_or_else(|failure| failure);
        if answer.status != StatusCode::OK || answer.body["error"] == json!(true) {
            let code = answer.body["error_code"].as_str().unwrap_or("").to_string();
            *state.stats.errors.entry(code).or_default() += 1;
        } else {
            state.stats.successful_requests += 1;
        }
        if slow {
            state.stats.faults.slow += 1;
        }
        match damage {
            Some(Damage::CutBody) => state.stats.faults.cut_body += 1,
            Some(Damage::Garbled) => state.stats.faults.garbled += 1,
            Some(Damage::LostRecord) if lose_one_record(&mut answer.body) => {
                state.stats.faults.lost_record += 1;
            }
            _ => {}
        }
        state.stats.remaining_credits = state.credits;
        (answer, state.quota.report(now), slow, damage)
    };
    if slow {
        shared.pause(shared.config.faults.slow_delay).await;
    }
    let response = respond(answer, Some(quota));
    match damage {
        Some(Damage::CutBody) => cut_body(response).await,
        Some(Damage::Garbled) => garble(response).await,
        _ => response,
    }
}

/// Removes the first record named in a bulk answer (a match first); false when it names none.
fn lose_one_record(body: &mut Value) -> bool {
    ["matched", "not_matched", "invalid_datapoints"]
        .iter()
        .any(
            |field| match body.get_mut(*field).and_then(Value::as_array_mut) {
                Some(records) if !records.is_empty() => {
                    records.remove(0);
                    true
                }
                _ => false,
            },
        )
}

/// The response with its body split in two: the first half is sent, then the stream fails, so
/// the connection breaks after a success status.
async fn cut_body(response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let half = bytes.slice(..bytes.len() / 2);
    // The failure comes after one yield, so the status, headers and first half are written
    // before the connection breaks.
    let chunks = futures::stream::unfold(Some(Some(half)), |stage| async move {
        match stage? {
            Some(half) => Some((Ok(half), Some(None))),
            None => {
                tokio::task::yield_now().await;
                let cut = io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "injected fault: the answer was cut off",
                );
                Some((Err(cut), None))
            }
        }
    });
    let mut response = Response::from_parts(parts, axum::body::Body::from_stream(chunks));
    response
        .headers_mut()
        .remove(axum::http::header::CONTENT_LENGTH);
    response
}

/// The response with only the first half of its JSON text: HTTP 200, a body that is not JSON.
async fn garble(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let half = bytes.slice(..bytes.len() / 2);
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(half))
}

/// Validates, rate-limits, matches and charges one enrich request. `Err` is an error answer
/// (nothing charged, nothing counted against the quota).
fn serve_enrich(
    directory: &Directory,
    config: &SandboxConfig,
    state: &mut KeyState,
    now: Instant,
    body: &[u8],
    endpoint: Endpoint,
) -> Result<Answer, Answer> {
    let invalid = |message: String| {
        Answer::error(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message)
    };
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(request) = request else {
        return Err(invalid("the body must be a JSON object".into()));
    };
    // The company endpoint takes no flags, and its records only the four company datapoints
    // (reference): whether the vendor refuses anything else is not said, so the sandbox, on
    // the strict reading, does.
    let flags = match endpoint {
        Endpoint::Company => {
            check_company_request(&request).map_err(invalid)?;
            EnrichFlags::default()
        }
        _ => parse_flags(&request).map_err(invalid)?,
    };
    let records = match endpoint {
        Endpoint::Bulk | Endpoint::Company => parse_bulk_records(&request).map_err(invalid)?,
        Endpoint::Single => {
            let data = request
                .get("data")
                .ok_or_else(|| invalid("`data` is required".into()))?;
            let datapoints = parse_datapoints(data).map_err(|e| invalid(format!("`data`: {e}")))?;
            vec![(String::new(), datapoints)]
        }
    };
    state.stats.records_submitted += records.len() as u64;

    if let Some(window) = state.quota.check(now, records.len() as u64) {
        state.stats.rate_limited += 1;
        let message = format!(
            "rate limit per {} reached",
            match window {
                QuotaWindow::Second => "second",
                QuotaWindow::Minute => "minute",
                QuotaWindow::Day => "day",
            }
        );
        return Err(if config.faults.rate_limit_as_200 {
            let mut body = ErrorBody::new(ErrorCode::RateLimited, message);
            body.error_code = Some("RATE_LIMIT_EXCEEDED".into());
            Answer::ok(body)
        } else {
            Answer::error(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                message,
            )
        });
    }

    let outcome = match endpoint {
        Endpoint::Company => evaluate_companies(directory, state, &records),
        _ => evaluate(directory, config, state, flags, &records),
    };
    if outcome.total_cost > state.credits {
        return Err(Answer::error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InsufficientCredits,
            format!(
                "this request needs {} credits and {} are left",
                outcome.total_cost, state.credits
            ),
        ));
    }
    if endpoint == Endpoint::Single {
        // The single endpoint reports per-record failures as request errors; they are not
        // charged and, like every failed request, do not count against the quota.
        if !outcome.invalid.is_empty() {
            return Err(Answer::error(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidDatapoints,
                "the record does not meet the minimum requirements for matching",
            ));
        }
        if !outcome.not_matched.is_empty() {
            return Err(Answer::error(
                StatusCode::BAD_REQUEST,
                ErrorCode::NoMatch,
                "no person matches these datapoints",
            ));
        }
    }

    // Commit: charge, remember who was enriched, count the records.
    state.quota.record(now, records.len() as u64);
    count_asked_again(state, &records, endpoint);
    state.credits -= outcome.total_cost;
    state.used_credits += outcome.total_cost;
    let stats = &mut state.stats;
    stats.records += records.len() as u64;
    stats.matched += outcome.matched.len() as u64;
    stats.not_matched += outcome.not_matched.len() as u64;
    stats.invalid += outcome.invalid.len() as u64;
    stats.credits_charged += outcome.total_cost;
    if endpoint == Endpoint::Company {
        let companies = &mut stats.companies;
        companies.requests += 1;
        companies.records += records.len() as u64;
        companies.matched += outcome.matched.len() as u64;
        companies.not_matched += outcome.not_matched.len() as u64;
        companies.invalid += outcome.invalid.len() as u64;
        companies.credits_charged += outcome.total_cost;
        let free = outcome.company_charges.iter().filter(|c| c.1 == 0).count() as u64;
        companies.free_enrichments += free;
        stats.free_enrichments += free;
        state
            .companies_enriched
            .extend(outcome.company_charges.iter().map(|c| c.0));
    }
    for charge in &outcome.charges {
        if charge.cost == 0 {
            stats.free_enrichments += 1;
        }
        if charge.revealed {
            stats.mobile_reveals += 1;
        }
        if !state.enriched.contains_key(&charge.person) {
            stats.people_charged += 1;
        }
        let paid_before = state.enriched.get(&charge.person).copied().unwrap_or(false);
        state
            .enriched
            .insert(charge.person, paid_before || charge.mobile_paid);
    }

    Ok(match endpoint {
        // A company match carries the company and no person (reference).
        Endpoint::Company => Answer::ok(json!({
            "error": false,
            "total_cost": outcome.total_cost,
            "matched": outcome.matched.iter().map(|m| json!({
                "identifier": m.identifier,
                "free_enrichment": m.free_enrichment,
                "company": m.company,
            })).collect::<Vec<_>>(),
            "not_matched": outcome.not_matched,
            "invalid_datapoints": outcome.invalid,
        })),
        Endpoint::Bulk => Answer::ok(BulkEnrichResponse {
            error: false,
            total_cost: outcome.total_cost,
            matched: outcome.matched,
            not_matched: outcome.not_matched,
            invalid_datapoints: outcome.invalid,
            extra: Default::default(),
        }),
        Endpoint::Single => {
            // The single-record answer is a bulk match without its identifier (the client never
            // calls this endpoint: it has no wire type of its own).
            let matched = outcome.matched.into_iter().next().unwrap_or_default();
            Answer::ok(json!({
                "error": false,
                "free_enrichment": matched.free_enrichment,
                "person": matched.person,
                "company": matched.company,
            }))
        }
    })
}

/// Counts the records of a processed request that earlier requests of this key already had
/// answered (`asked_again`), then remembers this request's. Records below the minimum are
/// neither counted nor remembered.
fn count_asked_again(state: &mut KeyState, records: &[(String, Datapoints)], endpoint: Endpoint) {
    let hashes: Vec<u64> = records
        .iter()
        .filter_map(|(_, datapoints)| {
            let normalized = datapoints.normalized();
            let valid = match endpoint {
                Endpoint::Company => normalized.meets_company_minimum(),
                Endpoint::Bulk | Endpoint::Single => normalized.meets_minimum(),
            };
            valid.then(|| record_hash(endpoint, &normalized))
        })
        .collect();
    let again = hashes.iter().filter(|h| state.answered.contains(h)).count();
    state.stats.asked_again += again as u64;
    state.answered.extend(hashes);
}

/// A record's identity for `asked_again`: its normalised datapoints (the record without its
/// `identifier`) and whether it asks for a person or a company. SipHash with fixed keys: the
/// same record hashes the same for the life of the sandbox.
fn record_hash(endpoint: Endpoint, normalized: &Datapoints) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    (endpoint == Endpoint::Company).hash(&mut hasher);
    normalized.hash(&mut hasher);
    hasher.finish()
}

/// One charged (or free) match.
struct Charge {
    person: usize,
    cost: i64,
    revealed: bool,
    /// The mobile price was paid by this match.
    mobile_paid: bool,
}

#[derive(Default)]
struct Outcome {
    total_cost: i64,
    matched: Vec<MatchedRecord>,
    not_matched: Vec<String>,
    invalid: Vec<String>,
    charges: Vec<Charge>,
    /// Companies matched through `/bulk-enrich-company`, with their price.
    company_charges: Vec<(usize, i64)>,
}

/// Matches and prices the records of a `/bulk-enrich-company` request, without changing any
/// state. Credits (reference, "POST /bulk-enrich-company"): 1 per matched company; nothing for
/// misses, invalid records, and a company this key enriched before (`free_enrichment: true`).
/// Minimum: one of `company_name`, `company_website`, `company_linkedin_url`, `company_id`.
fn evaluate_companies(
    directory: &Directory,
    state: &KeyState,
    records: &[(String, Datapoints)],
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut seen = HashSet::new();
    for (identifier, datapoints) in records {
        if !datapoints.normalized().meets_company_minimum() {
            outcome.invalid.push(identifier.clone());
            continue;
        }
        let Lookup::Found(index) = directory.find_company(datapoints) else {
            outcome.not_matched.push(identifier.clone());
            continue;
        };
        let before = state.companies_enriched.contains(&index) || !seen.insert(index);
        let cost = i64::from(!before);
        outcome.total_cost += cost;
        outcome.company_charges.push((index, cost));
        outcome.matched.push(MatchedRecord {
            identifier: identifier.clone(),
            free_enrichment: Some(before),
            person: None,
            company: Some(directory.company(index).clone()),
            extra: Default::default(),
        });
    }
    outcome
}

/// Matches every record and prices it, without changing any state.
///
/// Credits (reference, "Credits"): 1 per match; 10 when a mobile is revealed; nothing for
/// misses and invalid records; nothing for a person this key enriched before
/// (`free_enrichment: true`), except that the first reveal of their mobile is charged 10.
fn evaluate(
    directory: &Directory,
    config: &SandboxConfig,
    state: &KeyState,
    flags: EnrichFlags,
    records: &[(String, Datapoints)],
) -> Outcome {
    let mut outcome = Outcome::default();
    // People matched earlier in this same request count as enriched before.
    let mut seen: HashMap<usize, bool> = HashMap::new();
    for (identifier, datapoints) in records {
        if !datapoints.normalized().meets_minimum() {
            outcome.invalid.push(identifier.clone());
            continue;
        }
        let Lookup::Found(index) = directory.find(datapoints) else {
            outcome.not_matched.push(identifier.clone());
            continue;
        };
        let person = directory.person(index);
        let verified_email = person
            .email
            .as_ref()
            .is_some_and(|e| e.status.as_deref() == Some("VERIFIED") && e.email.is_some());
        let has_mobile = person.mobile.as_ref().is_some_and(|m| m.mobile.is_some());
        if (flags.only_verified_email && !verified_email)
            || (flags.only_verified_mobile && !has_mobile)
        {
            outcome.not_matched.push(identifier.clone());
            continue;
        }
        let reveal = flags.reveals_mobile() && has_mobile;
        // The mobile price applies to a reveal, and under the other reading of the vendor's
        // uncertain rule to any enrich_mobile match; it is paid once per person and key.
        let mobile_price = flags.reveals_mobile() && (has_mobile || config.charge_mobile_attempts);
        let before = seen
            .get(&index)
            .or_else(|| state.enriched.get(&index))
            .copied();
        let cost = match before {
            None if mobile_price => 10,
            None => 1,
            Some(false) if mobile_price => 10,
            Some(_) => 0,
        };
        let mobile_paid = mobile_price && cost == 10;
        seen.insert(index, before.unwrap_or(false) || mobile_paid);
        outcome.total_cost += cost;
        outcome.charges.push(Charge {
            person: index,
            cost,
            revealed: reveal,
            mobile_paid,
        });
        outcome.matched.push(MatchedRecord {
            identifier: identifier.clone(),
            free_enrichment: Some(before.is_some() && cost == 0),
            person: Some(present_person(person, flags.reveals_mobile())),
            company: directory.company_of(person).cloned(),
            extra: Default::default(),
        });
    }
    outcome
}

/// The person as the API returns them: the mobile masked unless it is revealed.
fn present_person(person: &Person, reveal_mobile: bool) -> Person {
    let mut person = person.clone();
    if !reveal_mobile && let Some(mobile) = person.mobile.as_mut() {
        *mobile = masked(mobile);
    }
    person
}

/// A mobile with its digits replaced by `*`, and `revealed: false`. International forms keep
/// their `+` and country code (the country is not a secret: `mobile_country` says it anyway);
/// the national form shows no digit at all.
fn masked(mobile: &PersonMobile) -> PersonMobile {
    let country_digits = mobile
        .mobile_country_code
        .as_deref()
        .map(|c| c.chars().filter(char::is_ascii_digit).count())
        .unwrap_or(0);
    let mask = |number: &Option<String>, keep_country: bool| {
        number.as_ref().map(|n| {
            let mut kept = 0;
            let international = keep_country && n.trim_start().starts_with('+');
            n.chars()
                .map(|c| {
                    if !c.is_ascii_digit() {
                        c
                    } else if international && kept < country_digits {
                        kept += 1;
                        c
                    } else {
                        '*'
                    }
                })
                .collect()
        })
    };
    PersonMobile {
        revealed: Some(false),
        mobile: mask(&mobile.mobile, true),
        mobile_national: mask(&mobile.mobile_national, false),
        mobile_international: mask(&mobile.mobile_international, true),
        ..mobile.clone()
    }
}

fn parse_flags(request: &serde_json::Map<String, Value>) -> Result<EnrichFlags, String> {
    let flag = |name: &str| match request.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(format!("`{name}` must be a boolean, got {other}")),
    };
    Ok(EnrichFlags {
        only_verified_email: flag("only_verified_email")?,
        enrich_mobile: flag("enrich_mobile")?,
        only_verified_mobile: flag("only_verified_mobile")?,
    })
}

/// Refuses a `/bulk-enrich-company` request with anything but `data`, or a record with
/// anything but `identifier` and the four company datapoints.
fn check_company_request(request: &serde_json::Map<String, Value>) -> Result<(), String> {
    if let Some(key) = request.keys().find(|k| *k != "data") {
        return Err(format!("`{key}` is not a property of a company request"));
    }
    let records = request.get("data").and_then(Value::as_array);
    for (i, record) in records.into_iter().flatten().enumerate() {
        let Some(record) = record.as_object() else {
            continue;
        };
        let allowed =
            |k: &str| k == "identifier" || Datapoint::COMPANY.iter().any(|d| d.as_str() == k);
        if let Some(key) = record.keys().find(|k| !allowed(k)) {
            return Err(format!(
                "record {i}: `{key}` is not a datapoint of a company record"
            ));
        }
    }
    Ok(())
}

fn parse_bulk_records(
    request: &serde_json::Map<String, Value>,
) -> Result<Vec<(String, Datapoints)>, String> {
    let data = match request.get("data") {
        None => return Err("`data` is required".into()),
        Some(Value::Array(data)) => data,
        Some(_) => return Err("`data` must be a list of records".into()),
    };
    if data.is_empty() || data.len() > MAX_BULK_RECORDS {
        return Err(format!(
            "`data` must hold 1 to {MAX_BULK_RECORDS} records, got {}",
            data.len()
        ));
    }
    let mut identifiers = HashSet::new();
    data.iter()
        .enumerate()
        .map(|(i, record)| {
            let identifier = match record.get("identifier") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => return Err(format!("record {i} has no `identifier`")),
            };
            if !identifiers.insert(identifier.clone()) {
                return Err(format!("identifier `{identifier}` appears more than once"));
            }
            let datapoints = parse_datapoints(record).map_err(|e| format!("record {i}: {e}"))?;
            Ok((identifier, datapoints))
        })
        .collect()
}

fn parse_datapoints(record: &Value) -> Result<Datapoints, String> {
    if !record.is_object() {
        return Err("a record must be a JSON object".into());
    }
    serde_json::from_value(record.clone()).map_err(|e| format!("datapoints must be strings: {e}"))
}

fn api_key(request_headers: &HeaderMap) -> Option<String> {
    request_headers
        .get("x-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn unauthorized() -> Response {
    respond(
        Answer::error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidApiKey,
            "invalid API key, check your X-KEY header",
        ),
        None,
    )
}

fn respond(answer: Answer, quota: Option<QuotaReport>) -> Response {
    let mut response = (answer.status, Json(answer.body)).into_response();
    if let Some(q) = quota {
        let h = response.headers_mut();
        let values = [
            (headers::DAILY_LEFT, q.day_left),
            (headers::MINUTE_LEFT, q.minute_left),
            (headers::DAILY_RESET_SECONDS, q.day_reset_seconds),
            (headers::MINUTE_RESET_SECONDS, q.minute_reset_seconds),
            (headers::DAILY_LIMIT, q.limits.per_day),
            (headers::MINUTE_LIMIT, q.limits.per_minute),
            (headers::SECOND_LIMIT, q.limits.per_second),
        ];
        for (name, value) in values {
            h.insert(name, HeaderValue::from(value));
        }
    }
    response
}

async fn account_information(
    State(shared): State<Arc<Shared>>,
    request_headers: HeaderMap,
) -> Response {
    let key = api_key(&request_headers);
    let mut inner = shared.lock();
    let now = now(&inner);
    let Some(state) = key.as_deref().and_then(|k| inner.keys.get_mut(k)) else {
        inner.unauthorized += 1;
        return unauthorized();
    };
    state.stats.requests += 1;
    state.stats.successful_requests += 1;
    let renewal = chrono::Utc::now() + chrono::Duration::days(30);
    let body = json!({
        "error": false,
        "response": {
            "current_plan": state.config.plan.display_name(),
            "current_team_members": 1,
            "remaining_credits": state.credits,
            "used_credits": state.used_credits,
            "next_quota_renewal_days": 30,
            "next_quota_renewal_date": renewal.format("%Y-%m-%dT%H:%M:%S").to_string(),
        }
    });
    let quota = state.quota.report(now);
    respond(
        Answer {
            status: StatusCode::OK,
            body,
        },
        Some(quota),
    )
}

async fn sandbox_stats(State(shared): State<Arc<Shared>>) -> Json<SandboxStats> {
    Json(shared.stats())
}

#[derive(Deserialize)]
struct ClockRequest {
    advance_seconds: f64,
}

/// Moves the sandbox's clock forward, so tests can reach the end of a rate-limit window
/// without waiting for it.
async fn sandbox_clock(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    // At most ten years: a clock moved further could overflow.
    const MAX_ADVANCE: Duration = Duration::from_secs(10 * 365 * 86_400);
    let advance = serde_json::from_slice::<ClockRequest>(&body)
        .ok()
        .and_then(|r| Duration::try_from_secs_f64(r.advance_seconds).ok())
        .filter(|d| *d <= MAX_ADVANCE);
    match advance {
        Some(advance) => {
            shared.advance_clock(advance);
            Json(json!({"error": false})).into_response()
        }
        None => respond(
            Answer::error(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                "expected {\"advance_seconds\": <a number of seconds from 0 to ten years>}",
            ),
            None,
        ),
    }
}

async fn not_found() -> Response {
    respond(
        Answer::error(
            StatusCode::NOT_FOUND,
            ErrorCode::Other("NOT_FOUND".into()),
            "no such endpoint",
        ),
        None,
    )
}

/// A connection's handle, given to handlers so a fault can drop the connection.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    kill: Arc<AtomicBool>,
}

impl Connection {
    /// Closes the connection without writing a response.
    fn kill(&self) {
        self.kill.store(true, Ordering::SeqCst);
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, KillableListener>>
    for Connection
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, KillableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TCP listener whose connections can be dropped by the handler serving them.
pub(crate) struct KillableListener(pub(crate) TcpListener);

impl axum::serve::Listener for KillableListener {
    type Io = KillableStream;
    type Addr = Connection;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let kill = Arc::new(AtomicBool::new(false));
                    let conn = Connection { kill: kill.clone() };
                    return (KillableStream { stream, kill }, conn);
                }
                // Out of file descriptors or a connection reset while queued: wait a little
                // and go on, as axum's own listener does.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Err(io::Error::other("use KillableListener::addr"))
    }
}

impl KillableListener {
    pub(crate) fn addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A TCP stream that fails every write once killed, so the server closes it without a byte of
/// response: to the client, a connection dropped mid-request.
pub(crate) struct KillableStream {
    stream: TcpStream,
    kill: Arc<AtomicBool>,
}

impl KillableStream {
    fn killed(&self) -> bool {
        self.kill.load(Ordering::SeqCst)
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.killed() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.killed() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.killed() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

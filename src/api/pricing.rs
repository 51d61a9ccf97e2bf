//! Pricing: mapping an answer back to the records of its request and assigning each match its
//! cost, so that the costs always sum to the request's `total_cost` (reference, "Pricing");
//! the job's credit budget.
//!
//! Costs: 1 per match, 10 per match with a revealed mobile, 0 for a free re-enrichment and
//! everything else. When a request's `total_cost` differs from that sum, the other reading of
//! the vendor's uncertain rule (10 for an `enrich_mobile` match that found no mobile) is tried;
//! if neither explains it, the difference is assigned to the matched records in request order —
//! a surplus to the first match (with nothing matched, no record carries it: it counts in the
//! totals only), a shortfall taken from the first matches down to 0 — and counted in
//! [`Tally::cost_warnings`](crate::api::Tally::cost_warnings).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::vendor::outcome::{Match, RecordOutcome};
use crate::vendor::wire::{BulkEnrichResponse, EnrichFlags, MatchedRecord};

/// The most `records` records can cost with these flags: every one a match, with a mobile when
/// mobiles are asked for.
pub(crate) fn worst_case(records: usize, flags: EnrichFlags) -> i64 {
    records as i64 * if flags.reveals_mobile() { 10 } else { 1 }
}

/// The job's credit budget (`max_credits`): requests in flight reserve their worst case, so
/// concurrent requests together never pass it.
#[derive(Debug, Default)]
pub(crate) struct CreditBudget {
    max_credits: Option<i64>,
    /// Worst-case credits of requests in flight.
    reserved: AtomicI64,
    /// Worst-case credits of answers lost after the API processed them: charged or not, no
    /// `total_cost` says, so they count as spent (an upper bound) for good.
    unconfirmed: AtomicI64,
}

impl CreditBudget {
    /// A budget of `max_credits` (`None`: no limit).
    pub(crate) fn new(max_credits: Option<i64>) -> Arc<Self> {
        Arc::new(CreditBudget {
            max_credits,
            reserved: AtomicI64::new(0),
            unconfirmed: AtomicI64::new(0),
        })
    }

    /// Counts `worst_case` credits of a lost answer as spent: the budget never trusts that an
    /// answer it could not read was free.
    pub(crate) fn lost(&self, worst_case: i64) {
        self.unconfirmed.fetch_add(worst_case, Ordering::SeqCst);
    }

    /// Reserves `worst_case` credits on top of the ones `spent` reads; `None` when they do not
    /// fit. The reservation lasts as long as the guard (until the request's real cost is
    /// counted). `spent` is read after the reservation is made: a request settling meanwhile is
    /// then counted twice (spent and reserved), never not at all.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        worst_case: i64,
        spent: impl FnOnce() -> i64,
    ) -> Option<BudgetGuard> {
        let Some(budget) = self.max_credits else {
            return Some(BudgetGuard {
                budget: None,
                credits: 0,
            });
        };
        let reserved = self.reserved.fetch_add(worst_case, Ordering::SeqCst) + worst_case;
        if spent() + self.unconfirmed.load(Ordering::SeqCst) + reserved > budget {
            self.reserved.fetch_sub(worst_case, Ordering::SeqCst);
            return None;
        }
        Some(BudgetGuard {
            budget: Some(self.clone()),
            credits: worst_case,
        })
    }
}

/// Returns reserved credits when dropped.
#[derive(Debug)]
pub(crate) struct BudgetGuard {
    budget: Option<Arc<CreditBudget>>,
    credits: i64,
}

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.reserved.fetch_sub(self.credits, Ordering::SeqCst);
        }
    }
}

/// Maps a response back to the `n` records of the request (identifiers `r0`..), by identifier
/// only, and assigns costs. Returns the outcomes and whether the cost needed a correction.
pub(crate) fn reconcile(n: usize, response: BulkEnrichResponse, flags: EnrichFlags) -> Reconciled {
    let index = |identifier: &str| -> Option<usize> {
        identifier
            .strip_prefix('r')
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|i| *i < n && format!("r{i}") == identifier)
    };
    let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; n];
    let mut listed = vec![0u32; n];
    let mut unknown = Vec::new();
    let mut place = |identifier: &str, outcome: RecordOutcome| match index(identifier) {
        Some(i) => {
            listed[i] += 1;
            outcomes[i] = Some(outcome);
        }
        None => unknown.push(identifier.to_string()),
    };
    for matched in response.matched {
        let MatchedRecord {
            identifier,
            free_enrichment,
            person,
            company,
            ..
        } = matched;
        place(
            &identifier,
            RecordOutcome::Matched(Box::new(Match {
                person,
                company,
                free_enrichment: free_enrichment.unwrap_or(false),
                cost: 0,
            })),
        );
    }
    for identifier in &response.not_matched {
        place(identifier, RecordOutcome::NotMatched);
    }
    for identifier in &response.invalid_datapoints {
        place(identifier, RecordOutcome::InvalidDatapoints);
    }
    if !unknown.is_empty() {
        tracing::warn!(
            ?unknown,
            "the API's answer names identifiers that were not sent; ignored"
        );
    }
    let unanswered: Vec<usize> = (0..n).filter(|&i| listed[i] == 0).collect();
    let mut outcomes: Vec<RecordOutcome> = outcomes
        .into_iter()
        .zip(&listed)
        .map(|(outcome, &times)| match (outcome, times) {
            (Some(outcome), 1) => outcome,
            (_, 0) => RecordOutcome::Failed {
                reason: UNANSWERED.into(),
            },
            (_, _) => RecordOutcome::Failed {
                reason: "the API's answer listed this record more than once".into(),
            },
        })
        .collect();
    // Records left out were processed, and may be in `total_cost`: what the documented prices
    // of the answered matches do not explain is theirs (asked again, they come back free), not
    // a surplus of the others.
    let total_cost = match unanswered.is_empty() {
        true => response.total_cost,
        false => response
            .total_cost
            .min(documented_sum(&outcomes, flags, false)),
    };
    let warning = assign_costs(&mut outcomes, total_cost, flags);
    Reconciled {
        outcomes,
        warning,
        unexplained: response.total_cost - total_cost,
        unanswered,
    }
}

/// Why a record the answer never mentioned failed, once asking again is no longer allowed.
pub(crate) const UNANSWERED: &str = "the API's answer did not mention this record";

/// An answer mapped back onto the request's records.
#[derive(Debug)]
pub(crate) struct Reconciled {
    /// One outcome per record, in request order, costs assigned.
    pub outcomes: Vec<RecordOutcome>,
    /// The documented prices did not explain `total_cost` (see [`assign_costs`]).
    pub warning: bool,
    /// Records the answer did not mention (failed in `outcomes` until asked again): the server
    /// processed them, their answer was lost.
    pub unanswered: Vec<usize>,
    /// The part of `total_cost` the answered records' prices do not explain when records were
    /// left out: theirs, carried by the first of them that matches when asked again.
    pub unexplained: i64,
}

/// A match's documented price: 0 for a free re-enrichment, 10 with a revealed mobile (or, in
/// the other reading of the vendor's uncertain rule, for any `enrich_mobile` match), else 1.
fn price(m: &Match, flags: EnrichFlags, mobile_attempts_cost_10: bool) -> i64 {
    if m.free_enrichment {
        return 0;
    }
    let revealed = m
        .person
        .as_ref()
        .and_then(|p| p.mobile.as_ref())
        .is_some_and(|mobile| mobile.revealed == Some(true) && mobile.mobile.is_some());
    if revealed || (mobile_attempts_cost_10 && flags.reveals_mobile()) {
        10
    } else {
        1
    }
}

/// The documented prices of the matches in `outcomes`, summed.
fn documented_sum(outcomes: &[RecordOutcome], flags: EnrichFlags, reading: bool) -> i64 {
    outcomes
        .iter()
        .filter_map(|o| match o {
            RecordOutcome::Matched(m) => Some(price(m, flags, reading)),
            _ => None,
        })
        .sum()
}

/// Sets each match's cost so that they sum to `total_cost` (see the module docs).
/// Returns whether the documented prices had to be corrected.
pub(crate) fn assign_costs(
    outcomes: &mut [RecordOutcome],
    total_cost: i64,
    flags: EnrichFlags,
) -> bool {
    let price = |m: &Match, reading: bool| price(m, flags, reading);
    let sum_with =
        |outcomes: &[RecordOutcome], reading: bool| documented_sum(outcomes, flags, reading);
    // The other reading of the uncertain rule, only when it alone explains the total.
    let reading = sum_with(outcomes, false) != total_cost && sum_with(outcomes, true) == total_cost;
    for outcome in outcomes.iter_mut() {
        if let RecordOutcome::Matched(m) = outcome {
            m.cost = price(m, reading);
        }
    }
    let mut difference = total_cost - sum_with(outcomes, reading);
    if difference == 0 {
        return false;
    }
    let mut matches = outcomes.iter_mut().filter_map(|o| match o {
        RecordOutcome::Matched(m) => Some(m),
        _ => None,
    });
    if difference > 0 {
        if let Some(first) = matches.next() {
            first.cost += difference;
        }
        // With nothing matched there is no record to carry a charge; the request's total still
        // counts in the totals and the warning says so.
    } else {
        for m in matches {
            let taken = m.cost.min(-difference);
            m.cost -= taken;
            difference += taken;
            if difference == 0 {
                break;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vendor::outcome::RecordStatus;
    use crate::vendor::wire::{Person, PersonMobile};

    fn matched(id: &str, free: Option<bool>, mobile: bool) -> MatchedRecord {
        MatchedRecord {
            identifier: id.into(),
            free_enrichment: free,
            person: Some(Person {
                mobile: Some(PersonMobile {
                    revealed: Some(mobile),
                    mobile: mobile.then(|| "+15550000000".to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            company: None,
            extra: Default::default(),
        }
    }

    fn costs(outcomes: &[RecordOutcome]) -> Vec<i64> {
        outcomes.iter().map(RecordOutcome::cost).collect()
    }

    #[test]
    fn records_are_reconciled_by_identifier_whatever_the_order() {
        let response = BulkEnrichResponse {
            total_cost: 11,
            matched: vec![matched("r3", None, true), matched("r0", Some(false), false)],
            not_matched: vec!["r1".into()],
            invalid_datapoints: vec!["r2".into()],
            ..Default::default()
        };
        let Reconciled {
            outcomes, warning, ..
        } = reconcile(4, response, EnrichFlags::default());
        assert!(!warning);
        let statuses: Vec<_> = outcomes.iter().map(RecordOutcome::status).collect();
        assert_eq!(
            statuses,
            [
                RecordStatus::Matched,
                RecordStatus::NotMatched,
                RecordStatus::InvalidDatapoints,
                RecordStatus::Matched
            ]
        );
        assert_eq!(costs(&outcomes), [1, 0, 0, 10]);
    }

    #[test]
    fn contract_breaches_fail_the_affected_records_only() {
        let response = BulkEnrichResponse {
            total_cost: 1,
            matched: vec![matched("r0", None, false), matched("zz", None, false)],
            not_matched: vec!["r1".into(), "r1".into()],
            ..Default::default()
        };
        let Reconciled {
            outcomes,
            unanswered,
            ..
        } = reconcile(3, response, EnrichFlags::default());
        assert_eq!(outcomes[0].status(), RecordStatus::Matched);
        assert_eq!(
            unanswered,
            [2],
            "a record the answer left out is asked again"
        );
        assert!(
            matches!(&outcomes[1], RecordOutcome::Failed { reason } if reason.contains("more than once"))
        );
        assert!(
            matches!(&outcomes[2], RecordOutcome::Failed { reason } if reason.contains("did not mention"))
        );
    }

    #[test]
    fn costs_always_sum_to_the_total_cost() {
        let flags = EnrichFlags {
            enrich_mobile: true,
            ..Default::default()
        };
        // Free re-enrichment flagged: 0.
        let response = BulkEnrichResponse {
            total_cost: 10,
            matched: vec![
                matched("r0", Some(true), true),
                matched("r1", Some(false), true),
            ],
            ..Default::default()
        };
        let Reconciled {
            outcomes, warning, ..
        } = reconcile(2, response, flags);
        assert_eq!((costs(&outcomes), warning), (vec![0, 10], false));
        // The other reading: an enrich_mobile match without a mobile costs 10.
        let response = BulkEnrichResponse {
            total_cost: 20,
            matched: vec![matched("r0", None, false), matched("r1", None, true)],
            ..Default::default()
        };
        let Reconciled {
            outcomes, warning, ..
        } = reconcile(2, response, flags);
        assert_eq!((costs(&outcomes), warning), (vec![10, 10], false));
        // Unexplained shortfall (free re-enrichments not flagged): taken from the first matches.
        let response = BulkEnrichResponse {
            total_cost: 1,
            matched: vec![
                matched("r0", None, false),
                matched("r1", None, false),
                matched("r2", None, false),
            ],
            ..Default::default()
        };
        let Reconciled {
            outcomes, warning, ..
        } = reconcile(3, response, EnrichFlags::default());
        assert_eq!((costs(&outcomes), warning), (vec![0, 0, 1], true));
        // Unexplained surplus: on the first match.
        let response = BulkEnrichResponse {
            total_cost: 5,
            matched: vec![matched("r1", None, false), matched("r0", None, false)],
            not_matched: vec![],
            ..Default::default()
        };
        let Reconciled {
            outcomes, warning, ..
        } = reconcile(2, response, EnrichFlags::default());
        assert_eq!((costs(&outcomes), warning), (vec![4, 1], true));
    }
}

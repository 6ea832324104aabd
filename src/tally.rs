//! Rows per domain, per mail provider and per syntax problem, for the report, in bounded
//! memory: a 10M-row file may hold millions of domains, and the report only needs the ones
//! that matter.
//!
//! Domains and providers are counted with the Space-Saving heavy-hitters algorithm (Metwally,
//! Agrawal, El Abbadi, 2005): a table of at most `capacity` names; a name not in a full table
//! takes the place of the one with the smallest count and inherits that count as its possible
//! error. What it guarantees, with N rows counted and capacity k:
//! - every name seen more than N/k times is in the table at the end;
//! - a name's `rows` (its rows since it last entered the table) never overstate it, and its
//!   true count is at most `rows + missed_at_most`;
//! - while fewer than k distinct names have been seen, every count is exact (`exact: true`).
//!
//! The verdict mix of a name is counted over its `rows`. Rows of names outside the reported
//! top go to `other`, so the top and `other` add up to every row counted.

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use serde::Serialize;

use crate::plan::Outcome;
use crate::schema::STATUSES;

/// Distinct domains kept (about 200 bytes each with the index: some 400 KB in all).
pub const DOMAINS_KEPT: usize = 2048;
/// Distinct mail providers kept.
pub const PROVIDERS_KEPT: usize = 256;
/// Domains and providers listed in the report.
pub const DOMAINS_REPORTED: usize = 50;
pub const PROVIDERS_REPORTED: usize = 20;
/// A provider name longer than this is cut (the server chooses it; it must not grow memory).
const NAME_MAX: usize = 100;

type Counts = [u64; STATUSES.len()];

/// The list's profile for the report: rows per domain, per mail provider and per syntax
/// problem. The writer alone adds; the summary reads it at the end.
#[derive(Debug)]
pub struct Profile {
    /// Rows whose address passed the syntax check, by domain.
    pub domains: TopK,
    /// Rows with an answer, by the answer's `mx_provider` ("" when it gave none).
    pub providers: TopK,
    /// Syntax rejects by reason.
    pub syntax: BTreeMap<&'static str, u64>,
}

impl Default for Profile {
    fn default() -> Profile {
        Profile {
            domains: TopK::new(DOMAINS_KEPT),
            providers: TopK::new(PROVIDERS_KEPT),
            syntax: BTreeMap::new(),
        }
    }
}

impl Profile {
    /// Counts one written row; `status` indexes [`STATUSES`].
    pub fn add(&mut self, normalized: &str, outcome: &Outcome, status: usize) {
        let domain = crate::address::split_last(normalized, b'@').map_or("", |(_, d)| d);
        match outcome {
            Outcome::Empty => {}
            Outcome::Syntax(reason) => *self.syntax.entry(reason).or_insert(0) += 1,
            Outcome::Error { .. } => self.domains.add(domain, status),
            Outcome::Answer { answer, .. } => {
                self.domains.add(domain, status);
                let provider = answer.domain.mx_provider.as_deref().unwrap_or("").trim();
                self.providers.add(cut(provider), status);
            }
        }
    }
}

fn cut(name: &str) -> &str {
    if name.len() <= NAME_MAX {
        return name;
    }
    let mut end = NAME_MAX;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// A Space-Saving table of names and their verdict counts.
#[derive(Debug)]
pub struct TopK {
    capacity: usize,
    /// Entries by name: each entry's index, found by the name's hash. The entry keeps its
    /// hash, so a name that makes room is taken out without hashing it again, and its buffer
    /// takes the new name (issue 15: with more domains than the table holds, a name replaced
    /// on every row cost three hashes, an allocation and a free each time).
    index: HashTable<usize>,
    /// foldhash: SipHash was a tenth of the writer's CPU on a list of many domains.
    hasher: foldhash::fast::RandomState,
    entries: Vec<Entry>,
    /// Entries that had the smallest estimate, `smallest_at`, at the last scan: the next ones
    /// to replace.
    smallest: Vec<usize>,
    smallest_at: u64,
    /// Every row counted, per status.
    all: Counts,
    /// A name ever had to make room for another.
    replaced: bool,
}

#[derive(Debug)]
struct Entry {
    name: String,
    hash: u64,
    /// Rows since the name entered the table, per status.
    counts: Counts,
    rows: u64,
    /// The count inherited on entry: at most this many of its rows were missed.
    missed: u64,
}

impl Entry {
    /// The Space-Saving estimate, never below the true count.
    fn estimate(&self) -> u64 {
        self.rows + self.missed
    }
}

impl TopK {
    pub fn new(capacity: usize) -> TopK {
        TopK {
            capacity: capacity.max(1),
            index: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            entries: Vec::new(),
            smallest: Vec::new(),
            smallest_at: 0,
            all: [0; STATUSES.len()],
            replaced: false,
        }
    }

    pub fn add(&mut self, name: &str, status: usize) {
        self.all[status] += 1;
        let hash = self.hasher.hash_one(name);
        let entries = &self.entries;
        let i = match self.index.find(hash, |&i| entries[i].name == name) {
            Some(&i) => i,
            None if self.entries.len() < self.capacity => {
                self.entries.push(Entry {
                    name: name.to_owned(),
                    hash,
                    counts: [0; STATUSES.len()],
                    rows: 0,
                    missed: 0,
                });
                let entries = &self.entries;
                self.index
                    .insert_unique(hash, entries.len() - 1, |&i| entries[i].hash);
                entries.len() - 1
            }
            None => {
                let i = self.smallest_entry();
                if let Ok(old) = self.index.find_entry(self.entries[i].hash, |&j| j == i) {
                    old.remove();
                }
                self.replaced = true;
                let entry = &mut self.entries[i];
                entry.name.clear();
                entry.name.push_str(name);
                entry.hash = hash;
                entry.missed = entry.estimate();
                entry.counts = [0; STATUSES.len()];
                entry.rows = 0;
                let entries = &self.entries;
                self.index.insert_unique(hash, i, |&j| entries[j].hash);
                i
            }
        };
        let entry = &mut self.entries[i];
        entry.counts[status] += 1;
        entry.rows += 1;
    }

    /// An entry with the smallest estimate. Candidates come from one scan and are used until
    /// none is left at that estimate (estimates only grow), so a stream of new names costs one
    /// scan per `capacity` names, not one per name.
    fn smallest_entry(&mut self) -> usize {
        loop {
            let Some(&i) = self.smallest.last() else {
                let min = self.entries.iter().map(Entry::estimate).min().unwrap_or(0);
                self.smallest = (0..self.entries.len())
                    .rev()
                    .filter(|&i| self.entries[i].estimate() == min)
                    .collect();
                self.smallest_at = min;
                continue;
            };
            self.smallest.pop();
            // Nothing counted for it since the scan: it is still among the smallest (the
            // others were larger then, and estimates only grow).
            if self.entries[i].estimate() == self.smallest_at {
                return i;
            }
        }
    }

    /// The `n` names with the most rows, and the rest as `other`.
    pub fn report(&self, n: usize) -> Breakdown {
        let mut order: Vec<&Entry> = self.entries.iter().collect();
        order.sort_by(|a, b| b.rows.cmp(&a.rows).then_with(|| a.name.cmp(&b.name)));
        order.truncate(n);
        let mut rest = self.all;
        for entry in &order {
            for (r, c) in rest.iter_mut().zip(entry.counts) {
                *r -= c;
            }
        }
        Breakdown {
            exact: !self.replaced,
            top: order
                .into_iter()
                .map(|e| Named {
                    name: e.name.to_string(),
                    rows: e.rows,
                    statuses: by_status(&e.counts),
                    missed_at_most: e.missed,
                })
                .collect(),
            other: Group {
                rows: rest.iter().sum(),
                statuses: by_status(&rest),
            },
        }
    }
}

fn by_status(counts: &Counts) -> BTreeMap<&'static str, u64> {
    STATUSES
        .iter()
        .zip(counts)
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| (*s, *n))
        .collect()
}

/// Rows per name, as the report gives them.
#[derive(Debug, Clone, Serialize)]
pub struct Breakdown {
    /// Every count is exact (fewer distinct names than the table holds were seen).
    pub exact: bool,
    /// The names with the most rows, most first.
    pub top: Vec<Named>,
    /// Every other row counted.
    pub other: Group,
}

#[derive(Debug, Clone, Serialize)]
pub struct Named {
    pub name: String,
    pub rows: u64,
    /// Rows per status (only the statuses seen).
    pub statuses: BTreeMap<&'static str, u64>,
    /// The name may have had up to this many more rows (0 when exact).
    pub missed_at_most: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub rows: u64,
    pub statuses: BTreeMap<&'static str, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Status;
    use crate::plan::Source;
    use crate::store::{Answer, Domain};
    use std::collections::HashMap;
    use std::sync::Arc;

    const VALID: usize = 0;
    const INVALID: usize = 4;

    #[test]
    fn exact_while_the_table_has_room() {
        let mut t = TopK::new(4);
        for (name, status) in [("a", VALID), ("b", VALID), ("a", INVALID), ("c", VALID)] {
            t.add(name, status);
        }
        let r = t.report(2);
        assert!(r.exact);
        let top: Vec<_> = r.top.iter().map(|n| (n.name.as_str(), n.rows)).collect();
        assert_eq!(top, [("a", 2), ("b", 1)]);
        assert_eq!(
            r.top[0].statuses,
            BTreeMap::from([("valid", 1), ("invalid", 1)])
        );
        assert_eq!((r.other.rows, r.other.statuses["valid"]), (1, 1));
    }

    /// The heavy hitters survive a flood of names seen once, their counts are lower bounds
    /// within the stated error, and everything adds up.
    #[test]
    fn heavy_hitters_survive_a_flood_of_one_off_names() {
        let mut t = TopK::new(100);
        let mut truth: HashMap<String, u64> = HashMap::new();
        for i in 0..200_000u64 {
            let name = match i % 10 {
                0..=2 => "big.com".to_owned(),
                3 => "mid.com".to_owned(),
                4 if i % 20 == 4 => "small.com".to_owned(),
                _ => format!("x{i}.com"),
            };
            *truth.entry(name.clone()).or_default() += 1;
            t.add(&name, if i % 7 == 0 { INVALID } else { VALID });
        }
        assert!(t.entries.len() <= 100 && t.index.len() == t.entries.len());
        // After some 180,000 replacements every entry is found by its name, and only there.
        for (i, entry) in t.entries.iter().enumerate() {
            let hash = t.hasher.hash_one(entry.name.as_str());
            assert_eq!(
                t.index.find(hash, |&j| t.entries[j].name == entry.name),
                Some(&i)
            );
        }
        let r = t.report(3);
        assert!(!r.exact);
        let names: Vec<_> = r.top.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["big.com", "mid.com", "small.com"]);
        for n in &r.top {
            let true_count = truth[&n.name];
            assert!(n.rows <= true_count, "{n:?} overstates {true_count}");
            assert!(
                true_count <= n.rows + n.missed_at_most,
                "{n:?} vs {true_count}"
            );
            assert_eq!(n.statuses.values().sum::<u64>(), n.rows);
        }
        // Guarantee: missed at most N/k.
        assert!(r.top.iter().all(|n| n.missed_at_most <= 200_000 / 100));
        let total: u64 = r.top.iter().map(|n| n.rows).sum::<u64>() + r.other.rows;
        assert_eq!(total, 200_000);
    }

    #[test]
    fn rows_are_sorted_into_domains_providers_and_reasons() {
        let mut t = Profile::default();
        let answer = |provider: Option<&str>| Outcome::Answer {
            answer: Arc::new(Answer {
                status: Some(Status::Valid),
                domain: Arc::new(Domain {
                    mx_provider: provider.map(str::to_owned),
                    ..Domain::default()
                }),
                ..Answer::default()
            }),
            source: Source::Api,
        };
        t.add("a@x.com", &answer(Some("Google")), VALID);
        t.add("b@x.com", &answer(None), VALID);
        t.add("c@y.com", &answer(Some(&"p".repeat(5000))), VALID);
        t.add("", &Outcome::Empty, 5);
        t.add("jane@", &Outcome::Syntax("nothing after @"), INVALID);
        t.add(
            "d@z.com",
            &Outcome::Error {
                message: "down".into(),
            },
            6,
        );
        let domains = t.domains.report(10);
        let names: Vec<_> = domains
            .top
            .iter()
            .map(|n| (n.name.as_str(), n.rows))
            .collect();
        assert_eq!(names, [("x.com", 2), ("y.com", 1), ("z.com", 1)]);
        let providers = t.providers.report(10);
        assert_eq!(providers.top.len(), 3);
        assert!(providers.top.iter().all(|n| n.name.len() <= NAME_MAX));
        assert!(providers.top.iter().any(|n| n.name.is_empty()));
        assert_eq!(t.syntax, BTreeMap::from([("nothing after @", 1)]));
        assert_eq!(cut("ééé"), "ééé");
        assert!(cut(&"é".repeat(100)).len() <= NAME_MAX);
    }
}

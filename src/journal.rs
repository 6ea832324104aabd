//! The job record's one writer. A run of a job written to a file keeps its record up to date
//! here and nowhere else: stamped with the run's id at the start, the watermark and totals at
//! every checkpoint (for the writer, see [`crate::output`]), and how the run ended, with a
//! complete run's file sums and report, at the end.
//!
//! The totals are the job's, all runs together: the calls and statuses of earlier runs plus
//! this run's counters, and what the [`Ledger`] says the job may have been charged.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::durable::FileSum;
use crate::ledger::Ledger;
use crate::report::Counters;
use crate::store::{JobRecord, JobState, Store, Watermark};

pub struct Journal {
    store: Arc<Store>,
    id: [u8; 16],
    record: JobRecord,
    /// Earlier runs' calls and statuses, to which this run's are added.
    calls_before: u64,
    counts_before: BTreeMap<String, u64>,
    counters: Arc<Counters>,
    ledger: Arc<Ledger>,
}

impl Journal {
    /// Stamps the record with this run's id, on disk before the first answer of this run is:
    /// answers are durable the moment they are put, and a resume tells its own (`api`) from
    /// earlier ones (`cache`) by the run id in this record.
    pub async fn start(
        store: Arc<Store>,
        id: [u8; 16],
        mut record: JobRecord,
        run: u64,
        counters: Arc<Counters>,
        ledger: Arc<Ledger>,
    ) -> anyhow::Result<Journal> {
        record.run = run;
        store.save_job(&id, &record)?;
        let journal = Journal {
            store,
            id,
            calls_before: record.api_calls,
            counts_before: record.counts.clone(),
            record,
            counters,
            ledger,
        };
        journal.flush().await?;
        Ok(journal)
    }

    /// Records a checkpoint: the watermark and the totals, written to the store (flushed by
    /// [`Journal::flush`]).
    pub fn checkpoint(&mut self, watermark: Watermark) -> anyhow::Result<()> {
        self.record.watermark = watermark;
        self.save()
    }

    /// Makes what was recorded durable (off the async workers: it syncs).
    pub async fn flush(&self) -> anyhow::Result<()> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.flush()).await?
    }

    /// Records how the run ended; a complete run with its files' sums and its report.
    pub fn end(
        mut self,
        state: JobState,
        finished: Option<(Vec<FileSum>, String)>,
    ) -> anyhow::Result<()> {
        self.record.state = state;
        if let Some((files, report)) = finished {
            self.record.files = files;
            self.record.report = Some(report);
        }
        self.save()
    }

    /// Forgets the job: its input was at fault, and a fixed file starts afresh.
    pub fn forget(self) -> anyhow::Result<()> {
        self.store.remove_job(&self.id)
    }

    fn save(&mut self) -> anyhow::Result<()> {
        let record = &mut self.record;
        record.updated_at = crate::clock::now();
        record.api_calls = self.calls_before + self.counters.api_calls();
        record.credits_spent = self.ledger.spent();
        let mut all = self.counts_before.clone();
        for (status, n) in self.counters.status_counts() {
            *all.entry(status.to_owned()).or_default() += n;
        }
        all.retain(|_, n| *n > 0);
        record.counts = all;
        self.store.save_job(&self.id, record)
    }
}

//! `mailsift credits` and `mailsift check`: the small commands a user tries a key with.
//!
//! `check` goes through the same steps as a bulk run, on a handful of addresses: the same
//! normalisation and local syntax check (nothing is paid for an address that fails it), the
//! same dedupe key (Unicode case folded), the same answer cache as `validate` (an address
//! answered earlier and still fresh is not paid for again; what `check` pays for is cached for
//! later runs), one request per distinct address, retries for what is worth retrying; and the
//! same typo suggestion as the `email_suggestion` column.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::address::{self, Checked};
use crate::api::Api;
use crate::cell;
use crate::client::{ApiError, Status};
use crate::exit::Exit;
use crate::plan::Freshness;
use crate::retry::RetryPolicy;
use crate::schema::format_credits;
use crate::store::{Answer, Domain, Store};

/// Prints the balance.
pub async fn credits(api: &Api, json: bool) -> anyhow::Result<Exit> {
    let reply = api.client.first_contact().await?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&reply.body.raw)?)?;
    } else {
        writeln!(out, "{} credits", format_credits(reply.body.credits))?;
    }
    Ok(Exit::Ok)
}

/// One line of `check`'s answer.
#[derive(Debug, Serialize)]
pub struct CheckLine {
    pub address: String,
    pub normalized: String,
    pub status: String,
    pub message: String,
    pub credits_consumed: Option<f64>,
    pub mx_provider: Option<String>,
    pub mx_record: Option<String>,
    /// api, cache, duplicate, syntax or empty.
    pub source: &'static str,
    /// The address probably meant, for a domain that looks mistyped (`gmial.com`).
    pub suggestion: Option<String>,
}

/// Where `check` keeps and finds answers: the state directory `validate` uses. A directory in
/// use by a running job is not waited for, and one that cannot be opened does not stop a key
/// from being tried: the check goes on without the cache, and says why.
pub fn open_cache(dir: &Path) -> Option<Store> {
    let why = match Store::holder(dir) {
        Some(pid) => format!("it is in use (pid {pid})"),
        None => match Store::open(dir) {
            Ok(store) => return Some(store),
            Err(e) => format!("{e:#}"),
        },
    };
    tracing::warn!(
        "this check neither reads nor fills the answer cache in {}: {why}",
        dir.display()
    );
    None
}

/// Validates a few addresses and prints each verdict.
pub async fn check(
    api: &Api,
    addresses: &[String],
    json: bool,
    retry: RetryPolicy,
    cache: Option<&Store>,
    freshness: &Freshness,
    rules: address::Rules,
) -> anyhow::Result<Exit> {
    let mut results: Vec<CheckLine> = Vec::new();
    // Dedupe key -> the line that answered it.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut contacted = false;
    let run: u64 = rand::random();
    let now = crate::clock::now();
    // An argument holding several addresses (`"a@x.com; b@x.com"`, pasted from a CRM cell) is
    // cut the way `validate` cuts such a cell: each address gets its own line and is paid for
    // once, and at most as many of one argument are asked as of one cell.
    let addresses: Vec<String> = addresses
        .iter()
        .flat_map(|raw| match cell::several(raw.as_bytes()) {
            Some(pieces) => pieces
                .take(cell::MAX_ASKED)
                .map(|piece| String::from_utf8_lossy(piece).trim().to_owned())
                .collect(),
            None => vec![raw.clone()],
        })
        .collect();
    for raw in &addresses {
        let line = |normalized: String, status: &str, message: String, source| CheckLine {
            address: raw.clone(),
            normalized,
            status: status.to_owned(),
            message,
            credits_consumed: None,
            mx_provider: None,
            mx_record: None,
            source,
            suggestion: None,
        };
        let addr = match address::check_with(raw.as_bytes(), rules) {
            Checked::Empty => {
                results.push(line(
                    String::new(),
                    "missing",
                    "no address given".into(),
                    "empty",
                ));
                continue;
            }
            Checked::Invalid { normalized, reason } => {
                results.push(line(normalized, "invalid", reason.to_owned(), "syntax"));
                continue;
            }
            Checked::Valid(addr) => addr,
        };
        if let Some(&earlier) = seen.get(&addr.key) {
            let earlier = &results[earlier];
            results.push(CheckLine {
                address: raw.clone(),
                credits_consumed: Some(0.0),
                source: "duplicate",
                normalized: earlier.normalized.clone(),
                status: earlier.status.clone(),
                message: earlier.message.clone(),
                mx_provider: earlier.mx_provider.clone(),
                mx_record: earlier.mx_record.clone(),
                suggestion: None,
            });
            continue;
        }
        seen.insert(addr.key.clone(), results.len());
        let slot = cache.map(|store| (store, store.key(&addr.key)));
        let cached = match &slot {
            Some((store, key)) => store.get(key)?,
            None => None,
        };
        if let Some(answer) = cached.filter(|answer| freshness.is_fresh(answer, now)) {
            results.push(from_answer(
                raw,
                addr.normalized,
                answer,
                "cache",
                Some(0.0),
            ));
            continue;
        }
        if !contacted {
            contacted = true;
            // Free, and it finds a dead base URL, a redirect or a rejected key in seconds.
            if let Err(
                e @ (ApiError::KeyRejected { .. }
                | ApiError::Refused { .. }
                | ApiError::Unreachable { .. }),
            ) = api.client.first_contact().await
            {
                print(&mut results, json)?;
                return Err(e.into());
            }
        }
        let result = match ask(api, &addr.normalized, retry).await {
            Ok((verdict, charged)) => {
                let answer = Answer {
                    message: verdict.message.or_else(|| {
                        verdict
                            .status
                            .is_none()
                            .then(|| "the API's answer had no email_status".to_owned())
                    }),
                    status: Some(verdict.status.unwrap_or(Status::Unknown)),
                    domain: Arc::new(Domain {
                        mx_provider: verdict.mx_provider,
                        mx_record: verdict.mx_record,
                        company: verdict.company,
                    }),
                    is_catch_all: verdict.is_domain_catch_all,
                    credits: charged.unwrap_or(0.0),
                    checked_at: now,
                    run,
                    first_row: 0,
                };
                if let Some((store, key)) = &slot {
                    store.put(key, &answer)?;
                }
                from_answer(raw, addr.normalized, answer, "api", charged)
            }
            // The key, the balance or the endpoint concerns every address: stop here.
            Err(
                e @ (ApiError::KeyRejected { .. }
                | ApiError::OutOfCredits { .. }
                | ApiError::Refused { .. }),
            ) => {
                print(&mut results, json)?;
                return Err(e.into());
            }
            Err(e) => line(addr.normalized, "error", e.to_string(), "api"),
        };
        results.push(result);
    }
    print(&mut results, json)?;
    Ok(Exit::Ok)
}

fn from_answer(
    raw: &str,
    normalized: String,
    answer: Answer,
    source: &'static str,
    credits: Option<f64>,
) -> CheckLine {
    CheckLine {
        address: raw.to_owned(),
        normalized,
        status: answer
            .status
            .map_or_else(|| "unknown".to_owned(), |s| s.to_string()),
        message: answer.message.unwrap_or_default(),
        credits_consumed: credits,
        mx_provider: answer.domain.mx_provider.clone(),
        mx_record: answer.domain.mx_record.clone(),
        source,
        suggestion: None,
    }
}

/// The verdict and what it cost (`None`: the answer did not say).
async fn ask(
    api: &Api,
    address: &str,
    retry: RetryPolicy,
) -> Result<(crate::client::Verdict, Option<f64>), ApiError> {
    let mut attempt = 0;
    loop {
        match api.client.validate(address, attempt).await {
            Ok(reply) => {
                let charged = reply.body.credits_consumed.or(reply.meta.credits_cost);
                return Ok((reply.body, charged));
            }
            Err(e) if e.is_retryable() => {
                attempt += 1;
                match retry.delay(attempt, e.retry_after(), &mut rand::rng()) {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Prints the lines, each with its typo suggestion.
fn print(results: &mut [CheckLine], json: bool) -> anyhow::Result<()> {
    for r in results.iter_mut() {
        r.suggestion = address::suggest(&r.normalized);
    }
    // Verdicts in their colours on a terminal; anstream drops the escapes elsewhere.
    let mut out = anstream::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(results)?)?;
        return Ok(());
    }
    let width = results
        .iter()
        .map(|r| r.address.chars().count())
        .max()
        .unwrap_or(0);
    for r in results.iter() {
        let style = crate::term::verdict(&r.status);
        let pad = 15usize.saturating_sub(r.status.chars().count());
        let mut line = format!(
            "{:width$}  {style}{}{style:#}{:pad$}",
            r.address, r.status, ""
        );
        match r.credits_consumed {
            Some(c) => line.push_str(&format!("  credits {:<5}", format_credits(c))),
            None => line.push_str("               "),
        }
        if let Some(mx) = &r.mx_provider {
            line.push_str(&format!("  {mx}"));
        }
        if !r.message.is_empty() {
            line.push_str(&format!("  {}", r.message));
        }
        if let Some(suggestion) = &r.suggestion {
            line.push_str(&format!("  (did you mean {suggestion}?)"));
        }
        if r.source != "api" {
            line.push_str(&format!("  ({})", r.source));
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

//! `mailsift credits` and `mailsift check`: the small commands a user tries a key with.
//!
//! `check` goes through the same steps as a bulk run, on a handful of addresses: the local
//! syntax check first (nothing is paid for an address that fails it), one request per distinct
//! address, retries for what is worth retrying; and the same typo suggestion as the
//! `email_suggestion` column.

use std::io::Write;

use serde::Serialize;

use crate::address::{self, Checked};
use crate::api::Api;
use crate::client::ApiError;
use crate::exit::Exit;
use crate::output::format_credits;
use crate::retry::RetryPolicy;

/// Prints the balance.
pub async fn credits(api: &Api, json: bool) -> anyhow::Result<Exit> {
    let reply = api.client.credits().await?;
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
    /// api, syntax, empty or duplicate.
    pub source: &'static str,
    /// The address probably meant, for a domain that looks mistyped (`gmial.com`).
    pub suggestion: Option<String>,
}

/// Validates a few addresses and prints each verdict.
pub async fn check(
    api: &Api,
    addresses: &[String],
    json: bool,
    retry: RetryPolicy,
    rules: address::Rules,
) -> anyhow::Result<Exit> {
    let mut results: Vec<CheckLine> = Vec::new();
    for raw in addresses {
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
        let mut result = match address::check_with(raw.as_bytes(), rules) {
            Checked::Empty => line(String::new(), "missing", "no address given".into(), "empty"),
            Checked::Invalid { normalized, reason } => {
                line(normalized, "invalid", reason.to_owned(), "syntax")
            }
            Checked::Valid(addr) => {
                let earlier = results.iter().find(|r| {
                    r.source == "api" && r.normalized.eq_ignore_ascii_case(&addr.normalized)
                });
                if let Some(earlier) = earlier {
                    CheckLine {
                        address: raw.clone(),
                        credits_consumed: Some(0.0),
                        source: "duplicate",
                        normalized: earlier.normalized.clone(),
                        status: earlier.status.clone(),
                        message: earlier.message.clone(),
                        mx_provider: earlier.mx_provider.clone(),
                        mx_record: earlier.mx_record.clone(),
                        suggestion: None,
                    }
                } else {
                    match ask(api, &addr.normalized, retry).await {
                        Ok(verdict) => CheckLine {
                            address: raw.clone(),
                            normalized: addr.normalized,
                            status: verdict.status.map_or("unknown".into(), |s| s.to_string()),
                            message: verdict.message.unwrap_or_default(),
                            credits_consumed: verdict.credits_consumed,
                            mx_provider: verdict.mx_provider,
                            mx_record: verdict.mx_record,
                            source: "api",
                            suggestion: None,
                        },
                        // The key or the balance concerns every address: stop here.
                        Err(e @ (ApiError::KeyRejected { .. } | ApiError::OutOfCredits { .. })) => {
                            print(&results, json)?;
                            return Err(e.into());
                        }
                        Err(e) => line(addr.normalized, "error", e.to_string(), "api"),
                    }
                }
            }
        };
        result.suggestion = address::suggest(&result.normalized);
        results.push(result);
    }
    print(&results, json)?;
    Ok(Exit::Ok)
}

async fn ask(
    api: &Api,
    address: &str,
    retry: RetryPolicy,
) -> Result<crate::client::Verdict, ApiError> {
    let mut attempt = 0;
    loop {
        match api.client.validate(address).await {
            Ok(reply) => return Ok(reply.body),
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

fn print(results: &[CheckLine], json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(results)?)?;
        return Ok(());
    }
    let width = results
        .iter()
        .map(|r| r.address.chars().count())
        .max()
        .unwrap_or(0);
    for r in results {
        let mut line = format!("{:width$}  {:<15}", r.address, r.status);
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

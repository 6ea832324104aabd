//! The mock's answer for one address: the deterministic verdict function and the 200 body.
//!
//! Owns address normalisation (as the mock sees it), the FNV-1a hash every other deterministic
//! choice in the mock is derived from, the reserved test patterns, and the enrichment fields
//! (MX, company) of a successful answer. It must stay pure: no clock, no randomness, no state,
//! so a given address gets the same verdict in every run and every version of the mock.

use serde::Serialize;

/// What the mock answers for one address. The first five are `email_status` values of a 200
/// answer; the last two are the reserved error patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// `valid`: the mailbox exists. Charged.
    Valid,
    /// `valid_catch_all`: catch-all domain, but the address is believed real. Charged.
    ValidCatchAll,
    /// `catch_all`: the domain accepts everything. Free.
    CatchAll,
    /// `invalid`: the mailbox does not exist or the address is malformed. Charged.
    Invalid,
    /// `unknown`: no clear answer. Free.
    Unknown,
    /// Reserved prefix `reject`: a 400 validation error naming the address. Not charged.
    Reject,
    /// Reserved prefix `fail`: always a 500 (to exercise retry exhaustion). Not charged.
    Fail,
}

impl Verdict {
    /// The `email_status` string of a 200 answer, `None` for the error verdicts.
    pub fn email_status(self) -> Option<&'static str> {
        match self {
            Verdict::Valid => Some("valid"),
            Verdict::ValidCatchAll => Some("valid_catch_all"),
            Verdict::CatchAll => Some("catch_all"),
            Verdict::Invalid => Some("invalid"),
            Verdict::Unknown => Some("unknown"),
            Verdict::Reject | Verdict::Fail => None,
        }
    }

    /// Whether an answer with this verdict costs credits (per the API's billing table).
    pub fn is_charged(self) -> bool {
        matches!(
            self,
            Verdict::Valid | Verdict::ValidCatchAll | Verdict::Invalid
        )
    }

    fn message(self) -> &'static str {
        match self {
            Verdict::Valid => "Email is valid.",
            Verdict::ValidCatchAll => "Email is valid; the domain is catch-all.",
            Verdict::CatchAll => "Domain accepts all addresses; the mailbox cannot be verified.",
            Verdict::Invalid => "Email is invalid.",
            Verdict::Unknown => "Email status could not be determined.",
            Verdict::Reject | Verdict::Fail => "",
        }
    }
}

/// The mock's normalisation: surrounding whitespace trimmed, lower-cased. Dedupe counters,
/// verdicts and fault decisions are all keyed by this form.
pub(crate) fn normalize(address: &str) -> String {
    address.trim().to_lowercase()
}

/// 64-bit FNV-1a. Written out here (not taken from a crate) so that verdicts can never change
/// when a dependency is upgraded.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_continue(0xcbf2_9ce4_8422_2325, bytes)
}

/// Continues an FNV-1a hash over more bytes, so callers can hash several fields without
/// concatenating them into a new allocation.
pub(crate) fn fnv1a_continue(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The verdict the mock gives `address`, a pure function of the normalised address
/// (`trim`, then lower-case):
///
/// 1. not exactly one `@` → [`Verdict::Invalid`] (charged, as the current docs say);
/// 2. reserved local-part prefixes, checked in this order: `invalid` → Invalid,
///    `unknown` → Unknown, `catchall` (or the domain `catchall.test`) → CatchAll,
///    `vcatchall` → ValidCatchAll, `valid` → Valid, `reject` → Reject (400),
///    `fail` → Fail (500);
/// 3. otherwise `fnv1a_64(normalised) % 100`: 0–59 Valid, 60–69 ValidCatchAll,
///    70–79 CatchAll, 80–89 Invalid, 90–99 Unknown.
///
/// FNV-1a 64 uses offset basis `0xcbf29ce484222325` and prime `0x100000001b3` over the
/// UTF-8 bytes of the normalised address.
pub fn verdict_for(address: &str) -> Verdict {
    verdict_for_normalized(&normalize(address))
}

/// [`verdict_for`] on an address that is already normalised.
pub(crate) fn verdict_for_normalized(norm: &str) -> Verdict {
    let Some((local, domain)) = split_address(norm) else {
        return Verdict::Invalid;
    };
    // Order matters: "invalid" must win before "valid" could ever match a longer prefix, and
    // the domain rule sits with the catch-all prefix so it overrides the hash only.
    if local.starts_with("invalid") {
        Verdict::Invalid
    } else if local.starts_with("unknown") {
        Verdict::Unknown
    } else if local.starts_with("catchall") || domain == "catchall.test" {
        Verdict::CatchAll
    } else if local.starts_with("vcatchall") {
        Verdict::ValidCatchAll
    } else if local.starts_with("valid") {
        Verdict::Valid
    } else if local.starts_with("reject") {
        Verdict::Reject
    } else if local.starts_with("fail") {
        Verdict::Fail
    } else {
        match fnv1a(norm.as_bytes()) % 100 {
            0..=59 => Verdict::Valid,
            60..=69 => Verdict::ValidCatchAll,
            70..=79 => Verdict::CatchAll,
            80..=89 => Verdict::Invalid,
            _ => Verdict::Unknown,
        }
    }
}

/// Local part and domain, when the address has exactly one `@`.
fn split_address(norm: &str) -> Option<(&str, &str)> {
    let (local, domain) = norm.split_once('@')?;
    if domain.contains('@') {
        return None;
    }
    Some((local, domain))
}

/// The 200 body of a validation. Field names follow leadmagic-api.md; `_mock` is an extra
/// field no real answer has, so clients prove they ignore unknown fields.
#[derive(Debug, Serialize)]
pub(crate) struct ValidationBody<'a> {
    email: &'a str,
    email_status: &'static str,
    credits_consumed: f64,
    message: &'static str,
    is_domain_catch_all: bool,
    mx_record: Option<String>,
    mx_provider: Option<&'static str>,
    mx_security_gateway: bool,
    #[serde(flatten)]
    company: Option<Company>,
    _mock: bool,
}

#[derive(Debug, Serialize)]
struct Company {
    company_name: String,
    company_industry: &'static str,
    company_size: &'static str,
    company_type: &'static str,
    company_founded: u32,
    company_location: Location,
    company_linkedin_url: String,
}

#[derive(Debug, Serialize)]
struct Location {
    name: String,
    locality: &'static str,
    region: &'static str,
    country: &'static str,
    continent: &'static str,
    postal_code: &'static str,
}

/// Webmail domains: known MX, never company data (a person's mailbox says nothing about
/// an employer).
const GOOGLE: &[&str] = &["gmail.com", "googlemail.com"];
const MICROSOFT: &[&str] = &["outlook.com", "hotmail.com", "live.com", "msn.com"];

const INDUSTRIES: &[&str] = &[
    "Computer Software",
    "Financial Services",
    "Hospital & Health Care",
    "Retail",
    "Marketing & Advertising",
    "Construction",
    "Education Management",
    "Logistics & Supply Chain",
];
const SIZES: &[&str] = &[
    "1-10",
    "11-50",
    "51-200",
    "201-500",
    "501-1000",
    "1001-5000",
    "5001-10000",
    "10001+",
];
const TYPES: &[&str] = &[
    "Privately Held",
    "Public Company",
    "Partnership",
    "Self-Owned",
];
const PLACES: &[(&str, &str, &str, &str, &str)] = &[
    ("Austin", "Texas", "United States", "North America", "78701"),
    ("London", "England", "United Kingdom", "Europe", "EC1A 1BB"),
    ("Berlin", "Berlin", "Germany", "Europe", "10115"),
    ("Toronto", "Ontario", "Canada", "North America", "M5H 2N2"),
    ("Sydney", "New South Wales", "Australia", "Oceania", "2000"),
    ("Bengaluru", "Karnataka", "India", "Asia", "560001"),
];

/// Builds the 200 body for `email` (echoed as sent) with `verdict`, charging `charged`.
/// Returns `None` for the error verdicts, which have no 200 body.
pub(crate) fn validation_body<'a>(
    email: &'a str,
    norm: &str,
    verdict: Verdict,
    charged: f64,
) -> Option<ValidationBody<'a>> {
    let email_status = verdict.email_status()?;
    let domain = split_address(norm).map(|(_, d)| d).unwrap_or("");
    let (mx_record, mx_provider, mx_security_gateway) = mx_for(domain);
    let is_domain_catch_all =
        matches!(verdict, Verdict::CatchAll | Verdict::ValidCatchAll) || domain == "catchall.test";
    Some(ValidationBody {
        email,
        email_status,
        credits_consumed: charged,
        message: verdict.message(),
        is_domain_catch_all,
        mx_record,
        mx_provider,
        mx_security_gateway,
        company: company_for(domain),
        _mock: true,
    })
}

/// MX record, provider and security-gateway flag for a domain; chosen by hash for domains the
/// mock does not know, so the same domain always gets the same provider.
fn mx_for(domain: &str) -> (Option<String>, Option<&'static str>, bool) {
    if domain.is_empty() {
        return (None, None, false);
    }
    if GOOGLE.contains(&domain) {
        return (
            Some("aspmx.l.google.com".to_owned()),
            Some("Google Workspace"),
            false,
        );
    }
    let dashed = domain.replace('.', "-");
    if MICROSOFT.contains(&domain) {
        return (
            Some(format!("{dashed}.olc.protection.outlook.com")),
            Some("Microsoft 365"),
            false,
        );
    }
    let h = fnv1a(domain.as_bytes());
    match (h >> 16) % 6 {
        0 => (
            Some("aspmx.l.google.com".to_owned()),
            Some("Google Workspace"),
            false,
        ),
        1 => (
            Some(format!("{dashed}.mail.protection.outlook.com")),
            Some("Microsoft 365"),
            false,
        ),
        2 => (
            Some(format!("mx0a-{:08x}.pphosted.com", h as u32)),
            Some("Proofpoint"),
            true,
        ),
        3 => (
            Some("us-smtp-inbound-1.mimecast.com".to_owned()),
            Some("Mimecast"),
            true,
        ),
        4 => (Some("mx.zoho.com".to_owned()), Some("Zoho Mail"), false),
        _ => (Some(format!("mx.{domain}")), Some("Other"), false),
    }
}

/// Company enrichment for about half of the non-webmail domains (one hash bit decides).
fn company_for(domain: &str) -> Option<Company> {
    if domain.is_empty() || GOOGLE.contains(&domain) || MICROSOFT.contains(&domain) {
        return None;
    }
    let h = fnv1a(domain.as_bytes());
    if (h >> 8) & 1 == 0 {
        return None;
    }
    let label = domain.split('.').next().unwrap_or(domain);
    let mut name = String::with_capacity(label.len());
    let mut chars = label.chars();
    if let Some(first) = chars.next() {
        name.extend(first.to_uppercase());
        name.push_str(chars.as_str());
    }
    let pick = |salt: u32, n: usize| ((h >> salt) % n as u64) as usize;
    let (locality, region, country, continent, postal_code) = PLACES[pick(24, PLACES.len())];
    Some(Company {
        company_industry: INDUSTRIES[pick(32, INDUSTRIES.len())],
        company_size: SIZES[pick(40, SIZES.len())],
        company_type: TYPES[pick(44, TYPES.len())],
        company_founded: 1950 + (h >> 48) as u32 % 74,
        company_location: Location {
            name: format!("{locality}, {region}, {country}"),
            locality,
            region,
            country,
            continent,
            postal_code,
        },
        company_linkedin_url: format!("https://www.linkedin.com/company/{label}"),
        company_name: name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_vectors() {
        // Published FNV-1a 64 test vectors.
        let cases: &[(&str, u64)] = &[
            ("", 0xcbf2_9ce4_8422_2325),
            ("a", 0xaf63_dc4c_8601_ec8c),
            ("foobar", 0x8594_4171_f739_67e8),
        ];
        for (input, want) in cases {
            assert_eq!(fnv1a(input.as_bytes()), *want, "fnv1a({input:?})");
        }
    }

    #[test]
    fn reserved_patterns() {
        let cases: &[(&str, Verdict)] = &[
            ("invalid@x.com", Verdict::Invalid),
            ("invalid.someone@x.com", Verdict::Invalid),
            ("unknown1@x.com", Verdict::Unknown),
            ("catchall@x.com", Verdict::CatchAll),
            ("anyone@catchall.test", Verdict::CatchAll),
            // The catch-all domain outranks the later prefixes.
            ("valid@catchall.test", Verdict::CatchAll),
            ("invalid@catchall.test", Verdict::Invalid),
            ("vcatchall-7@x.com", Verdict::ValidCatchAll),
            ("valid@x.com", Verdict::Valid),
            ("validity@x.com", Verdict::Valid),
            ("reject@x.com", Verdict::Reject),
            ("fail-me@x.com", Verdict::Fail),
            // Normalisation: whitespace and case do not matter.
            ("  VALID@X.COM \n", Verdict::Valid),
            ("Reject@Example.org", Verdict::Reject),
            // Not exactly one '@': invalid, whatever the prefix.
            ("valid", Verdict::Invalid),
            ("", Verdict::Invalid),
            ("valid@a@b.com", Verdict::Invalid),
            ("fail@@x.com", Verdict::Invalid),
        ];
        for (address, want) in cases {
            assert_eq!(verdict_for(address), *want, "verdict_for({address:?})");
        }
    }

    #[test]
    fn hash_buckets_follow_the_documented_split() {
        for i in 0..2000 {
            let address = format!("person{i}@example{}.com", i % 7);
            let bucket = fnv1a(address.as_bytes()) % 100;
            let want = match bucket {
                0..=59 => Verdict::Valid,
                60..=69 => Verdict::ValidCatchAll,
                70..=79 => Verdict::CatchAll,
                80..=89 => Verdict::Invalid,
                _ => Verdict::Unknown,
            };
            assert_eq!(verdict_for(&address), want, "{address}");
        }
    }

    #[test]
    fn pinned_verdicts_never_change() {
        // If this test fails, the verdict function changed: every user's fixtures break.
        // The same table is in docs/mock.md (bucket = fnv1a_64 % 100).
        let cases: &[(&str, u64, Verdict)] = &[
            ("bob@contoso.com", 0, Verdict::Valid),
            ("alice@acme.io", 35, Verdict::Valid),
            ("dave@initech.com", 62, Verdict::ValidCatchAll),
            ("jane@company.com", 73, Verdict::CatchAll),
            ("max@acme.io", 89, Verdict::Invalid),
            ("niaj@acme.io", 95, Verdict::Unknown),
        ];
        for (address, bucket, want) in cases {
            assert_eq!(fnv1a(address.as_bytes()) % 100, *bucket, "{address}");
            assert_eq!(verdict_for(address), *want, "verdict_for({address:?})");
        }
        let cases: &[(&str, Verdict)] = &[("  Jane@Company.COM ", Verdict::CatchAll)];
        for (address, want) in cases {
            assert_eq!(verdict_for(address), *want, "verdict_for({address:?})");
        }
    }

    #[test]
    fn billing_table() {
        let cases: &[(Verdict, Option<&str>, bool)] = &[
            (Verdict::Valid, Some("valid"), true),
            (Verdict::ValidCatchAll, Some("valid_catch_all"), true),
            (Verdict::Invalid, Some("invalid"), true),
            (Verdict::CatchAll, Some("catch_all"), false),
            (Verdict::Unknown, Some("unknown"), false),
            (Verdict::Reject, None, false),
            (Verdict::Fail, None, false),
        ];
        for (verdict, status, charged) in cases {
            assert_eq!(verdict.email_status(), *status, "{verdict:?}");
            assert_eq!(verdict.is_charged(), *charged, "{verdict:?}");
        }
    }

    #[test]
    fn body_has_known_providers_and_the_extra_field() {
        let cases: &[(&str, Option<&str>, Option<&str>)] = &[
            (
                "x@gmail.com",
                Some("Google Workspace"),
                Some("aspmx.l.google.com"),
            ),
            ("x@googlemail.com", Some("Google Workspace"), None),
            ("x@hotmail.com", Some("Microsoft 365"), None),
            ("x@outlook.com", Some("Microsoft 365"), None),
            ("no-at-sign", None, None),
        ];
        for (address, provider, record) in cases {
            let norm = normalize(address);
            let body = validation_body(address, &norm, verdict_for(address), 0.05)
                .expect("status verdict has a body");
            let json = serde_json::to_value(&body).expect("serialises");
            assert_eq!(json["_mock"], true);
            assert_eq!(json["email"], *address);
            assert_eq!(json["mx_provider"].as_str(), *provider, "{address}");
            if let Some(record) = record {
                assert_eq!(json["mx_record"], *record, "{address}");
            }
            assert!(json.get("company_name").is_none(), "webmail has no company");
        }
    }

    #[test]
    fn about_half_of_domains_have_company_data() {
        let with_company = (0..1000)
            .filter(|i| company_for(&format!("firm{i}.com")).is_some())
            .count();
        assert!((400..=600).contains(&with_company), "{with_company}");
        let body = (0..100)
            .find_map(|i| {
                let address = format!("a@firm{i}.com");
                let norm = normalize(&address);
                company_for(&format!("firm{i}.com"))?;
                let body = validation_body("a", &norm, Verdict::Valid, 0.05)?;
                serde_json::to_value(&body).ok()
            })
            .expect("some domain has company data");
        for field in [
            "company_name",
            "company_industry",
            "company_size",
            "company_founded",
            "company_location",
            "company_linkedin_url",
        ] {
            assert!(body.get(field).is_some(), "missing {field}");
        }
        assert!(body["company_location"]["country"].is_string());
    }
}

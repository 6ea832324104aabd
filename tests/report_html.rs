//! The HTML report (issue 14, item 7): what `--report-html`, `inbox --report-html` and
//! `mailsift report --html` write, checked against the JSON report of the same run, and the
//! page rendered in headless Chromium.

use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use predicates::prelude::*;
use serde_json::Value;

use crate::util::{sample, text, Dir, Mock, Printed};

/// Validates the sample with both reports; returns (JSON, HTML).
fn run_sample(dir: &Dir, mock: &Mock) -> (Value, String) {
    std::fs::copy(sample(), dir.path("contacts.csv")).unwrap();
    dir.mailsift(mock)
        .args([
            "validate",
            "contacts.csv",
            "-q",
            "--report",
            "r.json",
            "--report-html",
            "r.html",
        ])
        .assert()
        .success();
    let json: Value = serde_json::from_slice(&dir.read("r.json")).unwrap();
    (json, text(&dir.read("r.html")))
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The value of `attr` on the element whose `id` is given (the page's stable hooks).
fn attr_of(html: &str, id: &str, attr: &str) -> String {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    html[at..]
        .split(&format!("{attr}=\""))
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no {attr} after #{id}"))
        .to_owned()
}

/// The text of the section with this id.
fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("<section class=\"panel\" id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no section #{id}"));
    let end = html[start..].find("</section>").unwrap() + start;
    &html[start..end]
}

#[test]
fn the_page_shows_the_numbers_of_the_json_report() {
    let mock = Mock::fast();
    let dir = Dir::new();
    let (json, html) = run_sample(&dir, &mock);
    let status = |s: &str| n(&json["statuses"][s]);
    let source = |s: &str| n(&json["sources"][s]);

    // The JSON's new fields add up.
    let rows = n(&json["rows"]["this_run"]);
    assert_eq!(rows, 205);
    let syntax: u64 = json["syntax_rejects"]
        .as_object()
        .unwrap()
        .values()
        .map(n)
        .sum();
    assert_eq!(syntax, source("syntax"));
    let by_domain = |b: &Value| {
        b["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| n(&e["rows"]))
            .sum::<u64>()
            + n(&b["other"]["rows"])
    };
    // Domains: every row whose address passed the syntax check; providers: every answer.
    let answered = source("api") + source("cache") + source("duplicate");
    assert_eq!(by_domain(&json["domains"]), answered + status("error"));
    assert_eq!(by_domain(&json["providers"]), answered);
    assert_eq!(json["domains"]["exact"], true);
    assert_eq!(json["mailsift_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(json["finished_at"], "2026-09-21T14:13:20Z");
    assert!(json["credits"]["announced_max"].as_f64().unwrap() > 0.0);
    assert!(json["credits"]["max_credits"].is_null());

    // The cards: the three groups of --split.
    assert_eq!(
        attr_of(&html, "card-deliverable", "data-value"),
        status("valid").to_string()
    );
    let risky = status("valid_catch_all") + status("catch_all") + status("unknown");
    assert_eq!(
        attr_of(&html, "card-risky", "data-value"),
        risky.to_string()
    );
    let undeliverable = status("invalid") + status("missing");
    assert_eq!(
        attr_of(&html, "card-undeliverable", "data-value"),
        undeliverable.to_string()
    );
    // The chart: one arc per status present, with the report's counts.
    let verdicts = section(&html, "verdicts");
    for (name, count) in json["statuses"].as_object().unwrap() {
        let arc = format!("data-status=\"{name}\" data-rows=\"{count}\"");
        assert_eq!(verdicts.contains(&arc), n(count) > 0, "{arc}");
    }
    // Top domains and providers, by name and count.
    for (id, key) in [("domains", "domains"), ("providers", "providers")] {
        let table = section(&html, id);
        for entry in json[key]["top"].as_array().unwrap().iter().take(10) {
            let name = entry["name"].as_str().unwrap();
            let row = format!(
                "title=\"{name}\">{name}</td><td class=\"num\">{}</td>",
                entry["rows"]
            );
            assert!(table.contains(&row), "{id}: {row}");
        }
    }
    let reasons = section(&html, "syntax");
    for (reason, count) in json["syntax_rejects"].as_object().unwrap() {
        let item = format!("<span>{reason}</span><span class=\"num\">{count}</span>");
        assert!(reasons.contains(&item), "{item}");
    }
    let quality = section(&html, "quality");
    for name in ["api", "duplicate", "cache", "syntax", "empty"] {
        let row = format!("data-source=\"{name}\"");
        let at = quality.find(&row).unwrap_or_else(|| panic!("no {row}"));
        let count = format!("<td class=\"num\">{}</td>", source(name));
        let end = at + quality[at..].find("</tr>").unwrap();
        assert!(quality[at..end].contains(&count), "{name}: {count}");
    }
    assert!(section(&html, "credits").contains(&format!(
        "<span class=\"gauge-num\">{}</span>",
        json["credits"]["spent_this_run"]
    )));
    assert!(html.contains("<h1 title=\"contacts.csv\">contacts.csv</h1>"));
    assert!(html.contains("2026-09-21 14:13 UTC"));

    // The same page again from the JSON, on standard output.
    let out = dir.bare_run("report r.json --html -").success();
    assert_eq!(text(&out.get_output().stdout), html);
}

#[test]
fn a_hostile_file_name_is_escaped() {
    let mock = Mock::fast();
    let dir = Dir::new();
    let name = "\"><script>alert(1)<script><img src=x onerror=alert(2)>.csv";
    dir.write(name, "email\nvalid.a@acme-corp.com\njane@\n");
    dir.mailsift(&mock)
        .args([
            "validate",
            name,
            "-o",
            "out.csv",
            "-q",
            "--report-html",
            "r.html",
        ])
        .assert()
        .success();
    let html = text(&dir.read("r.html"));
    assert!(
        !html.contains("<script") && !html.contains("<img"),
        "{html}"
    );
    assert!(html.contains("&quot;&gt;&lt;script&gt;alert(1)&lt;script&gt;&lt;img src=x"));
}

#[test]
fn the_report_command_refuses_what_is_not_a_report() {
    let dir = Dir::new();
    dir.write("data.json", "{\"rows\": [1, 2");
    dir.write("other.json", "{\"name\": \"x\"}");
    for (file, says) in [
        ("data.json", "data.json is not a mailsift JSON report"),
        ("other.json", "other.json is not a mailsift report"),
        ("missing.json", "cannot read the report missing.json"),
    ] {
        dir.bare()
            .args(["report", file, "--html", "out.html"])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(says));
    }
    assert!(!dir.path("out.html").exists());
}

#[test]
fn a_job_input_or_output_makes_the_page_from_the_job_record() {
    let mock = Mock::fast();
    let dir = Dir::new();
    let (json, _) = run_sample(&dir, &mock);
    let status = |s: &str| n(&json["statuses"][s]);
    for file in ["contacts.csv", "contacts.validated.csv"] {
        let out = dir
            .bare()
            .args(["report", file, "--html", "-"])
            .assert()
            .success();
        let html = text(&out.get_output().stdout);
        assert!(html.contains("Made from the job's record"), "{html}");
        assert_eq!(
            attr_of(&html, "card-deliverable", "data-value"),
            status("valid").to_string()
        );
        let undeliverable = status("invalid") + status("missing");
        assert_eq!(
            attr_of(&html, "card-undeliverable", "data-value"),
            undeliverable.to_string()
        );
        assert!(html.contains("id=\"outcome\">Complete<"));
    }
    // A file no job read or wrote.
    dir.write("other.csv", "email\na@b.com\n");
    dir.bare_run("report other.csv --html x.html")
        .code(2)
        .stderr_has(&["no job in the state directory"]);
}

#[test]
fn report_html_and_the_output_cannot_both_be_standard_output() {
    let dir = Dir::new();
    dir.write("in.csv", "email\na@b.com\n");
    dir.bare_run("validate in.csv -o - --report-html -")
        .code(2)
        .stderr_has(&["--report-html -"]);
}

#[test]
fn inbox_writes_the_page_beside_the_json_report() {
    let mock = Mock::fast();
    let dir = Dir::new();
    std::fs::create_dir(dir.path("in")).unwrap();
    dir.write(
        "in/leads.csv",
        "email\nvalid.a@acme-corp.com\ninvalid.b@acme-corp.com\n",
    );
    dir.ok(&mock, "inbox in --out out --settle 0s --once --report-html");
    let html = text(&dir.read("out/leads.report.html"));
    assert!(html.contains("<h1 title=") && html.contains("leads.csv</h1>"));
    assert!(html.contains("data-status=\"valid\" data-rows=\"1\""));
    assert!(dir.path("out/leads.report.json").exists());
    // Not asked: not written.
    dir.write("in/more.csv", "email\nvalid.c@acme-corp.com\n");
    dir.ok(&mock, "inbox in --out out --settle 0s --once");
    assert!(dir.path("out/more.report.json").exists());
    assert!(!dir.path("out/more.report.html").exists());
}

// ---- Headless Chromium ----

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file())
}

/// Runs headless Chromium on a page; returns what it printed on stdout and stderr.
fn render(chromium: &Path, profile: &Path, page: &Path, extra: &[&str]) -> (String, String) {
    let out = StdCommand::new("timeout")
        .arg("120")
        .arg(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        text(&out.stderr)
    );
    (text(&out.stdout), text(&out.stderr))
}

/// What the page said on its console (errors, blocked loads, script failures).
fn console(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .collect()
}

#[test]
fn the_page_renders_in_headless_chromium_without_console_errors() {
    let Some(chromium) = chromium() else {
        eprintln!(
            "skipping: headless Chromium is not installed (Debian: apt-get install chromium)"
        );
        return;
    };
    let mock = Mock::fast();
    let dir = Dir::new();
    let (json, html) = run_sample(&dir, &mock);
    let page = dir.path("r.html");

    let (dom, stderr) = render(&chromium, &dir.path("profile"), &page, &["--dump-dom"]);
    assert_eq!(console(&stderr), Vec::<&str>::new(), "{stderr}");
    // The chart and the bars are in the DOM Chromium built.
    let arcs = dom.matches("<circle class=\"seg ").count();
    let present = json["statuses"]
        .as_object()
        .unwrap()
        .values()
        .filter(|v| n(v) > 0)
        .count();
    assert_eq!(arcs, present, "{dom}");
    assert!(dom.contains("<svg class=\"donut\""));
    for id in [
        "totals",
        "verdicts",
        "credits",
        "domains",
        "providers",
        "quality",
        "syntax",
        "run",
    ] {
        assert!(dom.contains(&format!("id=\"{id}\"")), "#{id} missing");
    }
    assert!(dom.matches("<div class=\"stack\">").count() >= 10);

    let shot = dir.path("report.png");
    render(
        &chromium,
        &dir.path("profile"),
        &page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,2000",
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 50_000,
        "{}",
        png.len()
    );

    // The console check can fail: a page that reaches for the network or runs a script is
    // blocked by the page's policy, and Chromium says so.
    let bad = dir.write(
        "bad.html",
        html.replace(
            "</main>",
            "<img src=\"http://127.0.0.1:9/x.png\"><script>nothing()</script></main>",
        ),
    );
    let (_, stderr) = render(&chromium, &dir.path("profile"), &bad, &["--dump-dom"]);
    assert_eq!(console(&stderr).len(), 2, "{stderr}");
}

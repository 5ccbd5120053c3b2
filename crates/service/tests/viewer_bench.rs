//! Benchmark (ignored by the test suite; run by `bench/viewer.sh`): the viewer on a
//! 1 000 000-line archive in headless Chromium.
//!
//! Prints: time to the first line, to the linked last line (`#L1000000`), to the
//! whole archive parsed; the JS heap after loading; frame times while scrolling
//! through the whole log; time to find a marker. The baseline, measured in the
//! same browser and run, is a plain `fetch()` of the same archive read to the end:
//! the viewer's figures are shown as ratios to it.
#![allow(clippy::unwrap_used)]

use runlog_protocol::Scope;
use runlog_testkit::browser::Browser;
use runlog_testkit::service::TestService;
use serde_json::Value;
use std::fmt::Write as _;
use std::time::Duration;

const LINES: u64 = 1_000_000;
const MARKER_POS: u64 = 777_777;
const LIMIT: Duration = Duration::from_secs(600);

/// An NDJSON archive of `LINES` build-log-like lines, some coloured, one marker.
fn archive() -> Vec<u8> {
    let mut out = String::with_capacity(LINES as usize * 120);
    for pos in 0..LINES {
        let text = if pos == MARKER_POS {
            "needle-5be1 in the haystack".to_owned()
        } else if pos % 50 == 0 {
            format!(
                "\\u001b[1;32m   Compiling\\u001b[0m crate-{} v0.{}.{} (/work/src)",
                pos % 997,
                pos % 13,
                pos % 7
            )
        } else {
            format!(
                "step {pos}: running test module_{}::case_{} ... ok",
                pos % 211,
                pos % 89
            )
        };
        let _ = writeln!(
            out,
            r#"{{"level":"info","pos":{pos},"out":"{text}\n","time":"2026-11-20T10:00:00.000Z"}}"#
        );
    }
    out.into_bytes()
}

/// Scrolls through the whole log, one big step per frame, 240 frames: frame times
/// (`p50`, `p95`, `max`) and the rows scrolled through (`rows`).
const SCROLL_FRAMES: &str = "const done = arguments[arguments.length - 1];
     const v = document.getElementById('viewport');
     const times = []; let last = performance.now(); let i = 0;
     v.scrollTop = 0;
     function step(now) {
       times.push(now - last); last = now;
       if (++i > 240) { times.sort((a, b) => a - b);
         return done({p50: times[120], p95: times[228], max: times[times.length - 1],
           rows: Number(document.body.dataset.rows)}); }
       v.scrollTop = (i / 240) * (v.scrollHeight - v.clientHeight);
       requestAnimationFrame(step);
     }
     requestAnimationFrame(step);";

/// Searches for `query` (Enter in the search box): the time until the match is
/// drawn (`ms`) and its line number (`line`).
fn search_script(query: &str) -> String {
    format!(
        "const done = arguments[arguments.length - 1];
         const s = document.getElementById('search');
         s.value = '{query}';
         const t0 = performance.now();
         s.dispatchEvent(new KeyboardEvent('keydown', {{key: 'Enter', bubbles: true}}));
         (function poll() {{
           if (document.querySelector('.row:not([hidden]) mark')) return done({{ms: performance.now() - t0, line: document.body.dataset.currentMatch}});
           requestAnimationFrame(poll);
         }})();"
    )
}

fn ms(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

#[tokio::test]
#[ignore = "benchmark: run bench/viewer.sh"]
async fn viewer_on_a_million_line_archive() {
    let svc = TestService::start().await;
    let write = svc.token("bench", Scope::Write);
    let read = svc.token("bench", Scope::Read);
    let body = archive();
    let bytes = body.len();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/blob?accountID=bench&key=big", svc.url()))
        .bearer_auth(&write)
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "upload: {}",
        r.text().await.unwrap()
    );

    let browser = Browser::start().await;
    // Baseline: the same archive fetched and read to the end by the same browser.
    browser.goto(&format!("{}/", svc.url())).await;
    let baseline = browser
        .eval_async(
            &format!(
                "const done = arguments[arguments.length - 1];
                 const t0 = performance.now();
                 fetch('/blob?accountID=bench&key=big', {{headers: {{Authorization: 'Bearer {read}'}}}})
                   .then(r => r.text()).then(t => done({{ms: performance.now() - t0, len: t.length}}));"
            ),
            LIMIT,
        )
        .await;

    browser
        .goto(&format!(
            "{}/ui/stream?accountID=bench&key=big&token={read}#L{LINES}",
            svc.url()
        ))
        .await;
    let marks = browser
        .wait_for_within(
            "the last line shown",
            "const m = n => { const e = performance.getEntriesByName(n)[0]; return e ? e.startTime : null; };
             const last = m('runlog:linked-line-shown');
             return last === null ? null : {first: m('runlog:first-line'), complete: m('runlog:complete'), last,
               heap: performance.memory ? performance.memory.usedJSHeapSize : null,
               rows: document.querySelectorAll('.row').length}",
            LIMIT,
        )
        .await;
    browser.screenshot("bench-viewer-last-line").await;

    // Scrolling: jump through the whole log, one big step per frame, and time frames.
    let frames = browser.eval_async(SCROLL_FRAMES, LIMIT).await;

    // Search: from Enter to the match drawn.
    let search = browser
        .eval_async(&search_script("needle-5be1"), LIMIT)
        .await;
    browser.screenshot("bench-viewer-search").await;
    browser.quit().await;
    svc.shutdown().await;

    let base = ms(&baseline["ms"]);
    println!(
        "viewer, {LINES} lines, {:.1} MB archive",
        bytes as f64 / 1e6
    );
    println!("  baseline fetch()+read of the archive: {base:.0} ms");
    for (what, key) in [
        ("first line shown", "first"),
        ("archive parsed", "complete"),
        ("last line shown (#L1000000)", "last"),
    ] {
        let t = ms(&marks[key]);
        println!("  {what}: {t:.0} ms  ({:.2}x baseline)", t / base);
    }
    println!("  JS heap after load: {:.1} MB", ms(&marks["heap"]) / 1e6);
    println!("  DOM rows: {}", marks["rows"]);
    println!(
        "  scrolling frames: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        ms(&frames["p50"]),
        ms(&frames["p95"]),
        ms(&frames["max"])
    );
    println!(
        "  search to the marker: {:.0} ms (line {})",
        ms(&search["ms"]),
        search["line"]
    );
    assert_eq!(search["line"], Value::from((MARKER_POS + 1).to_string()));
}

/// Lines per section in [`viewer_folds_a_million_lines_in_sections`]: 10 000 sections.
const SECTION_LINES: u64 = 100;

/// Line `pos` of a build log cut into `SECTION_LINES`-line GitHub groups, every
/// hundredth of which fails.
fn sectioned_line(pos: u64) -> Value {
    let section = pos / SECTION_LINES;
    let out = match pos % SECTION_LINES {
        0 => format!("::group::test module_{section}"),
        x if x == SECTION_LINES - 1 && section % 100 == 37 => {
            "::endgroup outcome=failure::".to_owned()
        }
        x if x == SECTION_LINES - 1 => "::endgroup::".to_owned(),
        _ => format!(
            "step {pos}: running test module_{section}::case_{} ... ok",
            pos % 89
        ),
    };
    let secs = pos / 1000;
    serde_json::json!({"level": "info", "pos": pos, "out": out + "\n",
        "time": format!("2026-11-20T{:02}:{:02}:{:02}.{:03}Z", 10 + secs / 3600, secs / 60 % 60, secs % 60, pos % 1000)})
}

#[tokio::test]
#[ignore = "benchmark: run bench/viewer.sh"]
async fn viewer_folds_a_million_lines_in_sections() {
    let svc = TestService::start().await;
    let write = svc.token("bench", Scope::Write);
    let read = svc.token("bench", Scope::Read);
    let http = reqwest::Client::new();
    let stream = format!("{}/stream?accountID=bench&key=sectioned", svc.url());
    let r = http
        .post(stream.as_str())
        .bearer_auth(&write)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "open: {}", r.text().await.unwrap());
    for from in (0..LINES).step_by(20_000) {
        let batch: Vec<Value> = (from..from + 20_000).map(sectioned_line).collect();
        let r = http
            .put(stream.as_str())
            .bearer_auth(&write)
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "put: {}", r.text().await.unwrap());
    }
    let r = http
        .delete(format!("{}&lines={LINES}&outcome=failure", stream.as_str()))
        .bearer_auth(&write)
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "close: {}",
        r.text().await.unwrap()
    );

    let browser = Browser::start().await;
    browser
        .goto(&format!(
            "{}/ui/stream?accountID=bench&key=sectioned&token={read}",
            svc.url()
        ))
        .await;
    let marks = browser
        .wait_for_within(
            "the first failure shown",
            "const m = n => { const e = performance.getEntriesByName(n)[0]; return e ? e.startTime : null; };
             const failure = m('runlog:first-failure-shown');
             return failure === null ? null : {first: m('runlog:first-line'), failure,
               at: document.body.dataset.firstFailure}",
            LIMIT,
        )
        .await;
    let loaded = browser
        .wait_for_within(
            "every line and the final index",
            "return document.body.dataset.state === 'closed' && document.body.dataset.ledger === 'complete'
               && {complete: performance.getEntriesByName('runlog:complete')[0].startTime,
                   sections: Number(document.body.dataset.sections),
                   heap: performance.memory ? performance.memory.usedJSHeapSize : null}",
            LIMIT,
        )
        .await;
    browser.screenshot("bench-viewer-sections").await;

    // Scrolling through the whole log (folded: 9 900 headers and 100 failed sections
    // open; then everything expanded), one big step per frame; folding all and
    // expanding all timed from the click to the next frame.
    let toggle = |id: &str| {
        format!(
            "const done = arguments[arguments.length - 1];
             const t0 = performance.now();
             document.getElementById('{id}').click();
             requestAnimationFrame(() => done({{ms: performance.now() - t0}}));"
        )
    };
    let folded = browser.eval_async(SCROLL_FRAMES, LIMIT).await;
    let expand = browser.eval_async(&toggle("expand-all"), LIMIT).await;
    let expanded = browser.eval_async(SCROLL_FRAMES, LIMIT).await;
    let collapse = browser.eval_async(&toggle("collapse-all"), LIMIT).await;
    // Search: a line inside a folded section, from Enter to the match drawn.
    let search = browser
        .eval_async(&search_script("step 777777:"), LIMIT)
        .await;
    browser.quit().await;
    svc.shutdown().await;

    println!(
        "viewer, {LINES} lines in {} sections (1 in 100 failed)",
        loaded["sections"]
    );
    println!("  first line shown: {:.0} ms", ms(&marks["first"]));
    println!("  first failure shown: {:.0} ms", ms(&marks["failure"]));
    println!("  every line read: {:.0} ms", ms(&loaded["complete"]));
    println!("  JS heap after load: {:.1} MB", ms(&loaded["heap"]) / 1e6);
    for (what, f) in [("folded", &folded), ("expanded", &expanded)] {
        println!(
            "  scrolling frames, {what} ({:.0} rows): p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
            ms(&f["rows"]),
            ms(&f["p50"]),
            ms(&f["p95"]),
            ms(&f["max"])
        );
    }
    println!(
        "  expand all: {:.0} ms; collapse all: {:.0} ms",
        ms(&expand["ms"]),
        ms(&collapse["ms"])
    );
    println!(
        "  search into a folded section: {:.0} ms (line {})",
        ms(&search["ms"]),
        search["line"]
    );
    assert_eq!(marks["at"], Value::from("3701"), "section 37's header");
    assert_eq!(search["line"], Value::from("777778"));
}

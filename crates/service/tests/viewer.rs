//! The web viewer end to end: a real service on a loopback port, a real headless
//! Chromium over WebDriver, lines written over HTTP. Screenshots are saved to
//! `$RUNLOG_TEST_ARTIFACTS`.
#![allow(clippy::unwrap_used)]

mod common;

use common::viewer::{ACCOUNT, page, setup};
use common::{Api, line};
use reqwest::StatusCode;
use runlog_protocol::Scope;
use runlog_testkit::browser::Browser;
use runlog_testkit::service::TestService;
use serde_json::json;
use std::time::Duration;

/// Text of every rendered row, as the page shows it.
const ROW_TEXTS: &str =
    "return [...document.querySelectorAll('.row:not([hidden]) .tx')].map(e => e.textContent)";

#[tokio::test]
async fn lines_written_to_a_stream_appear_without_reload() {
    let (svc, api, read) = setup().await;
    api.open("build").await;
    api.put_ok("build", &[line(0), line(1)]).await;
    let browser = Browser::start().await;
    browser.goto(&page(&svc, "build", &read, "")).await;
    browser
        .wait_for(
            "backfilled lines",
            "return document.body.innerText.includes('line 1')",
        )
        .await;
    // Mark the document: a reload would lose the mark.
    browser
        .eval("window.__sameDocument = true; return true", vec![])
        .await;
    api.put_ok("build", &[line(2), line(3)]).await;
    browser
        .wait_for(
            "live lines",
            "return document.body.innerText.includes('line 3')",
        )
        .await;
    let same = browser
        .eval("return window.__sameDocument === true", vec![])
        .await;
    assert_eq!(same, json!(true), "the page reloaded");
    let status = browser
        .eval("return document.body.dataset.state", vec![])
        .await;
    assert_eq!(status, json!("live"));
    // The token left the address bar but stays for the tab.
    let href = browser.eval("return location.href", vec![]).await;
    assert!(!href.as_str().unwrap().contains("token="), "{href}");
    let kept = browser
        .eval("return sessionStorage.getItem('runlog.token')", vec![])
        .await;
    assert_eq!(kept, json!(read));
    browser.screenshot("viewer-live").await;
    assert_eq!(browser.console_errors().await, Vec::<String>::new());
    browser.quit().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn ansi_colours_become_styled_spans_and_escapes_never_show() {
    let (svc, api, read) = setup().await;
    api.open("ansi").await;
    let text = "\u{1b}[1;31mFAILED\u{1b}[0m tests \u{1b}[32mok\u{1b}[39m \u{1b}[2Kdone \u{1b}]0;title\u{7}end\n";
    api.put_ok(
        "ansi",
        &[json!({"level": "error", "pos": 0, "out": text, "time": "2026-11-20T10:00:00.000Z"})],
    )
    .await;
    let browser = Browser::start().await;
    browser.goto(&page(&svc, "ansi", &read, "")).await;
    browser
        .wait_for(
            "the coloured line",
            "return document.body.innerText.includes('FAILED')",
        )
        .await;
    let styled = browser
        .eval(
            "const s = [...document.querySelectorAll('.row .tx span')];
             const failed = s.find(e => e.textContent === 'FAILED');
             const ok = s.find(e => e.textContent === 'ok');
             return {
               failedClass: failed && failed.className,
               failedWeight: failed && getComputedStyle(failed).fontWeight,
               failedColour: failed && getComputedStyle(failed).color,
               okClass: ok && ok.className,
             }",
            vec![],
        )
        .await;
    assert_eq!(styled["failedClass"], json!("sgr-bold fg1"), "{styled}");
    assert_eq!(styled["failedWeight"], json!("700"), "{styled}");
    assert_eq!(
        styled["failedColour"],
        json!("rgb(255, 123, 114)"),
        "{styled}"
    );
    assert_eq!(styled["okClass"], json!("fg2"), "{styled}");
    let rows = browser.eval(ROW_TEXTS, vec![]).await;
    assert_eq!(
        rows,
        json!(["FAILED tests ok done end"]),
        "escape codes leaked into the text"
    );
    let level = browser
        .eval(
            "return document.querySelector('.row .lv').textContent",
            vec![],
        )
        .await;
    assert_eq!(level, json!("ERROR"));
    // 256-colour, true-colour and inverse video, and a progress line redrawn with \r.
    api.put_ok(
        "ansi",
        &[
            json!({"pos": 1, "out": "\u{1b}[38;5;208morange\u{1b}[0m \u{1b}[48;2;1;2;3mdark\u{1b}[0m \u{1b}[7minv\u{1b}[0m\n"}),
            json!({"pos": 2, "out": "progress 10%\rprogress 50%\rprogress 100%\n"}),
        ],
    )
    .await;
    let extended = browser
        .wait_for(
            "the extended colours",
            "const s = [...document.querySelectorAll('.row .tx span')];
             const by = t => s.find(e => e.textContent === t);
             if (!by('orange')) return null;
             const rows = [...document.querySelectorAll('.row:not([hidden]) .tx')].map(e => e.textContent);
             return {orange: getComputedStyle(by('orange')).color, dark: getComputedStyle(by('dark')).backgroundColor,
                     inv: by('inv').className, progress: rows[2]}",
        )
        .await;
    assert_eq!(
        extended,
        json!({"orange": "rgb(255, 135, 0)", "dark": "rgb(1, 2, 3)", "inv": "sgr-inv-fg sgr-inv-bg", "progress": "progress 100%"})
    );
    browser.screenshot("viewer-ansi").await;
    browser.quit().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn line_link_scrolls_to_and_highlights_line_42() {
    let (svc, api, read) = setup().await;
    api.open("linked").await;
    api.put_ok("linked", &(0..500).map(line).collect::<Vec<_>>())
        .await;
    api.close("linked", false).await;
    let browser = Browser::start().await;
    browser.goto(&page(&svc, "linked", &read, "#L42")).await;
    let highlighted = browser
        .wait_for(
            "line 42 highlighted",
            "const r = document.querySelector('.row.highlighted');
             if (!r) return null;
             const box = r.getBoundingClientRect();
             const view = document.getElementById('viewport').getBoundingClientRect();
             const visible = box.top >= view.top && box.bottom <= view.bottom;
             return visible ? {line: r.dataset.line, text: r.querySelector('.tx').textContent} : null",
        )
        .await;
    // Line numbers are 1-based: line 42 is pos 41.
    assert_eq!(highlighted, json!({"line": "42", "text": "line 41"}));
    let count = browser
        .eval(
            "return document.querySelectorAll('.row.highlighted').length",
            vec![],
        )
        .await;
    assert_eq!(count, json!(1));
    // A range link highlights every line in it.
    browser
        .eval("location.hash = '#L100-L103'; return true", vec![])
        .await;
    let range = browser
        .wait_for(
            "a highlighted range",
            "const r = [...document.querySelectorAll('.row.highlighted')].map(e => e.dataset.line);
             return r.length === 4 ? r : null",
        )
        .await;
    assert_eq!(range, json!(["100", "101", "102", "103"]));
    // A range grown or shrunk from the same first line (the view does not move).
    browser
        .eval("location.hash = '#L100-L106'; return true", vec![])
        .await;
    browser
        .wait_for(
            "the grown range",
            "return document.querySelectorAll('.row.highlighted').length === 7 || null",
        )
        .await;
    browser
        .eval("location.hash = '#L100'; return true", vec![])
        .await;
    let one = browser
        .wait_for(
            "the range shrunk to one line",
            "const r = [...document.querySelectorAll('.row.highlighted')].map(e => e.dataset.line);
             return r.length === 1 ? r : null",
        )
        .await;
    assert_eq!(one, json!(["100"]));
    browser.screenshot("viewer-line-link").await;
    browser.quit().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn search_finds_a_marker_in_a_200_000_line_stream() {
    let (svc, api, read) = setup().await;
    api.open("big").await;
    const TOTAL: u64 = 200_000;
    const MARKER_POS: u64 = 153_210;
    for start in (0..TOTAL).step_by(20_000) {
        let batch: Vec<_> = (start..start + 20_000)
            .map(|pos| {
                if pos == MARKER_POS {
                    json!({"level": "info", "pos": pos, "out": "needle-7f3a found here\n", "time": "2026-11-20T10:00:00.000Z"})
                } else {
                    line(pos)
                }
            })
            .collect();
        api.put_ok("big", &batch).await;
    }
    api.close("big", false).await;
    let browser = Browser::start().await;
    browser.goto(&page(&svc, "big", &read, "")).await;
    browser
        .wait_for_within(
            "all 200 000 lines",
            "return document.body.dataset.state === 'closed' && document.getElementById('status').textContent.includes('200,000 lines')",
            Duration::from_secs(90),
        )
        .await;
    // Virtualised: a screenful of rows in the DOM, not 200 000.
    let rows_in_dom = browser
        .eval("return document.querySelectorAll('.row').length", vec![])
        .await;
    assert!(
        rows_in_dom.as_u64().unwrap() < 200,
        "{rows_in_dom} rows in the DOM"
    );
    browser.type_into("#search", "NEEDLE-7f3a\u{E007}").await;
    let found = browser
        .wait_for(
            "the marker found and shown",
            "const m = [...document.querySelectorAll('.row:not([hidden]) mark')].find(e => e.textContent.toLowerCase() === 'needle-7f3a');
             return m ? {line: document.body.dataset.currentMatch, count: document.body.dataset.matches, row: m.closest('.row').dataset.line} : null",
        )
        .await;
    let expected_line = (MARKER_POS + 1).to_string();
    assert_eq!(
        found,
        json!({"line": expected_line, "count": "1", "row": expected_line})
    );
    let counter = browser
        .eval(
            "return document.getElementById('match-count').textContent",
            vec![],
        )
        .await;
    assert_eq!(counter, json!("1 / 1"));
    // Enter again while a search over the 200 000 lines is still under way (it
    // jumps to the next match): the search goes on to the end.
    browser
        .eval(
            "document.getElementById('search').value = ''; return true",
            vec![],
        )
        .await;
    browser.type_into("#search", "line 1\u{E007}\u{E007}").await;
    // "line 1" is in lines 1, 10–19, 100–199, … 100 000–199 999, but the marker's.
    let count = browser
        .wait_for(
            "every match counted",
            "return document.body.dataset.matches === '111110' ? document.body.dataset.matches : null",
        )
        .await;
    assert_eq!(count, json!("111110"));
    browser.screenshot("viewer-search-200k").await;
    assert_eq!(browser.console_errors().await, Vec::<String>::new());
    browser.quit().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn search_sees_the_text_as_shown_and_a_huge_line_is_drawn_cut() {
    let (svc, api, read) = setup().await;
    api.open("spelled").await;
    // A body as other JSON encoders write it: colour codes between the words, a
    // non-ASCII letter and a slash escaped.
    let body = concat!(
        r#"[{"level":"info","pos":0,"out":"\u001b[31merror:\u001b[0m disk full\n","time":"2026-11-20T10:00:00.000Z"},"#,
        r#"{"level":"info","pos":1,"out":"caf\u00e9 on a\/b\n","time":"2026-11-20T10:00:00.000Z"}]"#
    );
    let r = api
        .req(reqwest::Method::PUT, "/stream", "spelled")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // One line of 1 000 000 characters, a colour code every 6.
    let huge = "\u{1b}[1mab".repeat(166_667);
    api.put_ok(
        "spelled",
        &[json!({"level": "info", "pos": 2, "out": huge, "time": "2026-11-20T10:00:00.000Z"})],
    )
    .await;
    // A progress bar redrawn with carriage returns, longer than a row draws: what
    // it shows is its last frame.
    let progress = format!("{}\rdone 100%\n", "downloading... ".repeat(2_000));
    api.put_ok(
        "spelled",
        &[json!({"level": "info", "pos": 3, "out": progress, "time": "2026-11-20T10:00:00.000Z"})],
    )
    .await;
    api.close("spelled", false).await;
    let browser = Browser::start().await;
    browser.goto(&page(&svc, "spelled", &read, "")).await;
    browser
        .wait_for(
            "the stream",
            "return document.body.dataset.state === 'closed' || null",
        )
        .await;
    for (query, line) in [("error: disk", "1"), ("café", "2"), ("a/b", "2")] {
        browser
            .eval(
                "document.getElementById('search').value = ''; return true",
                vec![],
            )
            .await;
        browser
            .type_into("#search", &format!("{query}\u{E007}"))
            .await;
        let found = browser
            .wait_for(
                "a match",
                "return document.body.dataset.matches === '1' ? document.body.dataset.currentMatch : null",
            )
            .await;
        assert_eq!(found, json!(line), "{query}");
    }
    let huge_row = browser
        .wait_for(
            "the huge line drawn",
            "const r = [...document.querySelectorAll('.row:not([hidden])')].find(e => e.dataset.line === '3');
             return r ? {spans: r.querySelectorAll('.tx span').length, cut: r.querySelector('.cut')?.textContent ?? ''} : null",
        )
        .await;
    assert!(huge_row["spans"].as_u64().unwrap() <= 16_384, "{huge_row}");
    assert!(
        huge_row["cut"]
            .as_str()
            .unwrap()
            .contains("more characters"),
        "{huge_row}"
    );
    let progress_row = browser
        .wait_for(
            "the progress line drawn",
            "const r = [...document.querySelectorAll('.row:not([hidden])')].find(e => e.dataset.line === '4');
             return r ? r.querySelector('.tx').textContent : null",
        )
        .await;
    assert_eq!(progress_row, json!("done 100%"));
    assert_eq!(browser.console_errors().await, Vec::<String>::new());
    browser.quit().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn a_closed_and_archived_stream_shows_its_archive() {
    let (svc, api, read) = setup().await;
    api.open("done").await;
    api.put_ok("done", &(0..50).map(line).collect::<Vec<_>>())
        .await;
    // snapshot=true: the lines become the archive and the live stream goes away.
    api.close("done", true).await;
    let browser = Browser::start().await;
    browser.goto(&page(&svc, "done", &read, "")).await;
    browser
        .wait_for(
            "the archive shown",
            "const s = document.body.dataset.state;
             return (s === 'closed' || s === 'archived') && document.getElementById('status').textContent.includes('50 lines')",
        )
        .await;
    // Scrolled to the bottom on every poll: the status can say "50 lines" a frame
    // before the rows' height is laid out, and a scroll made then stops short.
    browser
        .wait_for(
            "the last line shown",
            "const v = document.getElementById('viewport');
             v.scrollTop = v.scrollHeight;
             return document.body.innerText.includes('line 49')",
        )
        .await;
    let follow = browser
        .eval("return document.getElementById('follow').checked", vec![])
        .await;
    assert_eq!(
        follow,
        json!(false),
        "nothing to follow on a finished stream"
    );
    browser.screenshot("viewer-archive").await;
    browser.quit().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn a_wrong_token_shows_an_error_not_a_blank_page() {
    let (svc, api, _read) = setup().await;
    api.open("secret").await;
    api.put_ok("secret", &[line(0)]).await;
    let other_account = svc.token("someone-else", Scope::Read);
    let browser = Browser::start().await;
    for (name, token) in [
        ("garbage", "not-a-token"),
        ("other-account", other_account.as_str()),
    ] {
        browser.goto(&page(&svc, "secret", token, "")).await;
        let error = browser
            .wait_for(
                "an error message",
                "const e = document.getElementById('error');
                 return e && !e.hidden ? e.innerText : null",
            )
            .await;
        let error = error.as_str().unwrap();
        assert!(
            error.contains("401") || error.contains("403"),
            "{name}: {error}"
        );
        let form = browser
            .eval(
                "return document.querySelector('#error input[type=password]') !== null",
                vec![],
            )
            .await;
        assert_eq!(form, json!(true), "{name}: no way to enter a token");
        let leaked = browser
            .eval("return document.body.innerText.includes('line 0')", vec![])
            .await;
        assert_eq!(leaked, json!(false), "{name}: lines shown with a bad token");
        browser
            .screenshot(&format!("viewer-wrong-token-{name}"))
            .await;
        // The refused request is the only console error (and shows the capture works).
        let errors = browser.console_errors().await;
        assert!(
            !errors.is_empty() && errors.iter().all(|e| e.contains("40")),
            "{name}: {errors:?}"
        );
    }
    // The stream list says so too.
    browser
        .goto(&format!(
            "{}/?accountID={ACCOUNT}&token=not-a-token",
            svc.url()
        ))
        .await;
    let error = browser
        .wait_for(
            "the list's error message",
            "const e = document.getElementById('error');
             return e && !e.hidden ? e.innerText : null",
        )
        .await;
    assert!(error.as_str().unwrap().contains("401"), "{error}");
    browser.screenshot("viewer-list-wrong-token").await;
    browser.quit().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn the_front_page_lists_the_token_accounts_streams_newest_first() {
    let (svc, api, read) = setup().await;
    api.open("first").await;
    api.put_ok("first", &[line(0)]).await;
    api.close("first", false).await;
    // Activity times have millisecond resolution; make the order unambiguous.
    tokio::time::sleep(Duration::from_millis(20)).await;
    api.open("second").await;
    api.put_ok("second", &[line(0), line(1), line(2)]).await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/?token={read}", svc.url())).await;
    let rows = browser
        .wait_for(
            "the stream table",
            "const rows = [...document.querySelectorAll('#streams tbody tr')];
             return rows.length === 2 ? rows.map(r => [...r.cells].slice(0, 3).map(c => c.textContent)) : null",
        )
        .await;
    assert_eq!(
        rows,
        json!([["second", "open", "3"], ["first", "closed", "1"]])
    );
    let link = browser
        .eval(
            "return document.querySelector('#streams a').getAttribute('href')",
            vec![],
        )
        .await;
    assert_eq!(link, json!("/ui/stream?accountID=acc&key=second"));
    browser.screenshot("viewer-list").await;
    assert_eq!(browser.console_errors().await, Vec::<String>::new());
    browser.quit().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn viewer_assets_are_served_with_types_and_a_strict_policy() {
    let svc = TestService::start().await;
    let http = reqwest::Client::new();
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui/stream?accountID=a&key=k", "text/html"),
        ("/ui/assets/stream.js", "text/javascript"),
        ("/ui/assets/viewer.css", "text/css"),
    ] {
        let r = http
            .get(format!("{}{path}", svc.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}: {h:?}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe"),
            "{path}: {csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        // Revalidation answers 304 with the same tag.
        let tag = h["etag"].clone();
        let again = http
            .get(format!("{}{path}", svc.url()))
            .header("if-none-match", tag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
    }
    for bad in [
        "/ui/assets/nope.js",
        "/ui/assets/..%2F..%2FCargo.toml",
        "/ui/assets/%00",
        "/ui/assets/%FF",
    ] {
        let r = http
            .get(format!("{}{bad}", svc.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{bad}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["error_msg"].is_string(), "{bad}: {body}");
    }
    svc.shutdown().await;
}

/// Every file of `ui/` is served as it is on disk, with the type of its extension: the
/// pages at their routes, the rest under `/ui/assets/`. The unit tests (`ui/test/`) and
/// their `package.json` are not served, and a page is not served as an asset.
#[tokio::test]
async fn every_file_of_the_ui_folder_is_served_and_nothing_else() {
    let svc = TestService::start().await;
    let http = reqwest::Client::new();
    let get = |path: String| {
        let req = http.get(format!("{}{path}", svc.url()));
        async move { req.send().await.unwrap() }
    };
    let ui = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui");
    let mut served = Vec::new();
    let mut refused = Vec::new();
    for entry in std::fs::read_dir(&ui).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if path.is_dir() {
            assert_eq!(name, "test", "ui/ holds one folder, its unit tests");
            for test in std::fs::read_dir(&path).unwrap() {
                let test = test.unwrap().file_name().into_string().unwrap();
                refused.push(format!("/ui/assets/{test}"));
                refused.push(format!("/ui/assets/test/{test}"));
            }
            continue;
        }
        if name == "package.json" {
            refused.push(format!("/ui/assets/{name}"));
            continue;
        }
        let (url, kind) = match name.rsplit_once('.').map(|(_, ext)| ext) {
            Some("html") => {
                refused.push(format!("/ui/assets/{name}"));
                let route = match name.as_str() {
                    "index.html" => "/",
                    "stream.html" => "/ui/stream",
                    other => panic!("ui/{other}: a page this test does not know the route of"),
                };
                (route.to_owned(), "text/html")
            }
            Some("js") => (format!("/ui/assets/{name}"), "text/javascript"),
            Some("css") => (format!("/ui/assets/{name}"), "text/css"),
            _ => panic!("ui/{name}: a type this test does not know"),
        };
        let r = get(url.clone()).await;
        assert_eq!(r.status(), StatusCode::OK, "{url}");
        let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with(kind), "{url}: {content_type}");
        assert_eq!(
            r.text().await.unwrap(),
            std::fs::read_to_string(&path).unwrap(),
            "{url}"
        );
        served.push(name);
    }
    // The folder was read: the pages and the scripts they start from are among it.
    for needed in ["index.html", "stream.html", "stream.js", "sse.js"] {
        assert!(served.iter().any(|n| n == needed), "{needed} in {served:?}");
    }
    assert!(
        refused.iter().any(|u| u.ends_with(".test.js")),
        "{refused:?}"
    );
    for url in refused {
        assert_eq!(
            get(url.clone()).await.status(),
            StatusCode::NOT_FOUND,
            "{url}"
        );
    }
    svc.shutdown().await;
}

#[tokio::test]
async fn follow_turns_off_when_the_reader_scrolls_up_and_back_on_by_toggle() {
    let (svc, api, read) = setup().await;
    api.open("tail").await;
    api.put_ok("tail", &(0..300).map(line).collect::<Vec<_>>())
        .await;
    let browser = Browser::start().await;
    browser.goto(&page(&svc, "tail", &read, "")).await;
    browser
        .wait_for(
            "following at the end",
            "return document.body.innerText.includes('line 299')",
        )
        .await;
    // The reader scrolls up: following stops and new lines do not move the view.
    browser
        .eval(
            "document.getElementById('viewport').scrollTop = 0; return true",
            vec![],
        )
        .await;
    browser
        .wait_for(
            "follow off",
            "return !document.getElementById('follow').checked",
        )
        .await;
    api.put_ok("tail", &(300..310).map(line).collect::<Vec<_>>())
        .await;
    browser
        .wait_for(
            "the new lines counted",
            "return document.getElementById('status').textContent.includes('310 lines')",
        )
        .await;
    let top = browser.eval(ROW_TEXTS, vec![]).await;
    assert_eq!(top[0], json!("line 0"), "the view moved while reading");
    // Turning follow back on jumps to the newest line.
    browser
        .eval(
            "document.getElementById('follow').click(); return true",
            vec![],
        )
        .await;
    browser
        .wait_for(
            "back at the end",
            "return document.body.innerText.includes('line 309')",
        )
        .await;
    browser.screenshot("viewer-follow").await;
    browser.quit().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn keyboard_shortcuts_reach_search_and_toggles() {
    let (svc, api, read) = setup().await;
    api.open("keys").await;
    api.put_ok("keys", &(0..10).map(line).collect::<Vec<_>>())
        .await;
    let browser = Browser::start().await;
    browser.goto(&page(&svc, "keys", &read, "")).await;
    browser
        .wait_for("lines", "return document.body.innerText.includes('line 9')")
        .await;
    browser.type_into("#viewport", "t").await;
    let ts = browser
        .eval(
            "return document.body.classList.contains('show-ts') && document.querySelector('.row .ts').offsetWidth > 0",
            vec![],
        )
        .await;
    assert_eq!(ts, json!(true), "t shows timestamps");
    browser.type_into("#viewport", "/").await;
    let focused = browser
        .eval("return document.activeElement.id", vec![])
        .await;
    assert_eq!(focused, json!("search"));
    browser.type_into("#search", "line 7\u{E007}").await;
    let current = browser
        .wait_for("the match", "return document.body.dataset.currentMatch")
        .await;
    assert_eq!(current, json!("8"));
    browser.quit().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn a_write_token_in_a_link_is_refused_and_never_kept() {
    let (svc, api, _read) = setup().await;
    api.open("w").await;
    api.put_ok("w", &[line(0)]).await;
    let browser = Browser::start().await;
    browser.goto(&page(&svc, "w", &api.token, "")).await;
    let error = browser
        .wait_for(
            "the refusal",
            "const e = document.getElementById('error'); return e && !e.hidden ? e.innerText : null",
        )
        .await;
    assert!(
        error.as_str().unwrap().contains("read tokens only"),
        "{error}"
    );
    let kept = browser
        .eval(
            "return [sessionStorage.getItem('runlog.token'), location.href]",
            vec![],
        )
        .await;
    assert_eq!(kept[0], json!(null), "a write token was stored");
    assert!(!kept[1].as_str().unwrap().contains("token="), "{kept}");
    let shown = browser
        .eval("return document.body.innerText.includes('line 0')", vec![])
        .await;
    assert_eq!(shown, json!(false));
    browser.screenshot("viewer-write-token-refused").await;
    browser.quit().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn download_buttons_give_the_raw_lines_and_the_text() {
    let (svc, api, read) = setup().await;
    api.open("dl").await;
    let coloured = json!({"level": "info", "pos": 1, "out": "\u{1b}[31mred\u{1b}[0m\n", "time": "2026-11-20T10:00:00.000Z"});
    api.put_ok("dl", &[line(0), coloured]).await;
    api.close("dl", false).await;
    let browser = Browser::start().await;
    browser.goto(&page(&svc, "dl", &read, "")).await;
    browser
        .wait_for(
            "the lines",
            "return document.body.dataset.state === 'closed'",
        )
        .await;
    let got = browser
        .eval_async(
            "const done = arguments[arguments.length - 1];
             const blobs = [];
             URL.createObjectURL = b => { blobs.push(b); return 'about:blank'; };
             HTMLAnchorElement.prototype.click = function () { blobs.push(this.download); };
             document.getElementById('download-ndjson').click();
             document.getElementById('download-text').click();
             Promise.all([blobs[0].text(), blobs[2].text()]).then(([nd, text]) => done({nd, text, names: [blobs[1], blobs[3]]}));",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(got["names"], json!(["dl.ndjson", "dl.log"]));
    assert_eq!(got["text"], json!("line 0\n\u{1b}[31mred\u{1b}[0m\n"));
    let rows: Vec<serde_json::Value> = got["nd"]
        .as_str()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["out"], json!("\u{1b}[31mred\u{1b}[0m\n"));
    browser.quit().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn the_page_reconnects_after_a_service_restart_and_resumes_where_it_was() {
    // Stores that outlive the server process (as Redis would), behind one stable port.
    let dir = tempfile::tempdir().unwrap();
    let cfg = runlog_testkit::service::test_config(dir.path());
    let streams = runlog_service::backend::stream_store(&cfg).await.unwrap();
    let blobs = runlog_service::backend::blob_store(&cfg).await.unwrap();
    let mut svc = TestService::start_with_stores(streams, blobs).await;
    let fwd = runlog_testkit::forward::Forwarder::start(svc.addr()).await;
    let api = Api::new(&svc, ACCOUNT, Scope::Write);
    let read = svc.token(ACCOUNT, Scope::Read);
    api.open("job").await;
    api.put_ok("job", &(0..50).map(line).collect::<Vec<_>>())
        .await;
    let browser = Browser::start().await;
    browser
        .goto(&format!(
            "{}/ui/stream?accountID={ACCOUNT}&key=job&token={read}",
            fwd.url()
        ))
        .await;
    browser
        .wait_for(
            "the first lines",
            "return document.body.innerText.includes('line 49')",
        )
        .await;
    browser
        .eval("window.__sameDocument = true; return true", vec![])
        .await;
    let before = fwd.connections();

    svc.restart().await;
    fwd.switch_to(svc.addr());
    let api = Api::new(&svc, ACCOUNT, Scope::Write);
    api.put_ok("job", &(50..60).map(line).collect::<Vec<_>>())
        .await;
    browser
        .wait_for(
            "the lines written after the restart",
            "return document.body.innerText.includes('line 59') && document.body.dataset.state === 'live'",
        )
        .await;
    let status = browser
        .eval(
            "return document.getElementById('status').textContent",
            vec![],
        )
        .await;
    assert_eq!(status, json!("live · 60 lines"), "lines lost or repeated");
    let same = browser
        .eval("return window.__sameDocument === true", vec![])
        .await;
    assert_eq!(
        same,
        json!(true),
        "the page reloaded instead of reconnecting"
    );
    assert!(fwd.connections() > before, "no reconnection happened");
    browser.screenshot("viewer-reconnected").await;
    browser.quit().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn a_phone_width_screen_gets_a_layout_without_sideways_scrolling() {
    let (svc, api, read) = setup().await;
    api.open("narrow").await;
    api.put_ok("narrow", &(0..40).map(line).collect::<Vec<_>>())
        .await;
    let browser = Browser::start_sized(390, 800).await;
    browser.goto(&page(&svc, "narrow", &read, "")).await;
    browser
        .wait_for(
            "lines",
            "return document.body.innerText.includes('line 39')",
        )
        .await;
    let layout = browser
        .eval(
            "const v = document.getElementById('viewport').getBoundingClientRect();
             return {page: document.documentElement.scrollWidth <= window.innerWidth, logHeight: v.height > 200}",
            vec![],
        )
        .await;
    assert_eq!(layout, json!({"page": true, "logHeight": true}));
    browser.screenshot("viewer-narrow").await;
    browser.quit().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn the_filter_shows_only_matching_lines_and_keeps_their_numbers() {
    let (svc, api, read) = setup().await;
    api.open("f").await;
    let rows: Vec<_> = (0..1000)
        .map(|pos| {
            let out = if pos % 100 == 7 {
                format!("warning: slow step {pos}\n")
            } else {
                format!("line {pos}\n")
            };
            json!({"level": "info", "pos": pos, "out": out, "time": "2026-11-20T10:00:00.000Z"})
        })
        .collect();
    api.put_ok("f", &rows).await;
    api.close("f", false).await;
    let browser = Browser::start().await;
    browser.goto(&page(&svc, "f", &read, "")).await;
    browser
        .wait_for(
            "all lines",
            "return document.body.dataset.state === 'closed'",
        )
        .await;
    browser.type_into("#search", "WARNING\u{E007}").await;
    browser
        .wait_for(
            "ten matches",
            "return document.body.dataset.matches === '10'",
        )
        .await;
    browser
        .eval(
            "document.getElementById('filter').click(); return true",
            vec![],
        )
        .await;
    let shown = browser
        .wait_for(
            "only matching rows",
            "const rows = [...document.querySelectorAll('.row:not([hidden])')];
             return rows.length === 10 ? rows.map(r => r.dataset.line) : null",
        )
        .await;
    let expected: Vec<String> = (0..10).map(|k| (k * 100 + 8).to_string()).collect();
    assert_eq!(shown, json!(expected));
    // Turning the filter off brings every line back.
    browser
        .eval(
            "document.getElementById('filter').click(); return true",
            vec![],
        )
        .await;
    browser
        .wait_for(
            "all rows again",
            "return document.querySelectorAll('.row:not([hidden])').length > 10",
        )
        .await;
    browser.quit().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn the_time_column_shows_clock_time_time_since_start_and_since_the_line_before() {
    let (svc, api, read) = setup().await;
    api.open("timed").await;
    // 0 s, 0.5 s, then a pause of a minute before 62.345 s and 62.4 s.
    let times = [
        "2026-11-20T10:00:00.000Z",
        "2026-11-20T10:00:00.500Z",
        "2026-11-20T10:01:02.345Z",
        "2026-11-20T10:01:02.400Z",
    ];
    let rows: Vec<_> = times
        .iter()
        .enumerate()
        .map(|(pos, time)| json!({"level": "info", "pos": pos, "out": format!("line {pos}\n"), "time": time}))
        .collect();
    api.put_ok("timed", &rows).await;
    let browser = Browser::start().await;
    browser.goto(&page(&svc, "timed", &read, "")).await;
    browser
        .wait_for("lines", "return document.body.innerText.includes('line 3')")
        .await;
    let duration = browser
        .wait_for("the total", "return document.body.dataset.duration")
        .await;
    assert_eq!(duration, json!("1m 02s"), "first line to last");
    const TIMES: &str =
        "return [...document.querySelectorAll('.row:not([hidden]) .ts')].map(e => e.textContent)";
    assert_eq!(
        browser.eval(TIMES, vec![]).await,
        json!([
            "10:00:00.000",
            "10:00:00.500",
            "10:01:02.345",
            "10:01:02.400"
        ]),
        "UTC clock time by default"
    );
    let choose = |mode: &'static str| {
        format!(
            "const s = document.getElementById('time-mode'); s.value = '{mode}'; \
             s.dispatchEvent(new Event('change')); return document.body.classList.contains('show-ts')"
        )
    };
    assert_eq!(
        browser.eval(&choose("start"), vec![]).await,
        json!(true),
        "choosing a mode shows the times"
    );
    assert_eq!(
        browser.eval(TIMES, vec![]).await,
        json!(["+0.000s", "+0.500s", "+1:02.345", "+1:02.400"])
    );
    browser.eval(&choose("delta"), vec![]).await;
    assert_eq!(
        browser.eval(TIMES, vec![]).await,
        json!(["", "+0.500s", "+1:01.845", "+0.055s"])
    );
    let gaps = browser
        .eval(
            "return [...document.querySelectorAll('.row.gap')].map(r => [r.dataset.line, r.querySelector('.ln').title])",
            vec![],
        )
        .await;
    assert_eq!(gaps, json!([["3", "1m 01s after the line before"]]));
    browser.screenshot("viewer-time-column").await;
    // The choice outlives the page.
    browser.goto(&page(&svc, "timed", &read, "")).await;
    browser
        .wait_for(
            "lines again",
            "return document.body.innerText.includes('line 3')",
        )
        .await;
    assert_eq!(
        browser
            .eval("return document.getElementById('time-mode').value", vec![])
            .await,
        json!("delta")
    );
    assert_eq!(browser.console_errors().await, Vec::<String>::new());
    browser.quit().await;
    svc.shutdown().await;
}

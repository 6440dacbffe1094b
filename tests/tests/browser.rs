//! The dashboard in a real browser (headless Chromium through chromedriver):
//! a coordinator signs in to the demo server, reads the 2020 figures,
//! drills down to a street, opens the annual report and the coverage table,
//! resolves a conflict, downloads a CSV and switches to English; the page
//! also works at a phone's width.
//!
//! Needs `chromium` and `chromium-driver` (Debian). Without them the test
//! is skipped with a loud message, except under `CI=true` (`.ci/run`
//! installs them), where it fails. `PUFA_UPDATE_SCREENSHOTS=1` writes the
//! screenshots shown in the README to `docs/screenshots/`.

use std::path::{Path, PathBuf};

use pufa_demo as demo;
use pufa_server::Config;
use pufa_tests::webdriver::{Browser, Element};

fn screenshot_dir(scratch: &Path) -> PathBuf {
    if std::env::var_os("PUFA_UPDATE_SCREENSHOTS").is_some() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
        std::fs::create_dir_all(&dir).expect("docs/screenshots");
        dir
    } else {
        scratch.to_path_buf()
    }
}

async fn text_of(b: &Browser, css: &str) -> String {
    let e: Element = b.find(css).await.unwrap();
    b.text(&e).await.unwrap()
}

async fn number(b: &Browser, css: &str) -> u64 {
    let t = text_of(b, css).await;
    t.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{css} is not a number: {t:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_finds_the_2020_figures_in_a_browser() {
    let downloads = tempfile::tempdir().unwrap();
    let browser = match Browser::start(1280, 1000, downloads.path()).await {
        Ok(Some(b)) => b,
        Ok(None) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but chromium/chromedriver are missing (.ci/run installs them)")
        }
        Ok(None) => {
            eprintln!(
                "\n\n*** SKIPPED browser test: chromium and chromedriver are not installed \
                 (apt-get install chromium chromium-driver) ***\n\n"
            );
            return;
        }
        Err(e) => panic!("the browser did not start: {e}"),
    };
    let data = tempfile::tempdir().unwrap();
    let shots_scratch = tempfile::tempdir().unwrap();
    let shots = screenshot_dir(shots_scratch.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let demo = demo::launch(
        Config::new(data.path()),
        listener,
        demo::SEED_DEFAULT,
        async {
            let _ = stopped.await;
        },
    )
    .await
    .expect("the demo starts");
    let base = demo.url.clone();
    let expected = demo.figures.totals.clone();
    let district = demo.coordinators[0].token.expose().to_string();

    // Signed out, any page leads to the sign-in form.
    browser.goto(&format!("{base}/")).await.unwrap();
    assert!(browser.current_url().await.unwrap().ends_with("/login"));
    browser.screenshot(&shots.join("login.png")).await.unwrap();
    let token = browser.find("input[name=token]").await.unwrap();
    browser.type_into(&token, &district).await.unwrap();
    // The token form sits below the username-and-password form.
    let submit = browser
        .find("#token-login button[type=submit]")
        .await
        .unwrap();
    browser.click_and_wait(&submit).await.unwrap();

    // The overview opens on 2020, the latest year with data.
    assert!(browser.current_url().await.unwrap().ends_with('/'));
    let page = browser.page_text().await.unwrap();
    assert!(
        page.contains("法律大讲堂") && page.contains("迎泽区"),
        "{page}"
    );
    assert_eq!(
        number(&browser, "#lectures-count").await,
        expected.lectures.count
    );
    assert_eq!(
        number(&browser, "#corners-active").await,
        expected.library_corners.active
    );
    assert_eq!(number(&browser, "#sites-provincial").await, 3);
    assert_eq!(number(&browser, "#sites-municipal").await, 5);
    assert!(browser.find("svg.chart").await.is_ok(), "the month chart");
    browser
        .screenshot(&shots.join("overview.png"))
        .await
        .unwrap();

    // Drill down to the first street: its own figures, breadcrumbs back.
    let child = &expected.children[0];
    let link = browser
        .find(&format!("tr[data-org=\"{}\"] a", child.org.code))
        .await
        .unwrap();
    browser.click_and_wait(&link).await.unwrap();
    assert_eq!(
        number(&browser, "#lectures-count").await,
        child.lectures.count
    );
    assert!(text_of(&browser, "nav.crumbs")
        .await
        .contains(&child.org.name));

    // The annual report: the paragraph quotes the figures.
    let report = browser.find("nav.menu a[href=\"/report\"]").await.unwrap();
    browser.click_and_wait(&report).await.unwrap();
    let paragraph = text_of(&browser, "#report-text textarea").await;
    assert!(paragraph.contains("近百场"), "{paragraph}");
    assert!(
        paragraph.contains("3个社区(村)被评为省级示范"),
        "{paragraph}"
    );
    browser.screenshot(&shots.join("report.png")).await.unwrap();

    // Coverage: every community and village listed.
    let coverage = browser
        .find("nav.menu a[href=\"/coverage\"]")
        .await
        .unwrap();
    browser.click_and_wait(&coverage).await.unwrap();
    assert_eq!(number(&browser, "#coverage-units").await, 113);
    assert_eq!(number(&browser, "#coverage-no-corner").await, 0);
    browser
        .screenshot(&shots.join("coverage.png"))
        .await
        .unwrap();

    // Resolve a conflict by keeping the overwritten value.
    let conflicts = browser
        .find("nav.menu a[href=\"/conflicts\"]")
        .await
        .unwrap();
    browser.click_and_wait(&conflicts).await.unwrap();
    let before = browser.find_all("article.conflict").await.unwrap().len();
    assert_eq!(
        before as u64, expected.conflicts_open,
        "every open conflict listed"
    );
    browser
        .screenshot(&shots.join("conflicts.png"))
        .await
        .unwrap();
    let choices = browser
        .find_all("article.conflict:first-of-type input[type=radio][name=choice]")
        .await
        .unwrap();
    browser.click(&choices[1]).await.unwrap();
    let resolve = browser
        .find("article.conflict:first-of-type button[type=submit]")
        .await
        .unwrap();
    browser.click_and_wait(&resolve).await.unwrap();
    let after = browser.find_all("article.conflict").await.unwrap().len();
    assert_eq!(after, before - 1, "one conflict fewer");
    assert!(browser.find(".notice[role=status]").await.is_ok());

    // Download the lectures of 2020 as CSV from the report page.
    browser
        .goto(&format!("{base}/report?year=2020"))
        .await
        .unwrap();
    let csv = browser
        .find("#downloads a[href^=\"/export/lecture.csv\"]")
        .await
        .unwrap();
    browser.click(&csv).await.unwrap();
    let file = browser.wait_download(".csv").await.unwrap();
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(&bytes[..3], b"\xEF\xBB\xBF", "UTF-8 BOM for Excel");
    let text = String::from_utf8(bytes[3..].to_vec()).unwrap();
    assert_eq!(
        text.trim_end().split("\r\n").count() as u64,
        expected.lectures.count + 1,
        "header + every 2020 lecture"
    );

    // Devices, then English.
    browser.goto(&format!("{base}/devices")).await.unwrap();
    browser
        .screenshot(&shots.join("devices.png"))
        .await
        .unwrap();
    let english = browser.find_text("a", "English").await.unwrap();
    browser.click_and_wait(&english).await.unwrap();
    let page = browser.page_text().await.unwrap();
    assert!(
        page.contains("Devices") && page.contains("Sign out"),
        "{page}"
    );
    browser.goto(&format!("{base}/report")).await.unwrap();
    let paragraph = text_of(&browser, "#report-text textarea").await;
    assert!(paragraph.starts_with("In 2020,"), "{paragraph}");
    browser
        .screenshot(&shots.join("report-en.png"))
        .await
        .unwrap();

    // A phone-sized window: the page fits, tables scroll inside their box.
    browser.set_window(390, 844).await.unwrap();
    browser.goto(&format!("{base}/?lang=zh")).await.unwrap();
    assert_eq!(
        number(&browser, "#lectures-count").await,
        expected.lectures.count
    );
    browser.screenshot(&shots.join("phone.png")).await.unwrap();

    // On the phone, the district approves 2020 for the whole district.
    browser
        .goto(&format!("{base}/periods?year=2020"))
        .await
        .unwrap();
    let approve = browser
        .find("#periods tbody tr:first-of-type form.step:has(input[value=approve]) button")
        .await
        .unwrap();
    browser.click_and_wait(&approve).await.unwrap();
    assert!(browser.find(".notice[role=status]").await.is_ok());
    let state = text_of(&browser, "#periods tbody tr:first-of-type .state").await;
    assert_eq!(state, "已审核");
    let locked = text_of(&browser, "#periods tbody tr:nth-of-type(2) .locked").await;
    assert!(locked.contains("已锁定"), "{locked}");
    browser
        .screenshot(&shots.join("periods.png"))
        .await
        .unwrap();

    browser.close().await;
    let _ = stop.send(());
    demo.wait().await.expect("clean shutdown");
}

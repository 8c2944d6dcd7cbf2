//! The web UI in a real browser: headless Chromium (Debian's `chromium`) driven over
//! WebDriver (`chromedriver`, on a free loopback port) against the real `paz-server` on the
//! real Docker Engine. With real clicks and typing: sign in; create a service (first with a
//! validation error shown next to its field); watch it turn healthy without a reload;
//! deploy and watch the deployment's steps arrive; scale; roll back; follow the logs; sign
//! out and be refused.
//!
//! It saves screenshots of the main pages under the target dir, or into `docs/screenshots/`
//! with `PAZ_UPDATE_SCREENSHOTS=1` (the README shows the dashboard's).
//!
//! Needs Docker and Chromium + chromedriver: with `CI=true` a missing one fails the test,
//! otherwise it is skipped loudly. `scripts/test.sh` installs the browser.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use fantoccini::{Client, ClientBuilder, Locator};

use crate::deploy::{Cluster, demo};

/// How long any one wait in the browser may take.
const WAIT: Duration = Duration::from_secs(60);

/// `chromium` and `chromedriver`, or `None` (skipped loudly) when they are missing outside
/// CI; with `CI=true` a missing browser fails the test.
fn require_browser(test: &str) -> Option<(PathBuf, PathBuf)> {
    let find = |name: &str| {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        })
    };
    match (find("chromium"), find("chromedriver")) {
        (Some(browser), Some(driver)) => Some((browser, driver)),
        _ if std::env::var("CI").as_deref() == Ok("true") => panic!(
            "{test} needs chromium and chromedriver (apt-get install chromium chromium-driver; scripts/test.sh does)"
        ),
        _ => {
            eprintln!(
                "\n*** SKIPPED {test}: needs chromium and chromedriver (apt-get install chromium chromium-driver) ***\n"
            );
            None
        }
    }
}

/// A chromedriver process, killed (by its pid) when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start(binary: &Path, log: &Path) -> Result<Driver> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start chromedriver")?;
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = reqwest::get(format!("{}/status", driver.url))
                .await
                .ok()
                .filter(|r| r.status().is_success());
            if ready.is_some() {
                return Ok(driver);
            }
            ensure!(
                Instant::now() < deadline,
                "chromedriver did not answer on {} within 20 s",
                driver.url
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A browser session; `phone` emulates a 390 × 844 screen.
    async fn browser(&self, chromium: &Path, profile: &Path, phone: bool) -> Result<Client> {
        let mut capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-extensions", "--no-first-run", "--no-default-browser-check",
                    "--window-size=1280,900", "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        if phone {
            capabilities["goog:chromeOptions"]["mobileEmulation"] = serde_json::json!({
                "deviceMetrics": { "width": 390, "height": 844, "pixelRatio": 1 },
            });
        }
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .context("open a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where screenshots go.
fn screenshot_dir() -> PathBuf {
    if std::env::var_os("PAZ_UPDATE_SCREENSHOTS").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots")
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
    }
}

async fn screenshot(c: &Client, name: &str) -> Result<()> {
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir)?;
    // Let the relative times and live state settle before the picture.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = c.screenshot().await?;
    std::fs::write(dir.join(format!("{name}.png")), png)?;
    Ok(())
}

/// The text of the first element matching `css`, or "" when there is none.
async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits (at most [`WAIT`]) until the element `css` shows `text`.
async fn wait_text(c: &Client, css: &str, text: &str) -> Result<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let shown = text_of(c, css).await;
        if shown.contains(text) {
            return Ok(shown);
        }
        if Instant::now() > deadline {
            bail!("{css} still shows {shown:?} after {WAIT:?}, not {text:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `count` elements match `css`.
async fn wait_count(c: &Client, css: &str, count: usize) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = c.find_all(Locator::Css(css)).await?.len();
        if found == count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{found} elements match {css} after {WAIT:?}, not {count}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the browser shows its own error page (a navigation failed).
async fn on_error_page(c: &Client) -> bool {
    c.execute(
        "return !!document.getElementById('main-frame-error') \
         || document.body.classList.contains('neterror');",
        vec![],
    )
    .await
    .ok()
    .and_then(|v| v.as_bool())
    .unwrap_or(false)
}

/// Opens `url`. Chromium cancels page loads when the host's addresses change
/// (`ERR_NETWORK_CHANGED`), as they do whenever Docker adds or removes a container's
/// interface; such a load is tried again (at most 5 times).
async fn visit(c: &Client, url: &str) -> Result<()> {
    for attempt in 1..=5 {
        match c.goto(url).await {
            Ok(()) if !on_error_page(c).await => return Ok(()),
            Ok(()) => eprintln!("ui test: {url} did not load (network change?); attempt {attempt}"),
            Err(error) => eprintln!("ui test: {url}: {error}; attempt {attempt}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    bail!("{url} did not load in 5 attempts")
}

/// Waits until the browser is at `path` (after a click or a redirect), loading it again
/// if the load was cancelled ([`visit`]).
async fn arrive(c: &Client, base: &str, path: &str) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let url = c.current_url().await?;
        let here = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        if url.scheme() == "chrome-error" || on_error_page(c).await {
            eprintln!("ui test: the way to {path} was cut (network change?); loading it again");
            return visit(c, &format!("{base}{path}")).await;
        }
        if here == path || url.path() == path {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the browser is at {here}, not {path}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The page's message says `text`; a page loaded again (after a cancelled load) has had
/// its message taken already, which is noted.
async fn flash_says(c: &Client, text: &str) -> Result<()> {
    let shown = text_of(c, ".flash").await;
    if shown.is_empty() {
        eprintln!("ui test: no message (the page was loaded again), expected {text:?}");
        return Ok(());
    }
    ensure!(
        shown.contains(text),
        "the message says {shown:?}, not {text:?}"
    );
    Ok(())
}

/// Types `text` into the field `css`, replacing what it holds.
async fn type_into(c: &Client, css: &str, text: &str) -> Result<()> {
    let field = c.find(Locator::Css(css)).await?;
    field.clear().await?;
    field.send_keys(text).await?;
    Ok(())
}

async fn click(c: &Client, css: &str) -> Result<()> {
    c.find(Locator::Css(css)).await?.click().await?;
    Ok(())
}

/// Says how far the test got, and when (for the CI log).
fn progress(started: Instant, what: &str) {
    eprintln!(
        "ui test: {what} after {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Opens the form section whose summary reads `title`.
async fn open_section(c: &Client, title: &str) -> Result<()> {
    c.find(Locator::XPath(&format!(
        "//details/summary[normalize-space()='{title}']"
    )))
    .await?
    .click()
    .await?;
    Ok(())
}

/// Marks the document; [`same_document`] tells whether the page was reloaded since.
async fn mark(c: &Client) -> Result<()> {
    c.execute("window.__pazMark = 'not reloaded';", vec![])
        .await?;
    Ok(())
}

async fn same_document(c: &Client) -> Result<bool> {
    let value = c
        .execute("return window.__pazMark || null;", vec![])
        .await?;
    Ok(value.as_str() == Some("not reloaded"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_in_a_real_browser() -> Result<()> {
    let Some((chromium, chromedriver)) = require_browser("the_web_ui_in_a_real_browser") else {
        return Ok(());
    };
    let Some((cluster, _one_at_a_time)) =
        Cluster::begin("the_web_ui_in_a_real_browser", "ui").await?
    else {
        return Ok(());
    };
    // A running service first: Chromium cancels its requests (ERR_NETWORK_CHANGED) when the
    // host's addresses change, as when the Paz network's bridge comes up with its first
    // container. With one running throughout, later containers only add links to it.
    let mut api = demo("api", 1);
    api.deploy.drain_timeout = paz::core::HumanDuration::from_secs(1);
    cluster.create(&api).await?;
    let scratch = tempfile::tempdir()?;
    let driver = Driver::start(&chromedriver, &scratch.path().join("chromedriver.log")).await?;
    let c = driver
        .browser(&chromium, &scratch.path().join("profile"), false)
        .await?;
    let phone_profile = scratch.path().join("phone");
    let phone = || driver.browser(&chromium, &phone_profile, true);
    let result = drive(&c, &cluster, phone).await;
    if result.is_err() {
        let _ = screenshot(&c, "failure").await;
        if let Ok(source) = c.source().await {
            eprintln!("the page at the failure:\n{source}");
        }
    }
    c.close().await?;
    result
}

async fn drive<F: std::future::Future<Output = Result<Client>>>(
    c: &Client,
    cluster: &Cluster,
    phone: impl Fn() -> F,
) -> Result<()> {
    let started = Instant::now();
    let base = cluster.server().url.clone();
    let token = std::fs::read_to_string(cluster.data.join("admin-token"))?
        .trim()
        .to_owned();
    // Traffic through the router, for the charts.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, router) = (stop.clone(), cluster.router());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                for host in ["web.localhost", "api.localhost"] {
                    let _ = client
                        .get(format!("http://{router}/"))
                        .header("host", host)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // Sign in.
    visit(c, &format!("{base}/")).await?;
    arrive(c, &base, "/login").await?;
    screenshot(c, "sign-in").await?;
    type_into(c, "#token", "not-the-token").await?;
    click(c, "button[type=submit]").await?;
    wait_text(c, "#err-token", "This is not the admin token.").await?;
    type_into(c, "#token", &token).await?;
    click(c, "button[type=submit]").await?;
    wait_text(c, "h1", "Dashboard").await?;
    progress(started, "signed in");

    // Create a service: first a name the validator refuses, shown next to the field.
    click(c, "header nav a[href='/services']").await?;
    wait_text(c, "h1", "Services").await?;
    click(c, "a[href='/services/new']").await?;
    wait_text(c, "h1", "New service").await?;
    type_into(c, "#name", "Web_1").await?;
    type_into(c, "#image", "paz-demo:v1").await?;
    type_into(c, "#instances", "1").await?;
    type_into(c, "#ports", "8080").await?;
    open_section(c, "Health check").await?;
    type_into(c, "#health_path", "/health").await?;
    open_section(c, "Deploys").await?;
    type_into(c, "#deploy_health_timeout", "10s").await?;
    type_into(c, "#drain_timeout", "1s").await?;
    click(c, "form.service-form button[type=submit]").await?;
    let error = wait_text(c, "#err-name", "Web_1").await?;
    let expected = paz::core::names::check_service_name("Web_1").unwrap_err();
    ensure!(
        error.contains(&expected),
        "the error next to the name is the validator's: {error:?} vs {expected:?}"
    );
    let invalid = c
        .find(Locator::Css("#name"))
        .await?
        .attr("aria-invalid")
        .await?;
    ensure!(
        invalid.as_deref() == Some("true"),
        "the name field is marked invalid"
    );
    screenshot(c, "new-service-error").await?;
    type_into(c, "#name", "web").await?;
    click(c, "form.service-form button[type=submit]").await?;
    arrive(c, &base, "/services/web").await?;
    flash_says(c, "Created web").await?;
    progress(started, "created web");

    // It turns healthy on the page, without a reload.
    mark(c).await?;
    wait_text(c, "#svc-instances", "healthy").await?;
    wait_text(c, "#svc-summary", "1 healthy of 1").await?;
    ensure!(same_document(c).await?, "the service page was reloaded");
    progress(started, "healthy");

    // Deploy v2: the deployment's page shows its steps as they happen.
    type_into(c, "#deploy-image", "paz-demo:v2").await?;
    click(c, "form[action='/services/web/deploy'] button").await?;
    arrive(c, &base, "/deployments/web-2").await?;
    mark(c).await?;
    let at_first = text_of(c, "#deployment").await;
    wait_text(c, "#deployment", "succeeded").await?;
    ensure!(same_document(c).await?, "the deployment page was reloaded");
    ensure!(
        !c.find_all(Locator::Css("#deployment ol.steps li"))
            .await?
            .is_empty(),
        "the steps are listed"
    );
    if at_first.contains("succeeded") {
        eprintln!("note: web-2 had succeeded before its page loaded: {at_first:?}");
    }
    screenshot(c, "deployment").await?;
    progress(started, "deployed v2");

    // Scale to 2: both instances turn healthy live.
    click(c, "div.actions a[href='/services/web']").await?;
    arrive(c, &base, "/services/web").await?;
    type_into(c, "#scale-instances", "2").await?;
    click(c, "form[action='/services/web/scale'] button").await?;
    flash_says(c, "Scaled web to 2 instances.").await?;
    mark(c).await?;
    wait_count(c, "#svc-instances tr.instance[data-state='healthy']", 2).await?;
    ensure!(same_document(c).await?, "the service page was reloaded");

    // Roll back to v1: the page says what will happen, then it happens.
    click(c, "a[aria-label='Roll back web to v1']").await?;
    wait_text(c, "h1", "Roll back web to v1?").await?;
    click(
        c,
        "form[action='/services/web/rollback'] button[type=submit]",
    )
    .await?;
    arrive(c, &base, "/deployments/web-3").await?;
    wait_text(c, "#deployment", "succeeded").await?;
    visit(c, &format!("{base}/services/web")).await?;
    wait_text(c, "#svc-summary", "paz-demo:v1").await?;
    wait_text(c, "#svc-summary", "2 healthy of 2").await?;
    progress(started, "rolled back");

    // Logs, followed over SSE.
    visit(c, &format!("{base}/services/web/logs")).await?;
    wait_text(c, "#log", "demo-app: listening").await?;
    click(c, "#log-pause").await?;
    let pressed = c
        .find(Locator::Css("#log-pause"))
        .await?
        .attr("aria-pressed")
        .await?;
    ensure!(pressed.as_deref() == Some("true"), "pause is pressed");
    screenshot(c, "logs").await?;
    progress(started, "logs");

    // Charts draw a point per sample of the router's metrics (every 10 s) after the first:
    // a few for the pictures.
    let charted = started + Duration::from_secs(45);
    tokio::time::sleep(charted.saturating_duration_since(Instant::now())).await;
    visit(c, &format!("{base}/services/web")).await?;
    wait_text(c, "#svc-instances", "healthy").await?;
    screenshot(c, "service").await?;
    progress(started, "service page");
    visit(c, &format!("{base}/services")).await?;
    wait_text(c, "#services", "web").await?;
    screenshot(c, "services").await?;
    progress(started, "services page");
    visit(c, &format!("{base}/hosts")).await?;
    wait_text(c, "#hosts", "ready").await?;
    screenshot(c, "hosts").await?;
    progress(started, "hosts page");
    visit(c, &format!("{base}/")).await?;
    wait_text(c, "#dashboard", "All good").await?;
    screenshot(c, "dashboard").await?;
    progress(started, "dashboard page");
    // On a phone, in the same session.
    let session = c.get_named_cookie("paz_session").await?;
    let small = phone().await?;
    visit(&small, &format!("{base}/login")).await?;
    small.add_cookie(session.clone()).await?;
    visit(&small, &format!("{base}/services/web")).await?;
    wait_text(&small, "#svc-instances", "healthy").await?;
    let width = small
        .execute("return document.documentElement.scrollWidth;", vec![])
        .await?;
    if width.as_u64() != Some(390) {
        let wide = small
            .execute(
                "const out = []; document.querySelectorAll('body *').forEach(e => { \
                 const r = e.getBoundingClientRect(); \
                 if (r.right > 391) out.push(e.tagName + '.' + e.className + ' ' + Math.round(r.right)); }); \
                 return out.slice(0, 12);",
                vec![],
            )
            .await?;
        bail!("the service page is {width} px wide on a 390 px phone: {wide}");
    }
    screenshot(&small, "service-phone").await?;
    progress(started, "service-phone page");
    small.close().await?;
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.await;
    progress(started, "traffic stopped");

    // Sign out, and be refused: the browser and the old cookie.
    let old = format!("paz_session={}", session.value());
    click(c, "form.signout button").await?;
    wait_text(c, ".flash", "You are signed out.").await?;
    visit(c, &format!("{base}/services/web")).await?;
    arrive(c, &base, "/login").await?;
    let refused = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?
        .get(format!("{base}/services/web"))
        .header("cookie", &old)
        .send()
        .await?;
    ensure!(
        refused.status() == reqwest::StatusCode::SEE_OTHER
            && refused
                .headers()
                .get("location")
                .is_some_and(|l| l.to_str().unwrap_or("").starts_with("/login")),
        "the old session is refused: {}",
        refused.status()
    );
    eprintln!("the browser test took {:?}", started.elapsed());
    Ok(())
}

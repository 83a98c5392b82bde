//! The fan's waiting room in a real browser (Debian's Chromium, driven by npm
//! `playwright-core`): `gateway/tests/browser/fan.mjs` against this process's gateway,
//! with a booking worker and the draw scheduler running beside it. Screenshots of
//! every step land in `target/browser/fan/`.
//!
//! Needs `node`, `/usr/bin/chromium` (or `CHROMIUM`) and `npm ci` run in
//! `gateway/tests/browser`; `deploy/test` provides all three.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use sqlx::PgPool;

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, spawn_app_with};

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_fan_goes_from_the_countdown_to_a_confirmation_in_a_browser(pool: PgPool) {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci` in {} (deploy/test does)",
        dir.display()
    );
    // Everyone in this test comes from 127.0.0.1: the browser's two fans, the
    // script's twenty, the admin. The per-address limit is for the internet.
    let app = spawn_app_with(pool, |config| {
        config.limits.per_ip_per_second = 10_000;
        config.limits.per_ip_burst = 10_000;
    })
    .await;
    let (stop_worker, worker) = app.start_worker();
    // The draw scheduler, as the waiting-room process runs it.
    let scheduler = {
        let (pool, mut redis, keys) = (app.pool.clone(), app.redis.clone(), app.keys.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                if let Err(error) = waiting_room::draw_due_sales(&pool, &mut redis, &keys).await {
                    tracing::warn!(%error, "draw failed");
                }
            }
        })
    };

    let screenshots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/browser/fan");
    // Last run's pictures must not stand in for this run's.
    let _ = std::fs::remove_dir_all(&screenshots);
    let base = app.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("fan.mjs")
            .current_dir(&dir)
            .env("BASE_URL", base)
            .env("ADMIN_EMAIL", ADMIN_EMAIL)
            .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("SCREENSHOTS", &screenshots)
            .output()
    })
    .await
    .expect("the browser task")
    .expect("node runs (is Node.js installed?)");
    scheduler.abort();
    stop_worker.cancel();
    worker
        .await
        .expect("worker task")
        .expect("worker ends cleanly");

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser scenario failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // Every step the issue names was walked through and photographed.
    for shot in [
        "01-countdown.png",
        "02-in-line.png",
        "03-paused.png",
        "04-held.png",
        "05-confirmed.png",
        "06-other-fan-sees-sold.png",
    ] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/browser/fan")
            .join(shot);
        assert!(
            path.is_file(),
            "no screenshot {}:\n{stdout}",
            path.display()
        );
    }
}

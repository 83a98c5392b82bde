//! The pages in a real browser (Debian's Chromium, driven by npm `playwright-core`):
//! the scripts in `gateway/tests/browser/` against this process's gateway, with a
//! booking worker, the waiting room's scheduler (draws, line samples) and payments'
//! refund loop (refunds' money, cancellations, the PDFs) beside it, as the farm runs
//! them. Screenshots of every step land in `target/browser/<script>/`.
//!
//! Needs `node`, `/usr/bin/chromium` (or `CHROMIUM`) and `npm ci` run in
//! `gateway/tests/browser`; `deploy/test` provides all three. The dashboard's sale is
//! driven by the load generator's binary (`loadgen sale`), which `cargo test
//! --workspace` builds beside this test. Nothing sends mail here: the confirmation
//! links the outbox holds are copied to a folder the script reads (`MAILBOX`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use gateway::config::Config;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::support::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, spawn_app_with};
use crate::support::sale::payments_of;

/// Runs `script` against a fresh farm; returns its screenshot folder after
/// asserting it succeeded.
async fn run_scenario(pool: PgPool, script: &str) -> PathBuf {
    run_scenario_with(pool, script, |_| {}).await
}

/// [`run_scenario`] with the gateway's config adjusted by `adjust` (after the
/// scenarios' own limits).
async fn run_scenario_with(
    pool: PgPool,
    script: &str,
    adjust: impl FnOnce(&mut Config),
) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci` in {} (deploy/test does)",
        dir.display()
    );
    // Everyone in these scenarios comes from 127.0.0.1: the browser's pages, the
    // script's fans, the admin. The per-address limit is for the internet.
    let app = spawn_app_with(pool, |config| {
        config.limits.per_ip_per_second = 10_000;
        config.limits.per_ip_burst = 10_000;
        adjust(config);
    })
    .await;
    let (stop_worker, worker) = app.start_worker();
    // The waiting room's scheduler, as the farm runs it (draws due sales quickly).
    let stop_scheduler = tokio_util::sync::CancellationToken::new();
    let scheduler = tokio::spawn(waiting_room::schedule(
        app.pool.clone(),
        app.redis.clone(),
        app.keys.clone(),
        Duration::from_millis(250),
        stop_scheduler.clone(),
    ));
    // Payments' refund loop, as the payments service runs it: the money of each
    // refund, an event's cancellation order by order, the invoices' PDFs.
    let stop_refunds = tokio_util::sync::CancellationToken::new();
    let refunds = tokio::spawn(payments::refunds::run(
        payments_of(&app, 10),
        stop_refunds.clone(),
    ));

    // The load generator, built beside this test binary (target/<profile>/deps/..).
    let loadgen = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("loadgen")))
        .filter(|path| path.is_file())
        .expect("the loadgen binary beside this test's: run the suite with `cargo test --workspace` (deploy/test does)");
    let name = script.trim_end_matches(".mjs");
    let screenshots = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/browser")
        .join(name);
    // Last run's pictures must not stand in for this run's.
    let _ = std::fs::remove_dir_all(&screenshots);
    // The fans' mail, as far as the scenarios read it: the confirmation links.
    let mailbox =
        std::env::temp_dir().join(format!("onsale-mailbox-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&mailbox).expect("the mailbox folder");
    let stop_mail = CancellationToken::new();
    let mail = tokio::spawn(deliver_links(
        app.pool.clone(),
        mailbox.clone(),
        stop_mail.clone(),
    ));
    let (base, shots, script) = (app.base.clone(), screenshots.clone(), script.to_owned());
    let inbox = mailbox.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .current_dir(&dir)
            .env("BASE_URL", base)
            .env("ADMIN_EMAIL", ADMIN_EMAIL)
            .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("SCREENSHOTS", &shots)
            .env("LOADGEN", loadgen)
            .env("MAILBOX", inbox)
            .output()
    })
    .await
    .expect("the browser task")
    .expect("node runs (is Node.js installed?)");
    stop_mail.cancel();
    mail.await.expect("mailbox task");
    let _ = std::fs::remove_dir_all(&mailbox);
    stop_scheduler.cancel();
    scheduler.await.expect("scheduler task");
    stop_refunds.cancel();
    refunds.await.expect("refund loop task");
    stop_worker.cancel();
    worker
        .await
        .expect("worker task")
        .expect("worker ends cleanly");

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The scenario's step log (shown with --nocapture, and with any failure).
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser scenario {name} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    screenshots
}

/// Copies every confirmation link the outbox holds into `dir` as it is written,
/// one `<seq>.json` ({"email", "token"}) each, until `stop`: the inbox a script
/// reads where a fan would read their email. Each file appears whole (written
/// aside, then renamed).
async fn deliver_links(pool: PgPool, dir: PathBuf, stop: CancellationToken) {
    let mut after = 0_i64;
    loop {
        let links: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT seq, payload->>'email', payload->>'token' FROM outbox.messages
             WHERE kind = 'account.verification_requested' AND seq > $1
             ORDER BY seq",
        )
        .bind(after)
        .fetch_all(&pool)
        .await
        .expect("the outbox's confirmation links");
        for (seq, email, token) in links {
            let aside = dir.join(format!("{seq}.json.part"));
            let mail = json!({"email": email, "token": token}).to_string();
            std::fs::write(&aside, mail).expect("a link into the mailbox");
            std::fs::rename(&aside, dir.join(format!("{seq}.json")))
                .expect("a link into the mailbox");
            after = seq;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

fn assert_shots(dir: &std::path::Path, shots: &[&str]) {
    for shot in shots {
        let path = dir.join(shot);
        assert!(path.is_file(), "no screenshot {}", path.display());
    }
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_fan_goes_from_the_countdown_to_a_confirmation_in_a_browser(pool: PgPool) {
    let shots = run_scenario(pool, "fan.mjs").await;
    // Every step the scenario walks through was photographed.
    assert_shots(
        &shots,
        &[
            "c-home-closed-sale-390.png",
            "c-seat-map-12-seats-390.png",
            "01-countdown.png",
            "02-in-line.png",
            "03-paused.png",
            "04-held.png",
            "05-confirmed.png",
            "06-other-fan-sees-sold.png",
        ],
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_operator_pauses_rerates_and_resumes_a_live_sale_from_the_dashboard(pool: PgPool) {
    let shots = run_scenario(pool, "ops.mjs").await;
    assert_shots(
        &shots,
        &[
            "01-dashboard.png",
            "02-paused.png",
            "02-paused-fan.png",
            "03-audit.png",
            "04-fan-refused.png",
        ],
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_fan_sees_reads_and_reissues_their_tickets_in_a_browser(pool: PgPool) {
    let shots = run_scenario(pool, "tickets.mjs").await;
    assert_shots(
        &shots,
        &[
            "01-event-tickets-390.png",
            "02-orders-390.png",
            "03-orders-desktop.png",
            "04-reissue-confirm.png",
            "05-reissued-desktop.png",
            "06-orders-empty-390.png",
        ],
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_fan_refunds_a_ticket_and_an_operator_cancels_the_show_in_a_browser(pool: PgPool) {
    let shots = run_scenario(pool, "money.mjs").await;
    assert_shots(
        &shots,
        &[
            "01-orders-paid-390.png",
            "02-orders-desktop.png",
            "03-refund-choice-390.png",
            "04-refund-confirm-390.png",
            "05-refunded-390.png",
            "06-refused-desktop.png",
            "07-ops-cancel-card.png",
            "08-ops-cancel-confirm.png",
            "09-ops-cancelled.png",
            "10-ops-cancelled-reloaded.png",
            "11-ops-cancelled-390.png",
            "12-orders-refunded-390.png",
        ],
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn the_door_admits_offline_and_reports_the_double_entry_in_a_browser(pool: PgPool) {
    let shots = run_scenario(pool, "door.mjs").await;
    assert_shots(
        &shots,
        &[
            "01-admitted.png",
            "02-already-in.png",
            "03-offline.png",
            "04-conflict.png",
            "05-not-staff.png",
            "06-ops-door.png",
            "07-camera.png",
        ],
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_fans_session_refreshes_silently_and_ends_everywhere_in_a_browser(pool: PgPool) {
    let shots = run_scenario(pool, "sessions.mjs").await;
    assert_shots(
        &shots,
        &[
            "01-refreshed-silently.png",
            "02-signed-out-elsewhere.png",
            "03-signed-out.png",
        ],
    );
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_fan_confirms_their_email_and_then_joins_in_a_browser(pool: PgPool) {
    let shots = run_scenario_with(pool, "verify.mjs", |config| {
        config.auth.require_verified_email = true;
    })
    .await;
    assert_shots(
        &shots,
        &[
            "01-unconfirmed-390.png",
            "01b-unconfirmed-as-tapped-390.png",
            "02-link-sent-390.png",
            "03-confirmed-390.png",
            "04-in-line-390.png",
            "04b-in-line-viewport-390.png",
        ],
    );
}

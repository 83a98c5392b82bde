//! The history checker's seeded short run, as CI runs it: `loadgen chaos` on a
//! Postgres and a Redis of the run's own (which the nemesis crashes and restarts),
//! with booking-worker processes under the nemesis, scanners at the door and the
//! money path (payments, refunds, the cancellation at the end under faults). The run
//! fails itself when a promise breaks; this test also checks that the faults it
//! claims to inject were injected.

use std::process::Command;

#[allow(
    dead_code,
    reason = "the shared support module; this test uses only its binary lookup"
)]
mod support;

#[test]
fn a_seeded_run_under_faults_keeps_every_promise() {
    for var in ["REDIS_URL", "DATABASE_URL"] {
        assert!(
            std::env::var(var).is_ok(),
            "{var} must be set; run the tests through deploy/test"
        );
    }
    let output = Command::new(support::binary("loadgen"))
        .args([
            "chaos",
            "--seed",
            "7",
            "--seconds",
            "20",
            "--fans",
            "120",
            "--own-redis",
            "--own-postgres",
        ])
        .env("RUST_LOG", "error")
        .output()
        .expect("running loadgen chaos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the chaos run failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    let report_start = stdout.find("\n{").expect("a JSON report") + 1;
    let report_end = stdout.rfind("\n}").expect("a JSON report") + 2;
    let report: serde_json::Value =
        serde_json::from_str(&stdout[report_start..report_end]).expect("the report is JSON");
    for zero in [
        "doubles",
        "stranded",
        "inversions",
        "queue_number_problems",
        "redis_postgres_diffs",
    ] {
        assert_eq!(report[zero], 0, "{zero} in {report}");
    }
    let faults = report["faults"].as_object().expect("faults");
    for kind in [
        "SIGSTOP",
        "SIGKILL",
        "deleted mid-sale",
        "two drawers",
        "connections cut",
        "Redis killed",
        "Postgres crashed",
    ] {
        let injected: u64 = faults
            .iter()
            .filter(|(name, _)| name.contains(kind))
            .filter_map(|(_, count)| count.as_u64())
            .sum();
        assert!(injected > 0, "no {kind} fault injected: {report}");
    }
    assert!(
        report["accepted_requests"].as_u64().unwrap_or(0) > 100,
        "{report}"
    );
    assert!(report["holds"].as_u64().unwrap_or(0) > 50, "{report}");
    // The door, under the same faults: scanners raced on the same tickets.
    let door = &report["door"];
    for zero in ["admitted_twice", "answer_problems", "redis_postgres_diffs"] {
        assert_eq!(door[zero], 0, "door {zero} in {report}");
    }
    assert!(door["admitted"].as_u64().unwrap_or(0) > 10, "{report}");
    // The money path: its promises held, orders were paid and refunded, and the
    // cancellation finished under faults and a payments instance killed again and
    // again.
    let money = &report["money"];
    assert_eq!(money["violations"], 0, "money in {report}");
    assert!(money["invoices"].as_u64().unwrap_or(0) > 5, "{report}");
    assert!(money["credit_notes"].as_u64().unwrap_or(0) > 5, "{report}");
    assert!(
        money["cancelled_and_settled_within_seconds"].is_number(),
        "{report}"
    );
    let during = money["faults_during_the_cancellation"]
        .as_object()
        .expect("faults during the cancellation");
    assert!(
        during["payments passes killed"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    assert!(
        during.len() > 1,
        "the nemesis struck during the cancellation: {report}"
    );
    assert!(
        door["results"]["already_in"].as_u64().unwrap_or(0) > 10,
        "the scanners raced: {report}"
    );
}

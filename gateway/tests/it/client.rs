//! The document is usable, not only valid: a TypeScript client is generated from this
//! gateway's `/openapi.json` by `openapi-typescript` (npm), type-checked by `tsc`
//! against a fan's script (`gateway/tests/client/src/fan.ts`: a wrong path, field or
//! state name would not compile), and run with `openapi-fetch`: one fan signs up,
//! joins and is held by the booking worker.
//!
//! Needs `node` and `npm ci` run in `gateway/tests/client`; `deploy/test` does both.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use sqlx::PgPool;

use crate::support::helpers::spawn_app;

fn run(dir: &Path, program: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let output = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (is Node.js installed?): {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn a_client_generated_from_the_document_takes_a_fan_from_join_to_held(pool: PgPool) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/client");
    assert!(
        dir.join("node_modules/openapi-typescript").is_dir(),
        "the client generator is not installed: run `npm ci` in {} (deploy/test does)",
        dir.display()
    );
    let app = spawn_app(pool).await;
    let (_admin, event) = app.opened_event().await;
    let (stop_worker, worker) = app.start_worker();

    let (base, client_dir) = (app.base.clone(), dir.clone());
    let event_id = event.clone();
    let output = tokio::task::spawn_blocking(move || {
        let dir = client_dir.as_path();
        run(
            dir,
            "node_modules/.bin/openapi-typescript",
            &[&format!("{base}/openapi.json"), "-o", "src/schema.d.ts"],
            &[],
        );
        run(dir, "node_modules/.bin/tsc", &["-p", "."], &[]);
        run(
            dir,
            "node",
            &["dist/fan.js"],
            &[("BASE_URL", &base), ("EVENT_ID", &event_id)],
        )
    })
    .await
    .expect("the client task");
    stop_worker.cancel();
    worker
        .await
        .expect("worker task")
        .expect("worker ends cleanly");

    let stdout = String::from_utf8_lossy(&output.stdout);
    let held: Value = serde_json::from_str(stdout.trim()).expect("the client prints JSON");
    assert_eq!(held["state"], "held", "{held}");
    assert_eq!(held["seats"].as_array().map(Vec::len), Some(2), "{held}");
    // The request is this gateway's: journaled at the join, for this event.
    let request = held["request_id"].as_str().expect("request id");
    let (journaled_event,): (uuid::Uuid,) =
        sqlx::query_as("SELECT event_id FROM waiting_room.requests WHERE request_id = $1::uuid")
            .bind(request)
            .fetch_one(&app.pool)
            .await
            .expect("the join was journaled");
    assert_eq!(journaled_event.to_string(), event);
}

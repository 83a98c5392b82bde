//! The OpenAPI document tells the truth: schemathesis (PyPI) generates requests from
//! `/openapi.json` against this process's gateway, with a booking worker beside it,
//! and checks every answer against the document (`--checks all`: statuses, schemas,
//! headers, schema-valid requests accepted and schema-violating ones refused),
//! stateful sequences included. A fixed seed makes the CI run repeatable.
//!
//! Needs `schemathesis` on the PATH (or in `SCHEMATHESIS`); `deploy/test` installs it.
//! `SCHEMATHESIS_EXAMPLES` sets the examples per operation (default 200).
//!
//! A test binary of its own: schemathesis keeps both cores busy for a minute or two,
//! and cargo runs test binaries one after another, so its load never overlaps the
//! timing-sensitive tests in `it` (a broker restart, a consumer group rejoining).

#[path = "support/mod.rs"]
mod support;

use std::process::Command;

use sqlx::PgPool;

use crate::support::helpers::spawn_app_with;

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn schemathesis_finds_the_service_as_the_document_describes_it(pool: PgPool) {
    let program = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into());
    let examples = std::env::var("SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "200".into());
    // Every generated call comes from 127.0.0.1 with one account: the limits are for
    // the internet, not for this run.
    let app = spawn_app_with(pool, |config| {
        config.limits.per_ip_per_second = 1_000_000;
        config.limits.per_ip_burst = 1_000_000;
        config.limits.per_user_per_second = 1_000_000;
        config.limits.per_user_burst = 1_000_000;
    })
    .await;
    // Real ids for the generated calls to find: an open sale on a seeded venue.
    let (admin, _event) = app.opened_event().await;
    let (stop_worker, worker) = app.start_worker();
    let (base, token) = (app.base.clone(), admin.clone());
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    let work = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/schemathesis");
    std::fs::create_dir_all(&work).expect("a working directory under target/");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&program)
            // Its cache of crashes goes under target/, not into the source tree.
            .current_dir(&work)
            .arg("--config-file")
            .arg(&config)
            .args(["run", &format!("{base}/openapi.json")])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            // Signing out ends the session of the one token every generated call
            // carries; what follows would all be 401. `it::sessions` covers both.
            .args(["--exclude-path", "/v1/auth/logout"])
            .args(["--exclude-path", "/v1/auth/logout-all"])
            // Every check runs (schemathesis.toml says so; `--checks all` on the command
            // line would override the per-operation exceptions listed there).
            .args(["--seed", "20261130"])
            .args(["--max-examples", &examples])
            // One worker: hypothesis describing its filters from two threads at once
            // has crashed with "AST constructor recursion depth mismatch".
            .args(["--workers", "1", "--no-color"])
            .output()
    })
    .await
    .expect("the schemathesis task")
    .unwrap_or_else(|e| {
        panic!("schemathesis runs (pip install schemathesis; deploy/test installs it): {e}")
    });
    stop_worker.cancel();
    worker
        .await
        .expect("worker task")
        .expect("worker ends cleanly");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "schemathesis found the service and its document apart ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

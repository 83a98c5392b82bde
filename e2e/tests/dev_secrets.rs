//! `deploy/run`'s secrets: a value the user sets wins over the one the dev farm
//! makes and keeps, for the token secret and the webhook secret alike (a webhook
//! signed with the secret the user set must not be refused). The shell function
//! `deploy/run` calls (`keep_secret`, in `deploy/stack.sh`) runs here in bash; no
//! farm is started.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `script` in bash after sourcing `deploy/stack.sh`; its standard output.
fn bash(script: &str, env: &[(&str, &str)]) -> String {
    let mut command = Command::new("bash");
    command
        .current_dir(workspace())
        .arg("-c")
        .arg(format!("set -eu; source deploy/stack.sh; {script}"))
        .env_remove("ONSALE_AUTH__JWT_SECRET")
        .env_remove("ONSALE_PAYMENTS__WEBHOOK_SECRET");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("bash runs");
    assert!(
        output.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

#[test]
fn a_secret_the_user_sets_wins_and_a_made_one_is_kept() {
    let dir = std::env::temp_dir().join(format!("onsale-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("webhook_secret");
    let _ = std::fs::remove_file(&file);
    let keep = format!(
        "keep_secret ONSALE_PAYMENTS__WEBHOOK_SECRET {} 24; echo \"$ONSALE_PAYMENTS__WEBHOOK_SECRET\"; \
         bash -c 'echo \"$ONSALE_PAYMENTS__WEBHOOK_SECRET\"'",
        file.display()
    );

    // Set by the user: that value, exported to the services, and nothing written.
    let set = bash(
        &keep,
        &[("ONSALE_PAYMENTS__WEBHOOK_SECRET", "whsec-mine-0123456789")],
    );
    assert_eq!(set, "whsec-mine-0123456789\nwhsec-mine-0123456789\n");
    assert!(
        !file.exists(),
        "a made secret was written though the user set one"
    );

    // Not set: one is made (24 bytes, hex), exported, kept, and the same next time.
    let made = bash(&keep, &[]);
    let lines: Vec<&str> = made.lines().collect();
    assert_eq!(lines.len(), 2, "{made}");
    assert_eq!(lines[0], lines[1], "exported to the services");
    assert_eq!(lines[0].len(), 48);
    assert!(lines[0].bytes().all(|b| b.is_ascii_hexdigit()), "{made}");
    assert_eq!(std::fs::read_to_string(&file).expect("kept"), lines[0]);
    assert_eq!(bash(&keep, &[]), made, "kept across restarts");
    // A value set later still wins over the kept one.
    let later = bash(
        &keep,
        &[("ONSALE_PAYMENTS__WEBHOOK_SECRET", "whsec-later-0123456789")],
    );
    assert!(later.starts_with("whsec-later-0123456789\n"), "{later}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn deploy_run_takes_every_secret_through_keep_secret() {
    let run = std::fs::read_to_string(workspace().join("deploy/run")).expect("deploy/run");
    for var in [
        "ONSALE_AUTH__JWT_SECRET",
        "ONSALE_AUTH__IDEMPOTENCY_SECRET",
        "ONSALE_PAYMENTS__WEBHOOK_SECRET",
    ] {
        assert!(
            run.lines().any(|line| line
                .trim_start()
                .starts_with(&format!("keep_secret {var} "))),
            "deploy/run does not take {var} through keep_secret"
        );
        assert!(
            !run.contains(&format!("{var}=")),
            "deploy/run assigns {var} itself, over the user's value"
        );
    }
}

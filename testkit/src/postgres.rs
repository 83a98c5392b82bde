//! A private Postgres.
//!
//! Postgres refuses to run as root: as root, the server runs as the `postgres` user
//! (or `onsale-pg`, which `deploy/stack.sh` creates) through `runuser`.

use std::path::PathBuf;
use std::process::Command;

/// A Postgres on a free port with its data in a temporary directory; stopped and
/// removed when dropped.
pub struct PrivatePostgres {
    pub port: u16,
    data: PathBuf,
    bin: PathBuf,
    user: Option<&'static str>,
}

fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's binaries under /usr/lib/postgresql (apt-get install postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("a PostgreSQL version with pg_ctl")
}

impl PrivatePostgres {
    /// Initialises and starts a server (a few seconds: `initdb`).
    pub fn start() -> Self {
        let user = is_root().then(|| {
            ["postgres", "onsale-pg"]
                .into_iter()
                .find(|u| {
                    Command::new("id")
                        .arg(u)
                        .output()
                        .is_ok_and(|o| o.status.success())
                })
                .expect("running as root, a `postgres` or `onsale-pg` user to run Postgres as")
        });
        let data =
            std::env::temp_dir().join(format!("onsale-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&data).expect("data dir");
        if let Some(user) = user {
            run(Command::new("chown").arg(user).arg(&data));
        }
        let server = Self {
            port: crate::free_port(),
            data,
            bin: bin_dir(),
            user,
        };
        server.pg(&[
            "initdb",
            "-D",
            &server.data_str(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        ]);
        server.start_server();
        server
    }

    fn data_str(&self) -> String {
        self.data.to_string_lossy().into_owned()
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg(&self, args: &[&str]) {
        let program = self.bin.join(args[0]);
        let mut command = match self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        command.args(&args[1..]).current_dir("/");
        run(&mut command);
    }

    fn start_server(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.data_str()
        );
        let log = self.data.join("postgres.log");
        self.pg(&[
            "pg_ctl",
            "-D",
            &self.data_str(),
            "-l",
            &log.to_string_lossy(),
            "-w",
            "-t",
            "30",
            "-o",
            &options,
            "start",
        ]);
    }

    /// Stops the server (fast shutdown: sessions are ended, then a checkpoint).
    pub fn stop(&self) {
        self.pg(&["pg_ctl", "-D", &self.data_str(), "-m", "fast", "-w", "stop"]);
    }

    /// Starts a stopped server again on the same port.
    pub fn start_again(&self) {
        self.start_server();
    }

    /// Crashes the server (an immediate stop: no checkpoint, every connection cut,
    /// crash recovery on the next start) and starts it again.
    pub fn crash_and_restart(&self) {
        self.pg(&[
            "pg_ctl",
            "-D",
            &self.data_str(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
        self.start_server();
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            self.pg(&[
                "pg_ctl",
                "-D",
                &self.data_str(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
        });
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn run(command: &mut Command) {
    let output = command.output().expect("command runs");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

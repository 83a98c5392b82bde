//! What the multi-process tests share: the services' binaries and a process handle.

use std::path::{Path, PathBuf};
use std::process::Child;

/// One service process, its ops port and its log; killed when dropped.
pub struct Service {
    pub name: &'static str,
    pub port: u16,
    /// Where its `/metrics` is: the gateway's own operations port, every other
    /// service's only port.
    #[allow(dead_code, reason = "read by the tests that scrape metrics")]
    pub ops_port: u16,
    pub child: Child,
    pub log: PathBuf,
}

/// The operations port for a service started from `program`, set in its
/// environment (`ONSALE_OPS_LISTEN`): the gateway's is a port of its own.
pub fn ops_port(program: &str, port: u16, command: &mut std::process::Command) -> u16 {
    if program != "gateway" {
        return port;
    }
    let ops = testkit::free_port();
    command.env("ONSALE_OPS_LISTEN", format!("127.0.0.1:{ops}"));
    ops
}

impl Service {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A path on the operations port (`/metrics`).
    #[allow(dead_code, reason = "used by the tests that scrape metrics")]
    pub fn ops_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ops_port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "{} exited ({status}); last lines of its log:\n{}",
                self.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A workspace binary, built beside this test (`target/<profile>/<name>`; deploy/test
/// builds every one before the suite).
pub fn binary(name: &str) -> PathBuf {
    let test = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let profile = test
        .parent()
        .and_then(Path::parent)
        .expect("a test binary lives in target/<profile>/deps");
    let path = profile.join(name);
    assert!(
        path.exists(),
        "{} is not built: run the suite as the README says (deploy/test builds every service)",
        path.display()
    );
    path
}

impl Service {
    /// Starts the binary `program` as `name`, listening on a free port, with `env`
    /// and its output in `dir/<name>.log`.
    pub fn spawn(name: &'static str, program: &str, dir: &Path, env: &[(&str, String)]) -> Self {
        let port = testkit::free_port();
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = std::process::Command::new(binary(program));
        let ops_port = ops_port(program, port, &mut command);
        let child = command
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("ONSALE_LISTEN", format!("127.0.0.1:{port}"))
            .env("ONSALE_NAME", name)
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Service {
            name,
            port,
            ops_port,
            child,
            log,
        }
    }

    /// SIGKILL, as a crashed node or a pulled plug: no goodbye to anyone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

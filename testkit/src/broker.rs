//! A private tansu broker.

use std::process::{Child, Command, Stdio};

/// A tansu broker on a free port, in memory; killed when dropped.
pub struct PrivateBroker {
    port: u16,
    child: Option<Child>,
}

fn program() -> String {
    let installed = std::env::var("HOME")
        .map(|home| format!("{home}/.cargo/bin/tansu"))
        .ok()
        .filter(|path| std::path::Path::new(path).exists());
    installed.unwrap_or_else(|| "tansu".to_owned())
}

impl PrivateBroker {
    /// Starts a broker and waits until it listens.
    pub fn start() -> Self {
        let mut broker = Self {
            port: crate::free_port(),
            child: None,
        };
        broker.restart();
        broker
    }

    /// `127.0.0.1:<port>`, the form `KAFKA_BROKERS` takes.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker (SIGKILL); a no-op when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker on its port (killing a running one first), empty, and
    /// waits until it listens.
    pub fn restart(&mut self) {
        self.kill();
        let url = format!("tcp://{}", self.address());
        let child = Command::new(program())
            .args(["broker", "--storage-engine", "memory://tansu/"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts (cargo install tansu --locked --features dynostore; deploy/test installs it)");
        self.child = Some(child);
        crate::wait_for_port(self.port, "tansu");
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

//! A private Redis.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A `redis-server` on a free port with its own directory (AOF on, so a stop and a
/// start keep the data); killed and removed when dropped.
pub struct PrivateRedis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts a server and waits until it accepts connections.
    pub fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("onsale-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut server = Self {
            port: crate::free_port(),
            dir,
            child: None,
        };
        server.start_again();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL: every connection cut at once) and waits until it
    /// is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the private redis is running");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting redis-server (Debian: apt-get install redis-server)");
        self.child = Some(child);
        crate::wait_for_port(self.port, "redis-server");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

//! One SMTP conversation per email, on a socket without Nagle's algorithm.
//!
//! lettre's transport writes a message's body and its closing `.` in two writes;
//! with Nagle's algorithm on, the second waits for the server's (delayed) ACK of
//! the first, about 40 ms per email on Linux, which caps one notifier at ~20 emails
//! a second. The connection is therefore opened here, with `TCP_NODELAY`, and
//! handed to lettre's SMTP client for the conversation itself.

use std::time::Duration;

use lettre::Message;
use lettre::transport::smtp::Error;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use tokio::net::TcpStream;

/// Why an email was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    #[error("the smtp conversation took longer than {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Smtp(#[from] Error),
}

impl SendError {
    /// Whether asking again cannot help: the server refused for good (5xx), or the
    /// message itself is at fault. Connection trouble and 4xx answers are retried.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SendError::Smtp(e) if e.is_permanent() || e.is_client())
    }
}

/// Where and how email is sent.
pub struct Mailer {
    host: String,
    port: u16,
    timeout: Duration,
    credentials: Option<Credentials>,
}

impl Mailer {
    pub fn new(
        host: String,
        port: u16,
        timeout: Duration,
        credentials: Option<Credentials>,
    ) -> Self {
        Self {
            host,
            port,
            timeout,
            credentials,
        }
    }

    /// Sends one message: connect, EHLO, AUTH when configured, MAIL, RCPT, DATA,
    /// QUIT, all within the timeout.
    pub async fn send(&self, message: &Message) -> Result<(), SendError> {
        tokio::time::timeout(self.timeout, self.converse(message))
            .await
            .map_err(|_| SendError::Timeout(self.timeout))?
    }

    async fn converse(&self, message: &Message) -> Result<(), SendError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(SendError::Connect)?;
        stream.set_nodelay(true).map_err(SendError::Connect)?;
        let mut connection =
            AsyncSmtpConnection::connect_with_transport(Box::new(stream), &ClientId::default())
                .await?;
        if let Some(credentials) = &self.credentials {
            connection
                .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await?;
        }
        connection
            .send(message.envelope(), &message.formatted())
            .await?;
        // The message is accepted; a failed goodbye changes nothing.
        let _ = connection.quit().await;
        Ok(())
    }
}

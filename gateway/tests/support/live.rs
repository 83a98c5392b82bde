//! A fan's live socket as tests read it: the next message, the next of a kind, the
//! snapshot that opens every connection.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::helpers::TestApp;

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Longest wait for any one expected message.
pub const PATIENCE: Duration = Duration::from_secs(20);

impl TestApp {
    pub fn live_url(&self, event: &str, query: &str) -> String {
        format!(
            "{}/v1/events/{event}/live?{query}",
            self.base.replacen("http", "ws", 1)
        )
    }

    /// Opens the live socket as a browser does: a single-use ticket for it first,
    /// then the ticket (never the token) in the URL.
    pub async fn live(&self, event: &str, token: &str, request: Option<&str>) -> Socket {
        let response = self
            .post(
                &format!("/v1/events/{event}/live/ticket"),
                Some(token),
                &json!({}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK, "a socket ticket");
        let body: Value = response.json().await.expect("json");
        let ticket = body["ticket"].as_str().expect("ticket");
        let mut query = format!("ticket={ticket}");
        if let Some(request) = request {
            query.push_str(&format!("&request_id={request}"));
        }
        let (socket, response) = tokio_tungstenite::connect_async(self.live_url(event, &query))
            .await
            .expect("the socket opens");
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        socket
    }

    /// The refusal of an upgrade: its status and error body. Asked with a plain
    /// HTTP client carrying the upgrade headers, which reads the whole refusal (a
    /// WebSocket client stops at the headers and may miss a body still in flight).
    pub async fn refused(&self, url: String, bearer: Option<&str>) -> (StatusCode, Value) {
        let url = url.replacen("ws://", "http://", 1);
        let mut request = self
            .client
            .get(url)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("the gateway answers");
        let status = response.status();
        assert_ne!(
            status,
            StatusCode::SWITCHING_PROTOCOLS,
            "expected a refusal, the socket opened"
        );
        (status, response.json().await.expect("error body is json"))
    }

    pub async fn join(&self, event: &str, token: &str, body: Value) -> String {
        let response = self
            .post(&format!("/v1/events/{event}/requests"), Some(token), &body)
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body: Value = response.json().await.expect("json");
        body["request_id"].as_str().expect("request_id").to_owned()
    }

    pub async fn set_rate(&self, admin: &str, event: &str, per_second: u32) {
        let response = self
            .client
            .put(self.url(&format!("/v1/ops/events/{event}/admission")))
            .bearer_auth(admin)
            .json(&json!({"per_second": per_second}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::OK);
    }
}

/// The next JSON text message; panics on anything else or after [`PATIENCE`].
pub async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("a message in time")
            .expect("the socket is open")
            .expect("a frame");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).expect("json"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// The next message of type `kind`, skipping others.
pub async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    loop {
        let message = next(socket).await;
        if message["type"] == kind {
            return message;
        }
    }
}

/// The snapshot a socket starts with: sale, then (when following a request) the
/// request and, while it is queued, its position; then the seat version.
pub async fn snapshot(socket: &mut Socket, follows: bool) -> Vec<Value> {
    let mut messages = vec![next(socket).await];
    assert_eq!(messages[0]["type"], "sale", "{messages:?}");
    loop {
        let message = next(socket).await;
        let kind = message["type"].as_str().unwrap_or_default().to_owned();
        messages.push(message);
        if kind == "seats" {
            break;
        }
    }
    let kinds: Vec<&str> = messages
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    if follows {
        assert_eq!(kinds[1], "request", "{kinds:?}");
    }
    messages
}

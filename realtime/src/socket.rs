//! One fan's socket: the snapshot on connect, then what changes, until the peer goes.
//!
//! The task owns nothing that grows: the line comes through a `watch` (latest value
//! only), seat deltas through the feed's bounded `broadcast` (falling behind turns
//! into one "refetch" message), and the request through a `watch` counter. Every
//! send has a deadline; a peer that stops reading is closed rather than buffered for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use platform::store::Redis;
use proto::wire::live::{LiveMessage, LiveSnapshot, PositionView, SaleView, SeatsDelta};
use proto::wire::queue::{RequestState, RequestStatus, SaleState};
use proto::{ErrorCode, EventId, Keys, RequestId};
use tokio::sync::broadcast::error::RecvError;

use crate::feed::{Feed, FeedError, Hub, Line};

/// Reads a request as its fan sees it, with the sale's `served`.
pub async fn read_request(
    redis: &mut Redis,
    keys: &Keys,
    event_id: EventId,
    request_id: RequestId,
) -> Result<Option<RequestStatus>, FeedError> {
    Ok(platform::reads::request_status(redis, keys, event_id, request_id).await?)
}

pub fn sale_view(feed: &Feed, line: &Line) -> SaleView {
    SaleView {
        state: line.sale,
        onsale_at: feed.info.onsale_at,
        admission_per_second: line.admission_per_second,
    }
}

/// Where a queued request stands on `line`; `None` unless it is queued with a number.
pub fn position_of(request: &RequestStatus, line: &Line) -> Option<PositionView> {
    if request.state != RequestState::Queued {
        return None;
    }
    let queue_number = request.queue_number?;
    let position = queue_number.saturating_sub(line.served);
    let eta_seconds = (line.sale == SaleState::Open && line.admission_per_second > 0)
        .then(|| position.div_ceil(u64::from(line.admission_per_second)));
    Some(PositionView {
        request_id: request.request_id,
        queue_number,
        position,
        eta_seconds,
        seats_left: line.seats_left,
    })
}

/// The facts a socket starts with, for the REST fallback.
pub async fn snapshot(
    hub: &Hub,
    feed: &Feed,
    request: Option<RequestId>,
) -> Result<LiveSnapshot, FeedError> {
    let line = feed.line().borrow().clone();
    let mut redis = hub.redis.clone();
    let request = match request {
        Some(id) => read_request(&mut redis, &hub.keys, feed.event_id, id).await?,
        None => None,
    };
    Ok(LiveSnapshot {
        sale: sale_view(feed, &line),
        position: request.as_ref().and_then(|r| position_of(r, &line)),
        request,
        seats_version: line.seats_version,
    })
}

/// Who holds the socket, to close it when their session ends or their role
/// changes while it is open.
pub struct Bearer {
    pub claims: platform::auth::Claims,
    pub revocations: Arc<platform::sessions::Revocations>,
}

/// The close code of a socket whose bearer's session ended (an application code:
/// 4000 + the HTTP status a REST call would have had).
pub const SESSION_ENDED_CLOSE: u16 = 4401;

/// Why a socket ended.
enum End {
    /// The peer left, or its connection failed.
    Gone,
    /// Close with this code and reason.
    Close(u16, &'static str),
}

struct Session {
    socket: WebSocket,
    hub: Arc<Hub>,
    feed: Arc<Feed>,
    request: Option<RequestId>,
    /// The request as last sent.
    status: Option<RequestStatus>,
    /// The line as last seen, and the last position sent.
    line: Line,
    position: Option<u64>,
    seats_left: Option<u64>,
    sale: Option<SaleView>,
    last_heard: Instant,
    /// Frames the peer sent in the current minute, and when that minute began.
    inbound: (u32, Instant),
    /// Whether the peer was told this socket takes no messages.
    told: bool,
}

impl Session {
    /// Tells the peer why its session ended, then closes.
    async fn end_session(&mut self, refused: proto::ErrorBody) -> End {
        metrics::counter!("onsale_realtime_session_ended_total").increment(1);
        let message = LiveMessage::Error {
            code: refused.code,
            message: refused.message,
        };
        match self.send(&message).await {
            Ok(()) => End::Close(SESSION_ENDED_CLOSE, "session ended"),
            Err(end) => end,
        }
    }

    async fn send(&mut self, message: &LiveMessage) -> Result<(), End> {
        let text = serde_json::to_string(message).map_err(|_| End::Gone)?;
        self.send_text(text.into()).await
    }

    async fn send_text(&mut self, text: Utf8Bytes) -> Result<(), End> {
        match tokio::time::timeout(
            self.hub.settings.send_timeout(),
            self.socket.send(Message::Text(text)),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => {
                metrics::counter!("onsale_realtime_slow_closed_total").increment(1);
                Err(End::Close(close_code::POLICY, "too slow"))
            }
        }
    }

    /// Re-reads the request and sends it if it changed; then the position.
    async fn refresh_request(&mut self) -> Result<(), End> {
        let Some(id) = self.request else {
            return Ok(());
        };
        let mut redis = self.hub.redis.clone();
        let status = match read_request(&mut redis, &self.hub.keys, self.feed.event_id, id).await {
            Ok(status) => status,
            Err(error) => {
                // Redis away: the next tick, message or refresh tries again.
                tracing::debug!(%error, "reading a followed request failed");
                return Ok(());
            }
        };
        let changed = match (&status, &self.status) {
            (Some(new), Some(old)) => {
                new.state != old.state
                    || new.queue_number != old.queue_number
                    || new.seats != old.seats
                    || new.hold_expires_at != old.hold_expires_at
                    || new.reason != old.reason
            }
            (Some(_), None) => true,
            _ => false,
        };
        if changed && let Some(new) = status.clone() {
            self.status = Some(new.clone());
            self.send(&LiveMessage::Request(new)).await?;
        }
        self.send_position().await
    }

    /// Sends the request's position when it went down or the seats left changed;
    /// never a higher one than already sent.
    async fn send_position(&mut self) -> Result<(), End> {
        let Some(view) = self
            .status
            .as_ref()
            .and_then(|s| position_of(s, &self.line))
        else {
            return Ok(());
        };
        let position = self
            .position
            .map_or(view.position, |p| p.min(view.position));
        if Some(position) == self.position && Some(view.seats_left) == self.seats_left {
            return Ok(());
        }
        self.position = Some(position);
        self.seats_left = Some(view.seats_left);
        let view = PositionView { position, ..view };
        self.send(&LiveMessage::Position(view)).await
    }

    async fn on_line(&mut self, line: Line) -> Result<(), End> {
        let previous = std::mem::replace(&mut self.line, line);
        let sale = sale_view(&self.feed, &self.line);
        if self.sale.as_ref() != Some(&sale) {
            self.sale = Some(sale.clone());
            self.send(&LiveMessage::Sale(sale)).await?;
        }
        let my_turn_passed = self
            .status
            .as_ref()
            .and_then(|s| s.queue_number.filter(|_| s.state == RequestState::Queued))
            .is_some_and(|n| self.line.served >= n);
        if previous.resync != self.line.resync || my_turn_passed {
            // The request was decided (or may have been): read it.
            self.refresh_request().await
        } else {
            self.send_position().await
        }
    }

    fn holds_seats(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| matches!(s.state, RequestState::Held | RequestState::Paying))
    }
}

/// Serves one socket until the peer leaves, it is too slow or silent, or the node
/// shuts down.
///
/// The task is what an idle socket costs, so its state is kept small: the work done
/// when something happens (reads from Redis, sends with deadlines) runs in boxed
/// futures that exist only while it runs.
pub async fn serve(
    socket: WebSocket,
    hub: Arc<Hub>,
    feed: Arc<Feed>,
    request: Option<RequestId>,
    bearer: Bearer,
) {
    metrics::gauge!("onsale_realtime_sockets").increment(1);
    let mut revoked = bearer.revocations.subscribe();
    let mut line_rx = feed.line();
    let mut seats_rx = feed.seats();
    let mut followed = request.map(|id| feed.follow(id));
    let line = line_rx.borrow_and_update().clone();
    let mut session = Session {
        socket,
        hub: hub.clone(),
        feed: feed.clone(),
        request,
        status: None,
        line,
        position: None,
        seats_left: None,
        sale: None,
        last_heard: Instant::now(),
        inbound: (0, Instant::now()),
        told: false,
    };
    // A revocation that landed between the check at the upgrade and the
    // subscription above is caught here.
    let end = match bearer.revocations.check(&bearer.claims) {
        Err(refused) => session.end_session(refused).await,
        Ok(()) => {
            session_loop(
                &mut session,
                &mut line_rx,
                &mut seats_rx,
                followed.as_mut(),
                (&bearer, &mut revoked),
            )
            .await
        }
    };
    drop(followed);
    if let Some(id) = request {
        feed.unfollow(id);
    }
    if let End::Close(code, reason) = end {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(
            hub.settings.send_timeout(),
            session.socket.send(Message::Close(Some(frame))),
        )
        .await;
    }
    metrics::gauge!("onsale_realtime_sockets").decrement(1);
}

async fn session_loop(
    session: &mut Session,
    line_rx: &mut tokio::sync::watch::Receiver<Line>,
    seats_rx: &mut tokio::sync::broadcast::Receiver<Arc<str>>,
    mut followed: Option<&mut tokio::sync::watch::Receiver<u64>>,
    (bearer, revoked): (
        &Bearer,
        &mut tokio::sync::broadcast::Receiver<platform::sessions::Revoked>,
    ),
) -> End {
    // The snapshot: sale, request, position, the seat version.
    let sale = sale_view(&session.feed, &session.line);
    session.sale = Some(sale.clone());
    if let Err(end) = Box::pin(session.send(&LiveMessage::Sale(sale))).await {
        return end;
    }
    if let Err(end) = Box::pin(session.refresh_request()).await {
        return end;
    }
    let version = session.line.seats_version;
    let first = LiveMessage::Seats(SeatsDelta {
        version,
        reset: false,
        changes: vec![],
    });
    if let Err(end) = Box::pin(session.send(&first)).await {
        return end;
    }

    let mut heartbeat = tokio::time::interval(session.hub.settings.refresh());
    heartbeat.reset();
    let mut beats: u64 = 0;
    let shutdown = session.hub.shutdown.clone();
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => Err(End::Close(close_code::AWAY, "server shutting down")),
            inbound = session.socket.recv() => Box::pin(on_inbound(session, inbound)).await,
            changed = line_rx.changed() => match changed {
                Ok(()) => {
                    let line = line_rx.borrow_and_update().clone();
                    Box::pin(session.on_line(line)).await
                }
                Err(_) => Err(End::Close(close_code::AWAY, "feed ended")),
            },
            delta = seats_rx.recv() => match delta {
                Ok(text) => Box::pin(session.send_text(Utf8Bytes::from(&*text))).await,
                Err(RecvError::Lagged(_)) => {
                    // Too far behind to catch up with deltas: refetch the map.
                    metrics::counter!("onsale_realtime_lagged_total").increment(1);
                    let reset = LiveMessage::Seats(SeatsDelta {
                        version: session.line.seats_version,
                        reset: true,
                        changes: vec![],
                    });
                    Box::pin(session.send(&reset)).await
                }
                Err(RecvError::Closed) => Err(End::Close(close_code::AWAY, "feed ended")),
            },
            bumped = async {
                match followed.as_deref_mut() {
                    Some(rx) => rx.changed().await,
                    None => std::future::pending().await,
                }
            } => match bumped {
                Ok(()) => Box::pin(session.refresh_request()).await,
                Err(_) => Err(End::Close(close_code::AWAY, "feed ended")),
            },
            _ = heartbeat.tick() => {
                beats += 1;
                Box::pin(on_beat(session, beats)).await
            }
            revocation = revoked.recv() => match revocation {
                Ok(revocation) if !revocation.refuses(&bearer.claims) => Ok(()),
                // One that refuses this bearer, or some missed: ask the list.
                Ok(_) | Err(RecvError::Lagged(_)) => match bearer.revocations.check(&bearer.claims) {
                    Ok(()) => Ok(()),
                    Err(refused) => Err(Box::pin(session.end_session(refused)).await),
                },
                Err(RecvError::Closed) => {
                    std::future::pending::<()>().await;
                    Ok(())
                }
            },
        };
        if let Err(end) = outcome {
            return end;
        }
    }
}

/// Every refresh interval: drop a silent peer, re-read a hold (a hold ends by the
/// clock too, and a lost message must not leave a countdown running on seats that
/// are gone), and now and then ping.
async fn on_beat(session: &mut Session, beats: u64) -> Result<(), End> {
    let settings = session.hub.settings.clone();
    if session.last_heard.elapsed() > settings.idle() {
        return Err(End::Close(close_code::POLICY, "no pong"));
    }
    if session.holds_seats() {
        session.refresh_request().await?;
    }
    if beats.is_multiple_of(settings.pings_every()) {
        let ping = session.socket.send(Message::Ping(Default::default()));
        match tokio::time::timeout(settings.send_timeout(), ping).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(End::Gone),
            Err(_) => return Err(End::Close(close_code::POLICY, "too slow")),
        }
    }
    Ok(())
}

async fn on_inbound(
    session: &mut Session,
    inbound: Option<Result<Message, axum::Error>>,
) -> Result<(), End> {
    let message = match inbound {
        None => return Err(End::Gone),
        Some(Ok(message)) => message,
        Some(Err(error)) => {
            let too_big = std::error::Error::source(&error)
                .map(|source| source.to_string())
                .unwrap_or_else(|| error.to_string())
                .to_lowercase();
            return Err(
                if too_big.contains("too long")
                    || too_big.contains("too big")
                    || too_big.contains("capacity")
                {
                    End::Close(close_code::SIZE, "frame too large")
                } else {
                    End::Gone
                },
            );
        }
    };
    session.last_heard = Instant::now();
    // A peer has nothing to say; one that keeps talking is closed, not answered.
    let (count, since) = &mut session.inbound;
    if since.elapsed() >= Duration::from_secs(60) {
        (*count, *since) = (0, Instant::now());
    }
    *count += 1;
    if *count > session.hub.settings.max_inbound_per_minute {
        metrics::counter!("onsale_realtime_sockets_closed_total", "why" => "inbound_rate")
            .increment(1);
        return Err(End::Close(close_code::POLICY, "too many messages"));
    }
    match message {
        Message::Pong(_) | Message::Ping(_) => Ok(()),
        Message::Close(_) => Err(End::Gone),
        Message::Binary(_) => {
            let error = LiveMessage::Error {
                code: ErrorCode::UnsupportedFrame,
                message: "this socket takes no binary frames".to_owned(),
            };
            session.send(&error).await?;
            Err(End::Close(
                close_code::UNSUPPORTED,
                "binary frames are not accepted",
            ))
        }
        // Told once; later messages are not answered (each answer would be work
        // a peer could ask for at will).
        Message::Text(_) if session.told => Ok(()),
        Message::Text(_) => {
            session.told = true;
            let error = LiveMessage::Error {
                code: ErrorCode::InvalidMessage,
                message: "this socket takes no messages; it only sends".to_owned(),
            };
            session.send(&error).await
        }
    }
}

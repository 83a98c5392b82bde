//! Delivering one envelope: decide whether it emails, look the fan and the event up,
//! render, send over SMTP, and keep the notification log true, retrying in place
//! with capped exponential backoff while SMTP or Postgres fail transiently.
//!
//! Exactly once as the fan sees it, and where that is not possible, what happens:
//! - a redelivered envelope with a final row (`sent`, `skipped`, `dead`) is a
//!   duplicate: no email;
//! - each attempt runs under a Postgres advisory lock on the envelope id, so two
//!   members of the group holding the same record during a rebalance take turns
//!   and the second finds the first one's final row;
//! - before talking to SMTP the attempt commits a `sending` row. A crash between the
//!   server accepting the message and the `sent` write leaves that row, and the
//!   redelivered envelope is sent again, under the same `Message-ID`
//!   (`<envelope-id@onsale>`), with a warning. We resend rather than assume: a
//!   `sending` row far more often means the crash came before or during the SMTP
//!   conversation (the long part) than in the one-statement gap after it, and a
//!   missing ticket confirmation costs the fan more than a duplicate that mail
//!   clients can fold by its Message-ID;
//! - when only the `sent` write fails (Postgres down), the process remembers that
//!   the message went out and retries the write, never the email.

use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::Message;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart};

use crate::mailer::Mailer;
use proto::UserId;
use proto::wire::events::{Envelope, EventType};
use secrecy::ExposeSecret;
use sqlx::PgPool;

use crate::compose::{Facts, Kind, Payload, Rendered, Templates};
use crate::config::{Config, RetrySettings, SmtpTarget};
use crate::log;

/// How an envelope ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Done {
    /// The SMTP server accepted the email and the log says so.
    Sent,
    /// The event needs no email.
    Skipped,
    /// The log already had a final row for it (a redelivery).
    Duplicate,
    /// Written off: refused for good (a permanent SMTP refusal, a malformed event).
    Dead,
}

impl Done {
    fn as_str(self) -> &'static str {
        match self {
            Done::Sent => "sent",
            Done::Skipped => "skipped",
            Done::Duplicate => "duplicate",
            Done::Dead => "dead",
        }
    }
}

/// Why an attempt did not finish the envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Worth another attempt: SMTP unreachable or answering 4xx, Postgres errors.
    Transient(String),
    /// No attempt will do better: a 5xx reply, a fan without an account, a bad payload.
    Permanent(String),
}

/// Waits between attempts; `false` means stop (shutdown) and leave the record for
/// the next owner.
pub trait Pause {
    fn pause(&mut self, delay: Duration) -> impl Future<Output = bool> + Send;
}

/// A [`Pause`] that just sleeps: for callers without a Kafka consumer to keep alive.
pub struct Sleep;

impl Pause for Sleep {
    async fn pause(&mut self, delay: Duration) -> bool {
        tokio::time::sleep(delay).await;
        true
    }
}

/// What the attempts on one envelope have learnt so far.
#[derive(Debug)]
struct Progress {
    attempts: u32,
    /// When the first attempt began, in this process or (from the log) an earlier one.
    first_attempt_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
    fan_id: Option<UserId>,
}

/// Sends the emails and keeps the log; one per process, shared by the consumer.
pub struct Notifier {
    pool: PgPool,
    mailer: Mailer,
    templates: Templates,
    from: Mailbox,
    public_base: String,
    retry: RetrySettings,
}

impl Notifier {
    pub fn new(config: &Config, pool: PgPool) -> anyhow::Result<Self> {
        let target =
            SmtpTarget::parse(config.smtp_url.expose_secret()).map_err(anyhow::Error::msg)?;
        let credentials = target.credentials.map(|(user, password)| {
            lettre::transport::smtp::authentication::Credentials::new(
                user,
                password.expose_secret().to_owned(),
            )
        });
        let mailer = Mailer::new(
            target.host,
            target.port,
            Duration::from_millis(config.smtp_timeout_ms),
            credentials,
        );
        Ok(Self {
            pool,
            mailer,
            templates: Templates::new(),
            from: config
                .mail_from
                .parse()
                .map_err(|e| anyhow::anyhow!("mail_from: {e}"))?,
            public_base: config.public_base().to_owned(),
            retry: config.retry.clone(),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Deals with one envelope: attempts, pauses with `pause` between failed attempts
    /// for as long as the failures are transient (reporting it stuck past the alert
    /// time), writes it off when refused for good. `None` when `pause` says stop first; the
    /// envelope is then unfinished and its record must not be acknowledged.
    /// `traceparent`: the record's trace context (its Kafka header), which the work
    /// and the email continue (`platform::telemetry`).
    pub async fn process(
        &self,
        envelope: &Envelope,
        traceparent: Option<&str>,
        pause: &mut impl Pause,
    ) -> Option<Done> {
        use tracing::Instrument;
        // Every line about this envelope names the fan's request and the HTTP call
        // that caused it (platform::correlation), so one search finds the whole path.
        let span = tracing::info_span!(
            "notify",
            kind = envelope.kind.as_str(),
            request_id = envelope
                .request_id
                .map(|r| r.to_string())
                .unwrap_or_default(),
            correlation_id = envelope.correlation_id.as_deref().unwrap_or(""),
        );
        platform::telemetry::continue_from(&span, traceparent);
        self.process_in_span(envelope, pause).instrument(span).await
    }

    async fn process_in_span(&self, envelope: &Envelope, pause: &mut impl Pause) -> Option<Done> {
        let kind = metric_kind(envelope);
        let mut progress = Progress {
            attempts: 0,
            first_attempt_at: Utc::now(),
            sent_at: None,
            fan_id: None,
        };
        let mut delay = self.retry.initial();
        let mut alerted = false;
        let done = loop {
            let error = match self.attempt(envelope, &mut progress).await {
                Ok(done) => break done,
                Err(Failure::Permanent(error)) => {
                    tracing::warn!(envelope_id = %envelope.id, kind, attempts = progress.attempts, %error, "email refused for good; writing it off");
                    break self.bury(envelope, &progress, &error, pause).await?;
                }
                Err(Failure::Transient(error)) => error,
            };
            metrics::counter!("onsale_emails_total", "kind" => kind, "outcome" => "retry")
                .increment(1);
            let failing_for = (Utc::now() - progress.first_attempt_at)
                .to_std()
                .unwrap_or_default();
            // A transient failure (SMTP or Postgres down) is waited out, however long
            // it lasts: a paid confirmation is never written off for an outage. Past
            // the alert time it is reported stuck, for someone to look.
            if failing_for >= self.retry.alert_after() {
                if !alerted {
                    tracing::error!(envelope_id = %envelope.id, kind, attempts = progress.attempts, failing_for_s = failing_for.as_secs(), %error, "email stuck: still failing past the alert time; retrying until it goes");
                    alerted = true;
                }
                metrics::gauge!("onsale_email_stuck_seconds").set(failing_for.as_secs_f64());
            }
            tracing::warn!(envelope_id = %envelope.id, kind, attempts = progress.attempts, retry_in_ms = delay.as_millis() as u64, %error, "email attempt failed");
            if !pause.pause(delay).await {
                tracing::info!(envelope_id = %envelope.id, kind, "stopping with the email unfinished; the record will be delivered again");
                return None;
            }
            delay = (delay * 2).min(self.retry.max());
        };
        if alerted {
            metrics::gauge!("onsale_email_stuck_seconds").set(0.0);
            tracing::info!(envelope_id = %envelope.id, kind, "stuck email unstuck");
        }
        metrics::counter!("onsale_emails_total", "kind" => kind, "outcome" => done.as_str())
            .increment(1);
        tracing::info!(envelope_id = %envelope.id, kind, outcome = done.as_str(), attempts = progress.attempts, "envelope done");
        Some(done)
    }

    /// One attempt, under the envelope's advisory lock.
    async fn attempt(&self, envelope: &Envelope, progress: &mut Progress) -> Result<Done, Failure> {
        let Some(kind) = EventType::parse(&envelope.kind).and_then(Kind::for_event) else {
            let fan_id = envelope
                .payload
                .get("fan_id")
                .and_then(|v| serde_json::from_value(v.clone()).ok());
            let fresh = log::skip(&self.pool, envelope, fan_id).await.map_err(db)?;
            return Ok(if fresh {
                Done::Skipped
            } else {
                Done::Duplicate
            });
        };
        let payload = Payload::parse(kind, &envelope.payload)
            .map_err(|e| Failure::Permanent(format!("payload of {}: {e}", envelope.kind)))?;
        progress.fan_id = Some(payload.fan_id());

        // The lock belongs to this transaction, so it dies with a crashed process's
        // connection; nothing is written inside it (the log writes must commit on
        // their own, before and after the SMTP conversation).
        let mut lock = self.pool.begin().await.map_err(db)?;
        let (class, key) = log::lock_key(envelope.id);
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(class)
            .bind(key)
            .execute(&mut *lock)
            .await
            .map_err(db)?;
        let outcome = self
            .attempt_locked(envelope, kind, &payload, progress)
            .await;
        if let Err(error) = lock.rollback().await {
            tracing::debug!(%error, "releasing the envelope lock failed; the connection's end releases it");
        }
        outcome
    }

    async fn attempt_locked(
        &self,
        envelope: &Envelope,
        kind: Kind,
        payload: &Payload,
        progress: &mut Progress,
    ) -> Result<Done, Failure> {
        match log::find(&self.pool, envelope.id).await.map_err(db)? {
            Some(entry) if entry.status.is_final() => return Ok(Done::Duplicate),
            Some(entry) => {
                progress.first_attempt_at = progress.first_attempt_at.min(entry.created_at);
                if progress.attempts == 0 && progress.sent_at.is_none() {
                    tracing::warn!(envelope_id = %envelope.id, earlier_attempts = entry.attempts, "an earlier attempt may have sent this email; sending it again under the same message id");
                }
            }
            None => {}
        }
        if let Some(sent_at) = progress.sent_at {
            log::mark_sent(&self.pool, envelope.id, sent_at)
                .await
                .map_err(db)?;
            return Ok(Done::Sent);
        }

        let (to, event_name) = self.lookup(envelope, payload).await?;
        let facts = Facts::new(payload, &event_name, &self.public_base);
        let rendered = self
            .templates
            .render(kind, &facts)
            .map_err(|e| Failure::Permanent(format!("rendering the email: {e:#}")))?;
        let documents = self.documents(kind, payload).await?;
        let message = self.message(envelope, to.clone(), &rendered, &facts, &documents)?;
        let Some(entry) = log::claim(
            &self.pool,
            envelope,
            payload.fan_id(),
            to.email.as_ref(),
            &rendered.subject,
        )
        .await
        .map_err(db)?
        else {
            return Ok(Done::Duplicate);
        };
        progress.attempts += 1;
        progress.first_attempt_at = progress.first_attempt_at.min(entry.created_at);

        match self.mailer.send(&message).await {
            Ok(_) => {
                let sent_at = Utc::now();
                progress.sent_at = Some(sent_at);
                let lag = (sent_at - envelope.occurred_at).as_seconds_f64().max(0.0);
                metrics::histogram!("onsale_email_lag_seconds").record(lag);
                log::mark_sent(&self.pool, envelope.id, sent_at)
                    .await
                    .map_err(|e| {
                        Failure::Transient(format!("sent, but recording it failed: {e}"))
                    })?;
                Ok(Done::Sent)
            }
            Err(error) => {
                let failure = if error.is_permanent() {
                    Failure::Permanent(format!("smtp: {error}"))
                } else {
                    Failure::Transient(format!("smtp: {error}"))
                };
                if let Err(e) =
                    log::note_failure(&self.pool, envelope.id, &format!("smtp: {error}")).await
                {
                    tracing::debug!(envelope_id = %envelope.id, error = %e, "cannot note the failed attempt");
                }
                Err(failure)
            }
        }
    }

    /// The fan's address (`gateway.users`) and the event's name (`inventory.events`).
    /// A confirmation goes to the address it confirms, as the event names it, and
    /// is about no event.
    async fn lookup(
        &self,
        envelope: &Envelope,
        payload: &Payload,
    ) -> Result<(Mailbox, String), Failure> {
        if let Payload::Account(account) = payload {
            let to: Mailbox = account.email.parse().map_err(|e| {
                Failure::Permanent(format!("the address of account {}: {e}", account.user_id))
            })?;
            return Ok((to, String::new()));
        }
        let fan_id = payload.fan_id();
        let email: Option<String> =
            sqlx::query_scalar("SELECT email FROM gateway.users WHERE user_id = $1")
                .bind(fan_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        let email =
            email.ok_or_else(|| Failure::Permanent(format!("fan {fan_id} has no account")))?;
        let to: Mailbox = email
            .parse()
            .map_err(|e| Failure::Permanent(format!("the address of fan {fan_id}: {e}")))?;
        let name: Option<String> =
            sqlx::query_scalar("SELECT name FROM inventory.events WHERE event_id = $1")
                .bind(envelope.event_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        // An email about a payment still goes out when the event row is missing.
        let name = name.unwrap_or_else(|| {
            tracing::warn!(event_id = %envelope.event_id, "event not found; the email says \"your event\"");
            "your event".to_owned()
        });
        Ok((to, name))
    }

    /// The PDFs the email attaches: a paid order's invoice, a refund's credit note.
    /// Read from the ledger of documents (rendered from their snapshot when not yet
    /// stored); a document not issued (an order paid before invoices were) is left
    /// out.
    async fn documents(
        &self,
        kind: Kind,
        payload: &Payload,
    ) -> Result<Vec<(String, Vec<u8>)>, Failure> {
        let Payload::Order(order) = payload else {
            return Ok(Vec::new());
        };
        let number: Option<String> = match (kind, &order.refund) {
            (Kind::Paid, _) => sqlx::query_scalar(
                "SELECT number FROM billing.documents WHERE order_id = $1 AND series = 'INV'",
            )
            .bind(order.order_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?,
            (Kind::Refunded, Some(refund)) => refund.credit_note_number.clone(),
            _ => None,
        };
        let Some(number) = number else {
            return Ok(Vec::new());
        };
        let pdf = billing::documents::pdf_bytes(&self.pool, &number)
            .await
            .map_err(|e| Failure::Transient(format!("reading document {number}: {e}")))?
            .ok_or_else(|| Failure::Transient(format!("document {number} is not there yet")))?;
        Ok(vec![(format!("{number}.pdf"), pdf)])
    }

    fn message(
        &self,
        envelope: &Envelope,
        to: Mailbox,
        email: &Rendered,
        facts: &Facts,
        documents: &[(String, Vec<u8>)],
    ) -> Result<Message, Failure> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.clone())
            .message_id(Some(log::message_id(envelope.id)));
        if let Some(request_id) = envelope.request_id {
            builder = builder.header(trail::RequestId(request_id.to_string()));
        }
        if let Some(correlation_id) = &envelope.correlation_id {
            builder = builder.header(trail::CorrelationId(correlation_id.clone()));
        }
        if let Some(traceparent) = platform::telemetry::traceparent() {
            builder = builder.header(trail::Traceparent(traceparent));
        }
        let body = MultiPart::alternative_plain_html(email.text.clone(), email.html.clone());
        let body = if facts.tickets.is_empty() {
            body
        } else {
            // The tickets' QR codes, inline beside the HTML that shows them.
            let mut related = MultiPart::related().multipart(body);
            for ticket in &facts.tickets {
                let png = crate::qr::png(&ticket.code)
                    .map_err(|e| Failure::Permanent(format!("drawing a ticket's QR: {e}")))?;
                related = related.singlepart(Attachment::new_inline(ticket.cid.clone()).body(
                    png,
                    ContentType::parse("image/png").expect("a content type"),
                ));
            }
            related
        };
        let body = if documents.is_empty() {
            body
        } else {
            let mut mixed = MultiPart::mixed().multipart(body);
            for (name, pdf) in documents {
                mixed = mixed.singlepart(Attachment::new(name.clone()).body(
                    pdf.clone(),
                    ContentType::parse("application/pdf").expect("a content type"),
                ));
            }
            mixed
        };
        builder
            .multipart(body)
            .map_err(|e| Failure::Permanent(format!("building the message: {e}")))
    }

    /// Writes the dead letter, retrying while Postgres fails.
    async fn bury(
        &self,
        envelope: &Envelope,
        progress: &Progress,
        error: &str,
        pause: &mut impl Pause,
    ) -> Option<Done> {
        let mut delay = self.retry.initial();
        loop {
            match log::bury(&self.pool, envelope, progress.fan_id, error).await {
                Ok(()) => return Some(Done::Dead),
                Err(e) => {
                    tracing::warn!(envelope_id = %envelope.id, error = %e, "cannot write the dead letter; retrying");
                    if !pause.pause(delay).await {
                        return None;
                    }
                    delay = (delay * 2).min(self.retry.max());
                }
            }
        }
    }
}

fn db(error: sqlx::Error) -> Failure {
    Failure::Transient(format!("postgres: {error}"))
}

/// The `kind` label: known event types only, so a bad producer cannot grow the
/// metric's series without bound.
fn metric_kind(envelope: &Envelope) -> &'static str {
    EventType::parse(&envelope.kind).map_or("unknown", EventType::as_str)
}

/// The headers that tie an email to the fan's request and to the HTTP call that
/// caused it, for support and for tracing (see `platform::correlation`).
mod trail {
    use lettre::message::header::{Header, HeaderName, HeaderValue};

    macro_rules! text_header {
        ($name:ident, $header:literal) => {
            #[derive(Clone, Debug)]
            pub struct $name(pub String);

            impl Header for $name {
                fn name() -> HeaderName {
                    HeaderName::new_from_ascii_str($header)
                }

                fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
                    Ok(Self(s.to_owned()))
                }

                fn display(&self) -> HeaderValue {
                    HeaderValue::new(Self::name(), self.0.clone())
                }
            }
        };
    }

    text_header!(RequestId, "X-Onsale-Request-Id");
    text_header!(CorrelationId, "X-Onsale-Correlation-Id");
    // The W3C trace context of the send (`platform::telemetry`).
    text_header!(Traceparent, "Traceparent");
}

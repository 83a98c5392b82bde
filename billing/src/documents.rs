//! Issuing and reading documents (`billing.documents`).

use chrono::{DateTime, Utc};
use proto::{OrderId, RefundId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};

use crate::{BillingError, Seller};

/// An invoice or a credit note.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Invoice,
    CreditNote,
}

impl Kind {
    pub fn series(self) -> &'static str {
        match self {
            Kind::Invoice => "INV",
            Kind::CreditNote => "CRN",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Kind::Invoice => "Invoice",
            Kind::CreditNote => "Credit note",
        }
    }
}

/// A seller or a buyer as printed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vat_id: Option<String>,
}

impl From<&Seller> for Party {
    fn from(seller: &Seller) -> Self {
        Party {
            name: Some(seller.name.clone()),
            address: Some(seller.address.clone()),
            vat_id: seller.vat_id.clone(),
        }
    }
}

/// One line: a ticket, with its price split into net and tax.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub description: String,
    pub net_cents: i64,
    pub tax_cents: i64,
    pub total_cents: i64,
}

/// The event a document is about, as it was named when issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRef {
    pub name: String,
    pub starts_at: DateTime<Utc>,
}

/// A document's snapshot: everything printed on it, fixed when it is issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    pub kind: Kind,
    pub number: String,
    pub issued_at: DateTime<Utc>,
    /// A credit note's invoice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refers_to: Option<String>,
    pub order_id: OrderId,
    pub seller: Party,
    pub buyer: Party,
    /// The fan's email, printed when the buyer gave no name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan_email: Option<String>,
    pub event: EventRef,
    pub currency: String,
    pub tax_rate_bp: i32,
    pub tax_included: bool,
    pub lines: Vec<Line>,
    /// What the credit note pays back for, and the fee kept, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub fee_cents: i64,
    pub net_cents: i64,
    pub tax_cents: i64,
    pub total_cents: i64,
}

/// What a new document says; the issuing statement adds its number, its time, the
/// event and the fan's email.
pub struct Issue<'a> {
    pub kind: Kind,
    pub order_id: OrderId,
    pub refund_id: Option<RefundId>,
    pub refers_to: Option<&'a str>,
    pub event_id: proto::EventId,
    pub fan_id: proto::UserId,
    pub seller: &'a Seller,
    pub buyer: Party,
    pub currency: &'a str,
    pub tax_rate_bp: i32,
    pub tax_included: bool,
    pub lines: Vec<Line>,
    pub reason: Option<String>,
    pub fee_cents: i64,
    /// What the document totals to (a credit note: what is paid back).
    pub total_cents: i64,
    pub tax_cents: i64,
}

/// A stored document, without its PDF.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Document {
    pub number: String,
    pub order_id: OrderId,
    pub refund_id: Option<RefundId>,
    pub issued_at: DateTime<Utc>,
    pub total_cents: i64,
    pub tax_cents: i64,
    pub currency: String,
    pub pdf_sha256: Option<String>,
}

const COLUMNS: &str =
    "number, order_id, refund_id, issued_at, total_cents, tax_cents, currency, pdf_sha256";

/// Issues a document in the caller's transaction, in one statement: the next number
/// of its series and year (the counter row stays locked until the transaction ends,
/// so numbers are handed out in commit order, without gaps) and the snapshot.
pub async fn issue(tx: &mut PgConnection, new: &Issue<'_>) -> Result<Document, BillingError> {
    let content = serde_json::json!({
        "kind": new.kind,
        "refers_to": new.refers_to,
        "order_id": new.order_id,
        "seller": Party::from(new.seller),
        "buyer": new.buyer,
        "currency": new.currency,
        "tax_rate_bp": new.tax_rate_bp,
        "tax_included": new.tax_included,
        "lines": new.lines,
        "reason": new.reason,
        "fee_cents": new.fee_cents,
        "net_cents": new.total_cents - new.tax_cents,
        "tax_cents": new.tax_cents,
        "total_cents": new.total_cents,
    });
    let document: Document = sqlx::query_as(&format!(
        "WITH info AS (
             SELECT e.name, e.starts_at, u.email,
                    extract(year FROM now() AT TIME ZONE 'UTC')::int AS year
             FROM inventory.events e
             LEFT JOIN gateway.users u ON u.user_id = $3
             WHERE e.event_id = $2
         ),
         next AS (
             INSERT INTO billing.counters (series, year, last)
             SELECT $1, year, 1 FROM info
             ON CONFLICT (series, year) DO UPDATE SET last = billing.counters.last + 1
             RETURNING year, last, $1 || '-' || year || '-' || last AS number
         )
         INSERT INTO billing.documents (number, series, year, n, order_id, refund_id, refers_to,
                                        issued_at, total_cents, tax_cents, currency, content)
         SELECT next.number, $1, next.year, next.last, $4, $5, $6, now(), $7, $8, $9,
                $10::jsonb || jsonb_build_object(
                    'number', next.number, 'issued_at', now(), 'fan_email', info.email,
                    'event', jsonb_build_object('name', info.name, 'starts_at', info.starts_at))
         FROM next, info
         RETURNING {COLUMNS}"
    ))
    .bind(new.kind.series())
    .bind(new.event_id)
    .bind(new.fan_id)
    .bind(new.order_id)
    .bind(new.refund_id)
    .bind(new.refers_to)
    .bind(new.total_cents)
    .bind(new.tax_cents)
    .bind(new.currency)
    .bind(sqlx::types::Json(content))
    .fetch_one(tx)
    .await?;
    tracing::debug!(number = document.number, "billing document issued");
    Ok(document)
}

/// An order's invoice.
pub async fn of_order(pool: &PgPool, order: OrderId) -> Result<Option<Document>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM billing.documents WHERE order_id = $1 AND series = 'INV'"
    ))
    .bind(order)
    .fetch_optional(pool)
    .await
}

/// A refund's credit note.
pub async fn of_refund(pool: &PgPool, refund: RefundId) -> Result<Option<Document>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM billing.documents WHERE refund_id = $1"
    ))
    .bind(refund)
    .fetch_optional(pool)
    .await
}

/// The stored PDF (`true`), or its snapshot rendered now (`false`, not stored).
async fn stored_or_rendered(
    pool: &PgPool,
    number: &str,
) -> Result<Option<(Vec<u8>, bool)>, BillingError> {
    let row: Option<(Option<Vec<u8>>, sqlx::types::Json<serde_json::Value>)> =
        sqlx::query_as("SELECT pdf, content FROM billing.documents WHERE number = $1")
            .bind(number)
            .fetch_optional(pool)
            .await?;
    let Some((stored, content)) = row else {
        return Ok(None);
    };
    if let Some(pdf) = stored {
        return Ok(Some((pdf, true)));
    }
    let content: Content = serde_json::from_value(content.0)
        .map_err(|e| BillingError::Corrupt(number.to_owned(), e.to_string()))?;
    let pdf = tokio::task::spawn_blocking(move || crate::pdf::render(&content))
        .await
        .map_err(|e| BillingError::Render(e.to_string()))??;
    Ok(Some((pdf, false)))
}

/// A document's PDF: the stored bytes, or, the first time, rendered from its
/// snapshot and stored with its SHA-256 (two first readers store one of the two
/// renderings, and both answer the one kept).
pub async fn pdf_of(pool: &PgPool, number: &str) -> Result<Option<Vec<u8>>, BillingError> {
    let Some((pdf, stored)) = stored_or_rendered(pool, number).await? else {
        return Ok(None);
    };
    if stored {
        return Ok(Some(pdf));
    }
    store(pool, number, &pdf).await?;
    let kept: Vec<u8> = sqlx::query_scalar("SELECT pdf FROM billing.documents WHERE number = $1")
        .bind(number)
        .fetch_one(pool)
        .await?;
    Ok(Some(kept))
}

/// A document's PDF without storing it: the stored bytes, or a rendering of its
/// snapshot. For readers that do not own the documents (the notifier).
pub async fn pdf_bytes(pool: &PgPool, number: &str) -> Result<Option<Vec<u8>>, BillingError> {
    Ok(stored_or_rendered(pool, number).await?.map(|(pdf, _)| pdf))
}

async fn store(pool: &PgPool, number: &str, pdf: &[u8]) -> Result<(), sqlx::Error> {
    let sha = hex::encode(Sha256::digest(pdf));
    sqlx::query(
        "UPDATE billing.documents SET pdf = $2, pdf_sha256 = $3 WHERE number = $1 AND pdf IS NULL",
    )
    .bind(number)
    .bind(pdf)
    .bind(sha)
    .execute(pool)
    .await?;
    Ok(())
}

/// Renders and stores up to `limit` documents that have no PDF yet, oldest first;
/// returns how many it rendered.
pub async fn render_pending(pool: &PgPool, limit: i64) -> Result<usize, BillingError> {
    let numbers: Vec<String> = sqlx::query_scalar(
        "SELECT number FROM billing.documents WHERE pdf IS NULL ORDER BY issued_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut rendered = 0;
    for number in &numbers {
        // One document that cannot be rendered does not hold the others up.
        match pdf_of(pool, number).await {
            Ok(_) => rendered += 1,
            Err(BillingError::Database(e)) => return Err(BillingError::Database(e)),
            Err(error) => tracing::error!(number, %error, "a document's PDF cannot be rendered"),
        }
    }
    Ok(rendered)
}

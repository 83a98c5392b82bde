//! An order's invoice and its refunds' credit notes, as `billing` documents.

use billing::{Issue, Kind, Line, Party, Seller};
use proto::RefundId;
use sqlx::PgConnection;

use crate::Error;
use crate::orders::OrderRow;

impl From<billing::BillingError> for Error {
    fn from(error: billing::BillingError) -> Self {
        match error {
            billing::BillingError::Database(e) => Error::Database(e),
            other => Error::Unexpected(other.to_string()),
        }
    }
}

fn buyer(order: &OrderRow) -> Party {
    order
        .billing
        .as_ref()
        .map(|b| Party {
            name: b.name.clone(),
            address: b.address.clone(),
            vat_id: b.vat_id.clone(),
        })
        .unwrap_or_default()
}

fn ticket_line(seat: &str, cents: i64, tax: i64) -> Line {
    Line {
        description: format!("Ticket, seat {seat}"),
        net_cents: cents - tax,
        tax_cents: tax,
        total_cents: cents,
    }
}

/// Issues a paid order's invoice in its settling transaction.
pub async fn issue_invoice(
    tx: &mut PgConnection,
    seller: &Seller,
    order: &OrderRow,
) -> Result<billing::Document, Error> {
    let prices = order.seat_prices();
    let lines: Vec<Line> = order
        .seats
        .iter()
        .zip(&prices)
        .map(|(seat, (cents, tax))| ticket_line(seat, *cents, *tax))
        .collect();
    let tax_cents = prices.iter().map(|(_, tax)| tax).sum();
    Ok(billing::issue(
        tx,
        &Issue {
            kind: Kind::Invoice,
            order_id: order.order_id,
            refund_id: None,
            refers_to: None,
            event_id: order.event_id,
            fan_id: order.fan_id,
            seller,
            buyer: buyer(order),
            currency: &order.currency,
            tax_rate_bp: order.tax_rate_bp,
            tax_included: order.tax_included,
            lines,
            reason: None,
            fee_cents: 0,
            total_cents: order.amount_cents,
            tax_cents,
        },
    )
    .await?)
}

/// What a refund of some seats comes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundAmount {
    pub gross_cents: i64,
    pub fee_cents: i64,
    /// What is paid back: gross less fee.
    pub amount_cents: i64,
    /// The tax in what is paid back.
    pub tax_cents: i64,
    pub lines: Vec<Line>,
}

/// The amount of refunding `seats` of `order`, keeping `fee_percent` of each
/// ticket's price (rounded down to the cent, so the fan never gets less than the
/// policy says); the credit note's lines, the fee as a negative line.
pub fn refund_amount(order: &OrderRow, seats: &[String], fee_percent: i64) -> RefundAmount {
    let prices = order.seat_prices();
    let mut lines = Vec::new();
    let (mut gross, mut tax, mut fee) = (0i64, 0i64, 0i64);
    for seat in seats {
        let Some(index) = order.seats.iter().position(|s| s == seat) else {
            continue;
        };
        let (cents, seat_tax) = prices[index];
        gross += cents;
        tax += seat_tax;
        fee += cents * fee_percent / 100;
        lines.push(ticket_line(seat, cents, seat_tax));
    }
    let fee_tax = if fee > 0 {
        let (_, fee_tax, _) = billing::tax_split(fee, order.tax_rate_bp, true);
        lines.push(Line {
            description: format!("Refund fee kept ({fee_percent} %)"),
            net_cents: -(fee - fee_tax),
            tax_cents: -fee_tax,
            total_cents: -fee,
        });
        fee_tax
    } else {
        0
    };
    RefundAmount {
        gross_cents: gross,
        fee_cents: fee,
        amount_cents: gross - fee,
        tax_cents: (tax - fee_tax).max(0),
        lines,
    }
}

/// Issues a refund's credit note in the transaction that approves it, referring to
/// the order's invoice. `None` for an order paid before invoices were issued.
pub async fn issue_credit_note(
    tx: &mut PgConnection,
    seller: &Seller,
    order: &OrderRow,
    refund_id: RefundId,
    amount: &RefundAmount,
    reason: &str,
) -> Result<Option<billing::Document>, Error> {
    let invoice: Option<String> = sqlx::query_scalar(
        "SELECT number FROM billing.documents WHERE order_id = $1 AND series = 'INV'",
    )
    .bind(order.order_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(invoice) = invoice else {
        return Ok(None);
    };
    Ok(Some(
        billing::issue(
            tx,
            &Issue {
                kind: Kind::CreditNote,
                order_id: order.order_id,
                refund_id: Some(refund_id),
                refers_to: Some(&invoice),
                event_id: order.event_id,
                fan_id: order.fan_id,
                seller,
                buyer: buyer(order),
                currency: &order.currency,
                tax_rate_bp: order.tax_rate_bp,
                tax_included: order.tax_included,
                lines: amount.lines.clone(),
                reason: Some(reason.to_owned()),
                fee_cents: amount.fee_cents,
                total_cents: amount.amount_cents,
                tax_cents: amount.tax_cents,
            },
        )
        .await?,
    ))
}

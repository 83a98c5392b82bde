//! The workspace's one migrations directory. Each service owns one schema and is
//! the only writer of its tables; others may read them.
//!
//! | schema | owner |
//! |---|---|
//! | `gateway` | gateway: accounts, idempotency keys of admin and operator requests |
//! | `inventory` | inventory: venues, seats, events, prices |
//! | `booking` | booking-worker: the seat ledger (holds and sales) |
//! | `billing` | payments, through the `billing` library: invoices, credit notes, their counters |

/// Runs every migration the database has not seen. Safe to call from several
/// processes at once: sqlx serialises them with an advisory lock.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

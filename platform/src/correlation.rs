//! The correlation id: the gateway's `x-request-id` of the HTTP call that caused a
//! change, carried with the change wherever it goes, so that one search of the logs
//! finds a fan's path from the gateway through the line to the email.
//!
//! The trail: the gateway sets (or keeps a client's) `x-request-id` and runs the
//! handler inside [`scope`]; a join writes it into the request hash (`x`) and the
//! stream entry (`x`); the booking worker copies it from the entry onto the outbox
//! rows its decision writes; an outbox row written during an HTTP call (a checkout,
//! a webhook) takes the call's id from [`current`]; the relay puts it in the Kafka
//! envelope (`correlation_id`); the notifier logs it and sends it in the email's
//! `X-Onsale-Correlation-Id` header. Every log line on the way names it as
//! `correlation_id`. A change no call caused (a hold running out) carries none.

use std::future::Future;

/// The header the gateway sets and every answer echoes.
pub const HEADER: &str = "x-request-id";
/// Longest id carried; a longer (or non-printable) client value is not carried.
pub const MAX_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: Option<String>;
}

/// The id of the HTTP call being served, when there is one.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok().flatten()
}

/// Runs `work` with `id` as the current correlation id.
pub async fn scope<F: Future>(id: Option<String>, work: F) -> F::Output {
    CURRENT.scope(id, work).await
}

/// `work` with the current correlation id, for a task spawned to finish what a call
/// started (a task-local does not follow `tokio::spawn` by itself).
pub fn carried<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let id = current();
    CURRENT.scope(id, work)
}

/// `raw` as a correlation id: 1 to [`MAX_LEN`] visible ASCII characters, or none.
pub fn accept(raw: &str) -> Option<String> {
    (!raw.is_empty() && raw.len() <= MAX_LEN && raw.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| raw.to_owned())
}

/// An empty stored field means none.
pub fn from_field(raw: Option<String>) -> Option<String> {
    raw.filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_visible_ids_are_carried() {
        assert_eq!(accept("abc-123").as_deref(), Some("abc-123"));
        assert_eq!(accept(""), None);
        assert_eq!(accept("has space"), None);
        assert_eq!(accept("line\nbreak"), None);
        assert_eq!(accept(&"a".repeat(MAX_LEN)).map(|s| s.len()), Some(MAX_LEN));
        assert_eq!(accept(&"a".repeat(MAX_LEN + 1)), None);
        assert_eq!(accept("ünïcode"), None);
    }

    #[tokio::test]
    async fn the_scope_sets_the_current_id_and_nothing_leaks_outside() {
        assert_eq!(current(), None);
        let inside = scope(Some("req-1".into()), async { current() }).await;
        assert_eq!(inside.as_deref(), Some("req-1"));
        assert_eq!(scope(None, async { current() }).await, None);
        assert_eq!(current(), None);
        let spawned = scope(Some("req-2".into()), async {
            tokio::spawn(carried(async { current() }))
                .await
                .expect("task")
        })
        .await;
        assert_eq!(
            spawned.as_deref(),
            Some("req-2"),
            "carried into a spawned task"
        );
    }
}

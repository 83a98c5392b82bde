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

/// The `x` field of a request hash and its stream entry: the correlation id, then,
/// when the join was traced, a space and its W3C `traceparent`
/// ([`crate::telemetry`]). An id never holds a space ([`accept`]), so the two part
/// cleanly, and an untraced join writes the id alone, as it always did.
pub fn field(correlation_id: Option<&str>, traceparent: Option<&str>) -> String {
    match traceparent {
        Some(traceparent) => format!("{} {traceparent}", correlation_id.unwrap_or_default()),
        None => correlation_id.unwrap_or_default().to_owned(),
    }
}

/// The correlation id and the `traceparent` of an `x` field ([`field`]).
pub fn split_field(raw: Option<String>) -> (Option<String>, Option<String>) {
    let Some(raw) = raw else {
        return (None, None);
    };
    match raw.split_once(' ') {
        Some((id, traceparent)) => (
            from_field(Some(id.to_owned())),
            from_field(Some(traceparent.to_owned())),
        ),
        None => (from_field(Some(raw)), None),
    }
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

    #[test]
    fn the_field_carries_the_id_and_the_traceparent_and_parts_them_again() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        for (id, traceparent) in [
            (Some("req-1"), Some(tp)),
            (Some("req-1"), None),
            (None, Some(tp)),
            (None, None),
        ] {
            let stored = field(id, traceparent);
            assert_eq!(
                split_field(Some(stored.clone())),
                (id.map(str::to_owned), traceparent.map(str::to_owned)),
                "{stored:?}"
            );
        }
        assert_eq!(field(Some("req-1"), None), "req-1", "untraced: as before");
        assert_eq!(split_field(None), (None, None));
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

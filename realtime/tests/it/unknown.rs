//! Made-up event ids cost no queries: an id Postgres did not know is answered from
//! memory for `unknown_event_seconds`; an event with no sale gets no feed.

use proto::{EventId, Keys};
use realtime::feed::FeedError;
use sqlx::PgPool;

async fn hub(pool: &PgPool, unknown_event_seconds: u64) -> std::sync::Arc<realtime::Hub> {
    let store = platform::store::Store::open(&testkit::redis_url()).expect("redis url");
    let redis = store.shared().await.expect("redis");
    let settings = realtime::Settings {
        unknown_event_seconds,
        ..realtime::Settings::default()
    };
    realtime::Hub::new(
        store,
        redis,
        pool.clone(),
        Keys::new(format!("test:{}", uuid::Uuid::new_v4().simple())),
        settings,
    )
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn an_unknown_event_id_is_answered_from_memory(pool: PgPool) {
    let remembering = hub(&pool, 30).await;
    let forgetting = hub(&pool, 0).await;
    let made_up = EventId::new();
    for hub in [&remembering, &forgetting] {
        assert!(matches!(
            hub.event(made_up).await,
            Err(FeedError::EventNotFound(id)) if id == made_up
        ));
    }

    // The id comes to exist (a copy of a real event under it): a node that
    // remembers it as unknown answers from memory, without asking Postgres; one
    // that does not remember asks, and finds it.
    let real = crate::slow_reader::event(&pool).await;
    sqlx::query(
        "INSERT INTO inventory.events
         SELECT (jsonb_populate_record(NULL::inventory.events,
                     to_jsonb(e) || jsonb_build_object('event_id', $2::uuid))).*
         FROM inventory.events e WHERE event_id = $1",
    )
    .bind(real)
    .bind(made_up)
    .execute(&pool)
    .await
    .expect("the id exists now");
    assert!(matches!(
        remembering.event(made_up).await,
        Err(FeedError::EventNotFound(_))
    ));
    // An event with no sale has no line to follow: no feed, and the answer is
    // remembered too.
    assert!(matches!(
        forgetting.event(made_up).await,
        Err(FeedError::SaleNotFound(id)) if id == made_up
    ));
    assert!(matches!(
        forgetting.feed(made_up).await,
        Err(FeedError::SaleNotFound(_))
    ));
    waiting_room::sale::create_sale(&pool, made_up)
        .await
        .expect("its sale");
    assert!(forgetting.event(made_up).await.is_ok());
    assert!(forgetting.feed(made_up).await.is_ok());
}

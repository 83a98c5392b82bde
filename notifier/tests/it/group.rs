//! Two notifier processes in one consumer group: they share the partitions (both
//! send), every envelope is emailed once between them, and when one leaves the
//! other takes its partitions, still once per envelope.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::helpers::{WAIT, world_with};

const PARTITIONS: i32 = 4;

/// A notifier process; killed when dropped, so a failing test leaves none.
struct Member {
    child: Child,
    port: u16,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Member {
    fn start(database_url: &str, world: &crate::helpers::World, name: &str) -> Self {
        let port = testkit::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_notifier"))
            .env("DATABASE_URL", database_url)
            .env("KAFKA_BROKERS", &world.kafka.brokers)
            .env("ONSALE_KAFKA__TOPIC_SUFFIX", &world.kafka.topic_suffix)
            .env("ONSALE_CONSUMER__GROUP_ID", &world.group)
            .env("ONSALE_CONSUMER__SESSION_TIMEOUT_MS", "6000")
            .env("ONSALE_CONSUMER__PARTITIONS", PARTITIONS.to_string())
            .env("ONSALE_SMTP_URL", world.sink.url())
            .env("ONSALE_LISTEN", format!("127.0.0.1:{port}"))
            .env("ONSALE_NAME", name)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the notifier binary");
        Self { child, port }
    }

    /// Emails this member has sent, by its own `/metrics`.
    async fn sent(&self) -> u64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        let Ok(response) = reqwest::get(&url).await else {
            return 0;
        };
        let text = response.text().await.unwrap_or_default();
        text.lines()
            .filter(|line| {
                line.starts_with("onsale_emails_total{") && line.contains("outcome=\"sent\"")
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

fn database_url(pool: &PgPool) -> String {
    testkit::database_url(pool.connect_options().get_database().unwrap_or("postgres"))
}

#[sqlx::test(migrator = "proto::migrations::MIGRATOR")]
async fn two_members_share_the_partitions_and_email_each_event_once_even_as_one_leaves(
    pool: PgPool,
) {
    let brokers = std::env::var("KAFKA_BROKERS").expect("KAFKA_BROKERS");
    let world = world_with(pool.clone(), "Shared Night", brokers, PARTITIONS).await;
    let url = database_url(&pool);
    let members = [
        Member::start(&url, &world, "notifier-a"),
        Member::start(&url, &world, "notifier-b"),
    ];
    // Envelopes of a dozen events, keyed by event: spread over the partitions.
    let mut events = vec![world.event_id];
    for n in 1..12 {
        events.push(world.another_event(&format!("Shared Night {n}")).await);
    }
    // Waves until both members have sent (the second may join the group after the
    // first took every partition), then everything produced is accounted for.
    let mut produced = Vec::new();
    let started = Instant::now();
    loop {
        for event in &events {
            let envelope = world.order_in(*event, "order.paid", 4200, "EUR");
            world.produce(&envelope).await;
            produced.push(envelope);
        }
        world
            .sink
            .wait_for(produced.len() as u64, WAIT)
            .await
            .expect("every email of the wave");
        let (a, b) = (members[0].sent().await, members[1].sent().await);
        if a > 0 && b > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "one member sent everything for 90 s ({a} and {b}): the partitions were not shared"
        );
    }
    // A member counts an email once its log row says sent, just after the sink
    // has it: the counts catch up with the sink.
    let started = Instant::now();
    let (a, b) = loop {
        let (a, b) = (members[0].sent().await, members[1].sent().await);
        if a + b >= produced.len() as u64 || started.elapsed() > WAIT {
            break (a, b);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for envelope in &produced {
        assert_eq!(
            world.emails_for(envelope).len(),
            1,
            "envelope {} of event {} emailed once",
            envelope.id,
            envelope.event_id
        );
    }
    assert_eq!(world.sink.messages().len(), produced.len(), "no email more");
    assert_eq!(
        a + b,
        produced.len() as u64,
        "the members' counts add up ({a} + {b})"
    );

    // A scale-down: one member leaves (SIGTERM) while a wave is produced; the other
    // takes its partitions, and still every envelope is emailed once.
    let [mut leaving, staying] = members;
    let pid = leaving.child.id().to_string();
    let signalled = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(signalled.success(), "SIGTERM sent");
    for event in &events {
        let envelope = world.order_in(*event, "order.paid", 4200, "EUR");
        world.produce(&envelope).await;
        produced.push(envelope);
    }
    let status = leaving.child.wait().expect("the member exits");
    assert!(status.success(), "the member shut down cleanly: {status}");
    world
        .sink
        .wait_for(produced.len() as u64, WAIT)
        .await
        .expect("every email, the last wave's through the remaining member");
    for envelope in &produced {
        assert_eq!(
            world.emails_for(envelope).len(),
            1,
            "envelope {} emailed once",
            envelope.id
        );
    }
    assert_eq!(world.sink.messages().len(), produced.len(), "no email more");
    let started = Instant::now();
    while staying.sent().await <= b {
        assert!(
            started.elapsed() < WAIT,
            "the remaining member took over the partitions (it sent {b} before)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

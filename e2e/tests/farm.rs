//! The farm as it is deployed: every service its own process, on a Redis and a
//! Postgres of the test's own (which it stops and starts again) and the run's Kafka
//! broker, with an SMTP sink in the test.
//!
//! - One fan joins, is held, pays, and gets two emails. Each call's `x-request-id` is
//!   followed through every process's JSON logs (the gateway, the booking worker that
//!   read it from the stream entry, the relay that put it in the Kafka envelope, the
//!   notifier) to the email's `X-Onsale-Correlation-Id` header.
//! - Every service's `/metrics` is read by a Prometheus parser and carries its own
//!   figures; the Grafana dashboard asks only for metrics some service exposes.
//! - Every service's `/readyz` turns 503 when Redis, then Postgres, is stopped (the
//!   notifier, which does not use Redis, stays ready), and 200 when it is back; then
//!   the farm holds seats again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use notifier::sink::{MailSink, Received};
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{PrivatePostgres, PrivateRedis, free_port};

#[allow(
    dead_code,
    reason = "each multi-process test uses part of the support module"
)]
mod support;
use support::{Service, binary};

const ADMIN: &str = "farm-admin@onsale.test:farm-admin-password";
const JWT_SECRET: &str = "farm-test-secret-at-least-32-bytes-long!!";
const WEBHOOK_SECRET: &str = "farm-webhook-secret";

struct Farm {
    services: Vec<Service>,
    dir: PathBuf,
}

impl Farm {
    fn start(redis: &PrivateRedis, postgres: &PrivatePostgres, brokers: &str, smtp: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("onsale-farm-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("log dir");
        let run = uuid::Uuid::new_v4().simple().to_string();
        let common: Vec<(&str, String)> = vec![
            ("DATABASE_URL", postgres.url()),
            ("REDIS_URL", redis.url()),
            ("KAFKA_BROKERS", brokers.to_owned()),
            ("ONSALE_KAFKA__TOPIC_SUFFIX", format!("-farm-{run}")),
            ("ONSALE_AUTH__JWT_SECRET", JWT_SECRET.to_owned()),
            ("ONSALE_PAYMENTS__WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
            ("ONSALE_PAYMENTS__SANDBOX_WEBHOOK_SECONDS", "0".to_owned()),
            ("ONSALE_BOOTSTRAP_ADMIN", ADMIN.to_owned()),
            ("ONSALE_SMTP_URL", smtp.to_owned()),
            ("ONSALE_CONSUMER__GROUP_ID", format!("farm-{run}")),
            ("ONSALE_CONSUMER__SESSION_TIMEOUT_MS", "6000".to_owned()),
            ("ONSALE_DISCOVER_INTERVAL_MS", "50".to_owned()),
            ("ONSALE_DRAIN__BLOCK_MS", "50".to_owned()),
            ("ONSALE_LOG_FORMAT", "json".to_owned()),
            (
                "RUST_LOG",
                "info,gateway=debug,waiting_room=debug,booking_worker=debug,payments=debug"
                    .to_owned(),
            ),
        ];
        let services = testkit::SERVICES
            .into_iter()
            .map(|name| {
                let port = free_port();
                let log = dir.join(format!("{name}.log"));
                let file = std::fs::File::create(&log).expect("log file");
                let mut command = Command::new(binary(name));
                let ops_port = support::ops_port(name, port, &mut command);
                let child = command
                    .envs(common.iter().map(|(k, v)| (*k, v.as_str())))
                    .env("ONSALE_LISTEN", format!("127.0.0.1:{port}"))
                    .env("ONSALE_NAME", format!("farm-{name}"))
                    .stdout(file.try_clone().expect("log file"))
                    .stderr(file)
                    .stdin(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| panic!("starting {name}: {e}"));
                Service {
                    name,
                    port,
                    ops_port,
                    child,
                    log,
                }
            })
            .collect();
        Self { services, dir }
    }

    fn service(&self, name: &str) -> &Service {
        self.services
            .iter()
            .find(|s| s.name == name)
            .expect("a service of the farm")
    }

    fn gateway(&self, path: &str) -> String {
        self.service("gateway").url(path)
    }

    /// Waits until every service in `names` answers `/readyz` with `status`.
    async fn wait_readiness(&mut self, names: &[&str], status: StatusCode, within: Duration) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let started = Instant::now();
        let mut waiting: BTreeSet<&str> = names.iter().copied().collect();
        let mut last: BTreeMap<&str, String> = BTreeMap::new();
        while !waiting.is_empty() {
            for service in &mut self.services {
                if !waiting.contains(service.name) {
                    continue;
                }
                service.assert_running();
                let answer = client.get(service.url("/readyz")).send().await;
                let seen = match answer {
                    Ok(response) => {
                        let code = response.status();
                        let body = response.text().await.unwrap_or_default();
                        if code == status {
                            waiting.remove(service.name);
                        }
                        format!("{code} {body}")
                    }
                    Err(e) => format!("no answer: {e}"),
                };
                last.insert(service.name, seen);
            }
            assert!(
                started.elapsed() < within,
                "within {within:?}, /readyz did not answer {status} on {waiting:?}; last answers: {last:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `service`'s log has a JSON line mentioning `needle`, and returns it.
    async fn log_line(&self, service: &str, needle: &str) -> Value {
        let started = Instant::now();
        loop {
            let text = self.service(service).log_text();
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{service} logs JSON lines ({e}): {line}"));
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{service}'s log never mentions {needle} (log: {})",
                self.service(service).log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the farm's logs are kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A REST client of the gateway.
struct Api {
    client: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("the gateway answers");
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn login(&self, farm: &Farm, email: &str, password: &str) -> String {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &farm.gateway("/v1/auth/login"),
                None,
                Some(json!({"email": email, "password": password})),
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login: {body}");
        body["access_token"].as_str().expect("token").to_owned()
    }

    async fn fan(&self, farm: &Farm) -> String {
        let email = format!("fan-{}@onsale.test", uuid::Uuid::new_v4().simple());
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &farm.gateway("/v1/auth/register"),
                None,
                Some(json!({"email": email, "password": "a fan's password"})),
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "register: {body}");
        self.login(farm, &email, "a fan's password").await
    }

    /// Joins with `correlation` as the call's `x-request-id`; the request id.
    async fn join(&self, farm: &Farm, event: &str, token: &str, correlation: &str) -> String {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &farm.gateway(&format!("/v1/events/{event}/requests")),
                Some(token),
                Some(json!({"quantity": 2})),
                &[("x-request-id", correlation)],
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "join: {body}");
        body["request_id"].as_str().expect("request id").to_owned()
    }

    async fn until_held(&self, farm: &Farm, request: &str, token: &str) -> Value {
        let started = Instant::now();
        loop {
            let (status, body) = self
                .call(
                    reqwest::Method::GET,
                    &farm.gateway(&format!("/v1/requests/{request}")),
                    Some(token),
                    None,
                    &[],
                )
                .await;
            assert_eq!(status, StatusCode::OK, "request: {body}");
            match body["state"].as_str() {
                Some("held") => return body,
                Some("queued") => {}
                other => panic!("the request went {other:?} instead of held: {body}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the booking worker process did not hold {request} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Parses one service's `/metrics`; the metric names it exposes.
async fn scrape(url: &str) -> BTreeSet<String> {
    let response = reqwest::get(url).await.expect("metrics answer");
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    let text = response.text().await.expect("text");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("{url} is not Prometheus text: {e}"));
    let names: BTreeSet<String> = scrape.samples.iter().map(|s| s.metric.clone()).collect();
    assert!(
        names.iter().all(|n| n.starts_with("onsale_")),
        "{url}: every metric carries the onsale_ prefix: {names:?}"
    );
    names
}

/// Every `onsale_*` metric name an expression mentions.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("onsale_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

fn email_with<'a>(emails: &'a [Received], correlation: &str) -> &'a Received {
    emails
        .iter()
        .find(|m| m.header("X-Onsale-Correlation-Id").as_deref() == Some(correlation))
        .unwrap_or_else(|| {
            let seen: Vec<_> = emails
                .iter()
                .map(|m| (m.subject(), m.header("X-Onsale-Correlation-Id")))
                .collect();
            panic!("no email carries correlation id {correlation}; got {seen:?}")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_farm_as_processes_traces_a_fan_exposes_its_metrics_and_reports_readiness() {
    let brokers = std::env::var("KAFKA_BROKERS").expect(
        "KAFKA_BROKERS must name a Kafka-protocol broker; run the suite through deploy/test",
    );
    let mut redis = PrivateRedis::start();
    let postgres = PrivatePostgres::start();
    let sink = MailSink::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("smtp sink");
    let mut farm = Farm::start(&redis, &postgres, &brokers, &sink.url());
    let all = testkit::SERVICES;
    farm.wait_readiness(&all, StatusCode::OK, Duration::from_secs(90))
        .await;

    // A sale in miniature through the gateway.
    let api = Api {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client"),
    };
    let (admin_email, admin_password) = ADMIN.split_once(':').expect("admin");
    let admin = api.login(&farm, admin_email, admin_password).await;
    let (status, venue) = api
        .call(
            reqwest::Method::POST,
            &farm.gateway("/v1/venues"),
            Some(&admin),
            Some(json!({"name": "Farm Hall", "sections": [
                {"name": "Floor", "price_tier": "standard", "rows": [{"label": "A", "seats": 10}]}
            ]})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "venue: {venue}");
    let onsale = chrono::Utc::now() + chrono::Duration::hours(1);
    let (status, event) = api
        .call(
            reqwest::Method::POST,
            &farm.gateway("/v1/events"),
            Some(&admin),
            Some(json!({
                "venue_id": venue["venue_id"], "name": "Farm Night",
                "starts_at": (onsale + chrono::Duration::days(30)).to_rfc3339(),
                "onsale_at": onsale.to_rfc3339(),
                "max_per_fan": 4, "hold_seconds": 600, "prices": {"standard": 5000}
            })),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "event: {event}");
    let event = event["event_id"].as_str().expect("event id").to_owned();
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            &farm.gateway(&format!("/v1/ops/events/{event}/open")),
            Some(&admin),
            Some(json!({})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "open: {body}");

    // The fan watches on the realtime node's own socket while the farm holds.
    let fan = api.fan(&farm).await;
    let join_id = format!("farm-join-{}", uuid::Uuid::new_v4().simple());
    let request = api.join(&farm, &event, &fan, &join_id).await;
    let live = format!(
        "ws://127.0.0.1:{}/v1/events/{event}/live?access_token={fan}&request_id={request}",
        farm.service("realtime").port
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(live)
        .await
        .expect("the realtime node takes the socket");
    let first = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("a first message within 10 s")
        .expect("the socket stays open")
        .expect("a frame");
    assert!(
        first.to_text().unwrap_or_default().contains("\"type\""),
        "the realtime node sends JSON messages: {first:?}"
    );
    let held = api.until_held(&farm, &request, &fan).await;
    assert_eq!(held["seats"].as_array().map(Vec::len), Some(2), "{held}");

    let pay_id = format!("farm-pay-{}", uuid::Uuid::new_v4().simple());
    let (status, order) = api
        .call(
            reqwest::Method::POST,
            &farm.gateway(&format!("/v1/requests/{request}/checkout")),
            Some(&fan),
            Some(json!({"card_number": "4242424242424242", "expiry": "12/34", "cvc": "123"})),
            &[("x-request-id", &pay_id), ("Idempotency-Key", &pay_id)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "checkout: {order}");
    assert_eq!(order["state"], "paid", "{order}");

    // Two emails (held, paid), each naming the fan's request and the call behind it.
    let emails = sink
        .wait_for(2, Duration::from_secs(90))
        .await
        .expect("the held and paid emails within 90 s");
    for (correlation, what) in [(&join_id, "held"), (&pay_id, "paid")] {
        let email = email_with(&emails, correlation);
        assert_eq!(
            email.header("X-Onsale-Request-Id").as_deref(),
            Some(request.as_str()),
            "the {what} email names the request"
        );
    }

    // The join's id in every process it passed through, as a structured field.
    for (service, field_holder) in [
        ("gateway", "the join's http span"),
        ("booking-worker", "the decision read from the stream entry"),
        ("payments", "the relay's envelope"),
        ("notifier", "the email's envelope"),
    ] {
        let line = farm.log_line(service, &join_id).await;
        assert!(
            line.to_string().contains("correlation_id"),
            "{service} names the id as correlation_id ({field_holder}): {line}"
        );
    }
    for service in ["gateway", "payments", "notifier"] {
        farm.log_line(service, &pay_id).await;
    }

    // Every service's /metrics parses and carries its own figures; the dashboard
    // asks only for what the farm exposes.
    let own: [(&str, &[&str]); 6] = [
        (
            "gateway",
            &[
                "onsale_http_requests_total",
                "onsale_requests_joined_total",
                "onsale_orders_total",
            ],
        ),
        (
            "waiting-room",
            &["onsale_line_waiting", "onsale_seats_held"],
        ),
        (
            "booking-worker",
            &[
                "onsale_requests_decided_total",
                "onsale_holds_total",
                "onsale_worker_batch_seconds",
            ],
        ),
        (
            "payments",
            &["onsale_outbox_published_total", "onsale_outbox_lag_seconds"],
        ),
        (
            "notifier",
            &["onsale_emails_total", "onsale_email_lag_seconds"],
        ),
        (
            "realtime",
            &["onsale_realtime_sockets", "onsale_realtime_feeds"],
        ),
    ];
    let mut exposed = BTreeSet::new();
    for (service, figures) in own {
        // The waiting room samples the line once a second: wait for its gauges.
        let started = Instant::now();
        let names = loop {
            let names = scrape(&farm.service(service).ops_url("/metrics")).await;
            if figures.iter().all(|f| names.contains(*f)) {
                break names;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{service}'s /metrics lacks some of {figures:?}: {names:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        exposed.extend(names);
    }
    let dashboard: Value = serde_json::from_str(include_str!("../../deploy/grafana/onsale.json"))
        .expect("the Grafana dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "the dashboard has its panels");
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr} names no metric");
            for name in names {
                assert!(
                    exposed.contains(&name),
                    "{} asks for {name}, which no service exposes ({exposed:?})",
                    panel["title"]
                );
            }
        }
    }
    socket.close(None).await.ok();

    // Readiness follows Redis: every service that uses it turns not-ready and back.
    let uses_redis = [
        "gateway",
        "waiting-room",
        "booking-worker",
        "payments",
        "realtime",
    ];
    redis.stop();
    farm.wait_readiness(
        &uses_redis,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(30),
    )
    .await;
    farm.wait_readiness(&["notifier"], StatusCode::OK, Duration::from_secs(10))
        .await;
    redis.start_again();
    farm.wait_readiness(&all, StatusCode::OK, Duration::from_secs(60))
        .await;

    // And Postgres: every service turns not-ready and back.
    postgres.stop();
    farm.wait_readiness(
        &all,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(30),
    )
    .await;
    postgres.start_again();
    farm.wait_readiness(&all, StatusCode::OK, Duration::from_secs(60))
        .await;

    // Ready means able: a second fan is held by the same processes.
    let second = api.fan(&farm).await;
    let again = api
        .join(
            &farm,
            &event,
            &second,
            &format!("farm-again-{}", uuid::Uuid::new_v4().simple()),
        )
        .await;
    api.until_held(&farm, &again, &second).await;
    for service in &mut farm.services {
        service.assert_running();
    }
}

#[test]
fn metric_names_are_found_in_expressions() {
    assert_eq!(
        metric_names(
            r#"max by (route) (onsale_http_request_duration_seconds{quantile="0.99"}) / sum(rate(onsale_holds_total[1m]))"#
        ),
        ["onsale_http_request_duration_seconds", "onsale_holds_total"]
    );
}

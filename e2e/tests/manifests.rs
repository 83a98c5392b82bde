//! The deployment manifests hold together, and hold to the code, so that a typo or a
//! renamed setting fails here instead of in an operator's cluster:
//!
//! - every YAML file under `deploy/k8s`, and `deploy/compose.yaml`, parses;
//! - `deploy/k8s` holds every object the farm needs, in its namespace, and
//!   `kustomization.yaml` lists exactly the files there;
//! - every Deployment's containers listen on a port they expose, are probed there on
//!   `/readyz` and `/healthz`, ask for CPU and memory and cap memory, and take their
//!   secrets and settings from a Secret and a ConfigMap that have them;
//! - the autoscalers, Services and disruption budgets point at Deployments that
//!   exist, and the Ingress sends the live sockets to realtime, the rest to gateway;
//! - `compose.yaml` runs every service with a `/readyz` health check, waits only on
//!   services it has, and haproxy (`deploy/haproxy/compose.cfg`) balances both
//!   gateways, keeps WebSockets open, and is a proxy the gateways trust;
//! - every `ONSALE_` variable the manifests set is one the services read;
//! - `compose.yaml` ships no credential (the secrets have no default) and publishes
//!   its ports on 127.0.0.1 unless told otherwise.
//!
//! Files only: no cluster, no Docker, no network.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

use testkit::SERVICES;

const AUTOSCALED: [&str; 3] = ["gateway", "realtime", "booking-worker"];
const BUDGETED: [&str; 2] = ["gateway", "realtime"];
const NAMESPACE: &str = "onsale";
const CONFIG_MAP: &str = "onsale-config";
const SECRET: &str = "onsale-secrets";
const INGRESS: &str = "onsale";
/// The gateway's setting naming the proxies whose forwarding headers it believes.
const TRUSTED_PROXIES: &str = "ONSALE_LIMITS__TRUSTED_PROXIES";

// ---- files ----

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn deploy_dir() -> PathBuf {
    workspace().join("deploy")
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a YAML file.
fn load(path: &Path) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{}: not valid YAML: {e}", path.display()))
}

fn k8s_files() -> Vec<PathBuf> {
    let dir = deploy_dir().join("k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            matches!(
                path.extension().and_then(|ext| ext.to_str()),
                Some("yaml" | "yml")
            )
        })
        .collect();
    files.sort();
    files
}

// ---- YAML access ----

/// The items of a sequence; none when the node is missing or is not one.
fn items(node: &Yaml) -> &[Yaml] {
    node.as_vec().map(Vec::as_slice).unwrap_or(&[])
}

fn text(node: &Yaml) -> &str {
    node.as_str().unwrap_or("")
}

fn present(node: &Yaml) -> bool {
    !node.is_badvalue() && !node.is_null()
}

/// The string keys of a mapping; none when the node is missing or is not one.
fn keys(node: &Yaml) -> Vec<&str> {
    node.as_hash()
        .map(|hash| hash.keys().filter_map(Yaml::as_str).collect())
        .unwrap_or_default()
}

/// A mapping of strings to strings, such as a set of labels.
fn labels(node: &Yaml) -> BTreeMap<String, String> {
    let Some(hash) = node.as_hash() else {
        return BTreeMap::new();
    };
    hash.iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
        .collect()
}

/// Whether a label selector picks pods with these labels (an empty one picks none
/// here: every selector in the manifests is meant to pick something).
fn selects(selector: &BTreeMap<String, String>, pod: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| pod.get(k) == Some(v))
}

// ---- Kubernetes objects ----

/// One Kubernetes object and the file it came from, for messages.
struct Object {
    file: String,
    doc: Yaml,
}

impl Object {
    fn kind(&self) -> &str {
        text(&self.doc["kind"])
    }

    fn name(&self) -> &str {
        text(&self.doc["metadata"]["name"])
    }

    fn at(&self) -> String {
        format!("k8s/{}: {} {:?}", self.file, self.kind(), self.name())
    }

    fn containers(&self) -> &[Yaml] {
        items(&self.doc["spec"]["template"]["spec"]["containers"])
    }

    fn pod_labels(&self) -> BTreeMap<String, String> {
        labels(&self.doc["spec"]["template"]["metadata"]["labels"])
    }
}

/// The objects kustomize applies (everything but `kustomization.yaml` itself).
fn objects() -> Vec<Object> {
    k8s_files()
        .iter()
        .filter(|path| file_name(path) != "kustomization.yaml")
        .flat_map(|path| {
            let file = file_name(path);
            load(path)
                .into_iter()
                // A stray `---` makes an empty document.
                .filter(present)
                .map(move |doc| Object {
                    file: file.clone(),
                    doc,
                })
        })
        .collect()
}

fn find<'a>(objects: &'a [Object], kind: &str, name: &str) -> Option<&'a Object> {
    objects
        .iter()
        .find(|object| object.kind() == kind && object.name() == name)
}

fn of_kind<'a>(objects: &'a [Object], kind: &'a str) -> impl Iterator<Item = &'a Object> {
    objects.iter().filter(move |object| object.kind() == kind)
}

fn container_at(deployment: &Object, container: &Yaml) -> String {
    format!(
        "{}, container {:?}",
        deployment.at(),
        text(&container["name"])
    )
}

/// A container's ports as (name, number).
fn container_ports(container: &Yaml) -> Vec<(String, i64)> {
    items(&container["ports"])
        .iter()
        .filter_map(|port| {
            Some((
                text(&port["name"]).to_owned(),
                port["containerPort"].as_i64()?,
            ))
        })
        .collect()
}

/// Whether `port` (a number or a port's name, as probes and Services give it) is one
/// of `ports`.
fn names_port(port: &Yaml, ports: &[(String, i64)]) -> bool {
    match (port.as_i64(), port.as_str()) {
        (Some(number), _) => ports.iter().any(|(_, known)| *known == number),
        (None, Some(name)) => ports.iter().any(|(known, _)| known == name),
        _ => false,
    }
}

fn env_value<'a>(container: &'a Yaml, name: &str) -> Option<&'a str> {
    items(&container["env"])
        .iter()
        .find(|var| text(&var["name"]) == name)
        .and_then(|var| var["value"].as_str())
}

/// The keys a ConfigMap or Secret holds.
fn stored_keys(object: &Object) -> Vec<&str> {
    ["data", "stringData"]
        .into_iter()
        .flat_map(|field| keys(&object.doc[field]))
        .collect()
}

// ---- compose ----

fn compose_path() -> PathBuf {
    deploy_dir().join("compose.yaml")
}

fn compose() -> Yaml {
    load(&compose_path())
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{}: no document", compose_path().display()))
}

fn compose_services(compose: &Yaml) -> Vec<(&str, &Yaml)> {
    compose["services"]
        .as_hash()
        .map(|hash| {
            hash.iter()
                .filter_map(|(name, service)| Some((name.as_str()?, service)))
                .collect()
        })
        .unwrap_or_default()
}

/// The binary a compose service runs: the first word of its command.
fn compose_command(service: &Yaml) -> Option<&str> {
    match &service["command"] {
        Yaml::Array(words) => words.first().and_then(Yaml::as_str),
        Yaml::String(line) => line.split_whitespace().next(),
        _ => None,
    }
}

/// The names a compose service sets in its environment, in either of compose's forms.
fn compose_env(service: &Yaml) -> Vec<&str> {
    match &service["environment"] {
        Yaml::Hash(vars) => vars.keys().filter_map(Yaml::as_str).collect(),
        Yaml::Array(lines) => lines
            .iter()
            .filter_map(Yaml::as_str)
            .filter_map(|line| line.split('=').next())
            .collect(),
        _ => Vec::new(),
    }
}

/// The services a compose service waits for, with the condition (compose's default
/// for the short form is `service_started`).
fn compose_dependencies(service: &Yaml) -> Vec<(&str, &str)> {
    match &service["depends_on"] {
        Yaml::Hash(deps) => deps
            .iter()
            .filter_map(|(name, dep)| {
                let condition = dep["condition"].as_str().unwrap_or("service_started");
                Some((name.as_str()?, condition))
            })
            .collect(),
        Yaml::Array(deps) => deps
            .iter()
            .filter_map(Yaml::as_str)
            .map(|name| (name, "service_started"))
            .collect(),
        _ => Vec::new(),
    }
}

// ---- the code the settings must exist in ----

/// The text the services' settings must be found in.
struct Code {
    /// Every Rust source outside `target/` and the test directories (a test setting
    /// a variable proves nothing about the services), and the scripts that start the
    /// farm.
    all: String,
    /// The Rust sources that derive `Deserialize`, where the configuration structs
    /// live (a field of some other struct says nothing about the configuration).
    deserialized: String,
}

fn rust_sources() -> Vec<PathBuf> {
    let mut sources = Vec::new();
    let mut dirs = vec![workspace()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            let name = file_name(&path);
            if path.is_dir() {
                let skipped = name.starts_with('.')
                    || ["target", "node_modules", "tests"].contains(&name.as_str());
                if !skipped {
                    dirs.push(path);
                }
            } else if name.ends_with(".rs") {
                sources.push(path);
            }
        }
    }
    sources
}

fn code() -> Code {
    let mut code = Code {
        all: String::new(),
        deserialized: String::new(),
    };
    for path in rust_sources() {
        let source = read(&path) + "\n";
        if source.contains("Deserialize") {
            code.deserialized.push_str(&source);
        }
        code.all.push_str(&source);
    }
    for script in ["run", "stack.sh"] {
        code.all.push_str(&read(&deploy_dir().join(script)));
        code.all.push('\n');
    }
    code
}

/// Whether `name` occurs in `text` as a whole word, not as part of a longer name.
fn mentions(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        ![before, after]
            .into_iter()
            .flatten()
            .any(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Whether a service reads `var`. The config layer (proto/src/settings.rs) strips
/// `ONSALE_`, lowercases the rest and splits it at `__` into a key path, which serde
/// fills into the configuration structs: so each level must be a field of one
/// (`ONSALE_LIMITS__PER_IP_BURST`: `pub limits:` and `pub per_ip_burst:`). The text
/// cannot tell which struct a field belongs to, so this catches a misspelt or
/// removed setting, or `_` for `__`, but not a real field under the wrong section.
/// A variable read by name (`ONSALE_LOG_FORMAT`) is found by name.
fn is_read(var: &str, code: &Code) -> bool {
    let path = var.trim_start_matches("ONSALE_").to_lowercase();
    mentions(&code.all, var)
        || path
            .split("__")
            .all(|level| !level.is_empty() && code.deserialized.contains(&format!("pub {level}:")))
}

/// Every `ONSALE_` variable the manifests set, with where it is set.
fn settings_set(objects: &[Object], compose: &Yaml) -> Vec<(String, String)> {
    let mut set = Vec::new();
    for (name, service) in compose_services(compose) {
        for var in compose_env(service) {
            set.push((format!("compose.yaml: service {name:?}"), var.to_owned()));
        }
    }
    for object in of_kind(objects, "ConfigMap").chain(of_kind(objects, "Secret")) {
        for var in stored_keys(object) {
            set.push((object.at(), var.to_owned()));
        }
    }
    for deployment in of_kind(objects, "Deployment") {
        for container in deployment.containers() {
            for var in items(&container["env"]) {
                set.push((
                    container_at(deployment, container),
                    text(&var["name"]).to_owned(),
                ));
            }
        }
    }
    set.retain(|(_, var)| var.starts_with("ONSALE_"));
    set
}

/// Whether an IPv4 address lies in a CIDR (`10.0.0.0/8`, or a bare address).
fn ipv4_in(address: &str, cidr: &str) -> bool {
    let (net, bits) = cidr.trim().split_once('/').unwrap_or((cidr.trim(), "32"));
    let (Ok(address), Ok(net), Ok(bits)) = (
        address.parse::<Ipv4Addr>(),
        net.parse::<Ipv4Addr>(),
        bits.parse::<u32>(),
    ) else {
        return false;
    };
    if bits > 32 {
        return false;
    }
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    (u32::from(address) & mask) == (u32::from(net) & mask)
}

// ---- the tests ----

#[test]
fn every_manifest_parses() {
    let mut files = k8s_files();
    assert!(!files.is_empty(), "deploy/k8s holds no YAML file");
    files.push(compose_path());
    for path in &files {
        let docs = load(path);
        assert!(
            docs.iter().any(|doc| doc.as_hash().is_some()),
            "{}: holds no YAML mapping",
            path.display()
        );
    }
}

#[test]
fn kubernetes_has_every_object_the_farm_needs() {
    let objects = objects();
    let mut wanted = vec![
        ("Namespace", NAMESPACE),
        ("ConfigMap", CONFIG_MAP),
        ("Secret", SECRET),
        ("Ingress", INGRESS),
    ];
    for service in SERVICES {
        wanted.extend([("Deployment", service), ("Service", service)]);
    }
    wanted.extend(AUTOSCALED.map(|name| ("HorizontalPodAutoscaler", name)));
    wanted.extend(BUDGETED.map(|name| ("PodDisruptionBudget", name)));
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(kind, name)| find(&objects, kind, name).is_none())
        .map(|(kind, name)| format!("{kind} {name:?}"))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/k8s lacks {}",
        missing.join(", ")
    );

    let mut seen = BTreeSet::new();
    for object in &objects {
        assert!(
            seen.insert((object.kind(), object.name())),
            "{}: defined twice",
            object.at()
        );
        if object.kind() != "Namespace" {
            assert_eq!(
                object.doc["metadata"]["namespace"].as_str(),
                Some(NAMESPACE),
                "{}: not in namespace {NAMESPACE:?}",
                object.at()
            );
        }
    }

    // The notifiers share the topics' partitions as one consumer group.
    let notifier = find(&objects, "Deployment", "notifier").expect("checked above");
    assert!(
        notifier.doc["spec"]["replicas"].as_i64().unwrap_or(1) >= 2,
        "{}: wants at least 2 replicas in its consumer group",
        notifier.at()
    );
}

#[test]
fn kustomization_lists_exactly_the_manifests() {
    let path = deploy_dir().join("k8s/kustomization.yaml");
    let docs = load(&path);
    let kustomization = docs
        .first()
        .unwrap_or_else(|| panic!("{}: no document", path.display()));
    let listed: BTreeSet<&str> = items(&kustomization["resources"])
        .iter()
        .map(|resource| {
            resource.as_str().unwrap_or_else(|| {
                panic!("k8s/kustomization.yaml: resource {resource:?} is not a file name")
            })
        })
        .collect();
    for resource in &listed {
        assert!(
            deploy_dir().join("k8s").join(resource).is_file(),
            "k8s/kustomization.yaml: lists {resource:?}, which does not exist"
        );
    }
    for path in k8s_files() {
        let file = file_name(&path);
        assert!(
            file == "kustomization.yaml" || listed.contains(file.as_str()),
            "k8s/{file}: not listed in kustomization.yaml, so `kubectl apply -k` skips it"
        );
    }
}

#[test]
fn every_container_listens_where_it_is_probed_and_is_sized() {
    let objects = objects();
    for deployment in of_kind(&objects, "Deployment") {
        assert!(
            !deployment.containers().is_empty(),
            "{}: no containers",
            deployment.at()
        );
        for container in deployment.containers() {
            let at = container_at(deployment, container);
            let ports = container_ports(container);
            // The services listen on 127.0.0.1 unless told otherwise: unreachable
            // for probes, Services and Prometheus.
            let listen_port = env_value(container, "ONSALE_LISTEN")
                .and_then(|listen| listen.rsplit_once(':'))
                .and_then(|(_, port)| port.parse::<i64>().ok());
            assert!(
                listen_port.is_some_and(|port| ports.iter().any(|(_, known)| *known == port)),
                "{at}: ONSALE_LISTEN must name one of its containerPorts {ports:?}"
            );
            // Prometheus scrapes where /metrics is: the operations port where the
            // service has one of its own (the gateway: never its public port).
            let ops_port = env_value(container, "ONSALE_OPS_LISTEN")
                .and_then(|listen| listen.rsplit_once(':'))
                .and_then(|(_, port)| port.parse::<i64>().ok());
            let scraped =
                deployment.doc["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"]
                    .as_str()
                    .and_then(|port| port.parse::<i64>().ok());
            assert_eq!(
                scraped,
                ops_port.or(listen_port),
                "{at}: prometheus.io/port must be where /metrics is served"
            );
            if text(&container["name"]) == "gateway" {
                assert!(
                    ops_port.is_some() && ops_port != listen_port,
                    "{at}: the gateway's metrics belong on an operations port of their own"
                );
            }
            for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
                let check = &container[probe]["httpGet"];
                assert_eq!(
                    check["path"].as_str(),
                    Some(path),
                    "{at}: {probe} must GET {path}"
                );
                assert!(
                    names_port(&check["port"], &ports),
                    "{at}: {probe} port {:?} is none of its containerPorts {ports:?}",
                    check["port"]
                );
            }
            let resources = &container["resources"];
            for (section, quantity) in [
                ("requests", "cpu"),
                ("requests", "memory"),
                ("limits", "memory"),
            ] {
                assert!(
                    present(&resources[section][quantity]),
                    "{at}: resources.{section}.{quantity} is not set"
                );
            }
        }
    }
}

#[test]
fn deployments_take_settings_that_exist() {
    let objects = objects();
    for deployment in of_kind(&objects, "Deployment") {
        for container in deployment.containers() {
            let at = container_at(deployment, container);
            for source in items(&container["envFrom"]) {
                if let Some(name) = source["configMapRef"]["name"].as_str() {
                    assert!(
                        find(&objects, "ConfigMap", name).is_some(),
                        "{at}: envFrom names ConfigMap {name:?}, which does not exist"
                    );
                }
            }
            for var in items(&container["env"]) {
                let reference = &var["valueFrom"]["secretKeyRef"];
                if !present(reference) {
                    continue;
                }
                let (secret, key) = (text(&reference["name"]), text(&reference["key"]));
                let holds = find(&objects, "Secret", secret)
                    .is_some_and(|object| stored_keys(object).contains(&key));
                assert!(
                    holds,
                    "{at}: {} comes from Secret {secret:?} key {key:?}, which does not exist",
                    text(&var["name"])
                );
            }
        }
    }
}

#[test]
fn autoscalers_services_and_budgets_point_at_deployments() {
    let objects = objects();
    for hpa in of_kind(&objects, "HorizontalPodAutoscaler") {
        assert_eq!(
            hpa.doc["apiVersion"].as_str(),
            Some("autoscaling/v2"),
            "{}",
            hpa.at()
        );
        let target = &hpa.doc["spec"]["scaleTargetRef"];
        let deployment = find(&objects, "Deployment", text(&target["name"]))
            .filter(|_| text(&target["kind"]) == "Deployment")
            .unwrap_or_else(|| panic!("{}: scaleTargetRef names no Deployment here", hpa.at()));
        let scales_on_cpu = items(&hpa.doc["spec"]["metrics"])
            .iter()
            .any(|metric| text(&metric["resource"]["name"]) == "cpu");
        assert!(scales_on_cpu, "{}: no CPU target", hpa.at());
        // kubectl apply would reset the autoscaler's count to a fixed one each time.
        assert!(
            !present(&deployment.doc["spec"]["replicas"]),
            "{}: sets replicas, but {} owns the count",
            deployment.at(),
            hpa.at()
        );
    }

    for service in of_kind(&objects, "Service") {
        let selector = labels(&service.doc["spec"]["selector"]);
        let picked: Vec<&Object> = of_kind(&objects, "Deployment")
            .filter(|deployment| selects(&selector, &deployment.pod_labels()))
            .collect();
        assert!(
            picked.len() == 1 && picked[0].name() == service.name(),
            "{}: selector {selector:?} must pick the pods of Deployment {:?} alone",
            service.at(),
            service.name()
        );
        let ports: Vec<(String, i64)> = picked[0]
            .containers()
            .iter()
            .flat_map(container_ports)
            .collect();
        for port in items(&service.doc["spec"]["ports"]) {
            assert!(
                names_port(&port["targetPort"], &ports),
                "{}: targetPort {:?} is none of the pods' ports {ports:?}",
                service.at(),
                port["targetPort"]
            );
        }
    }

    for budget in of_kind(&objects, "PodDisruptionBudget") {
        let selector = labels(&budget.doc["spec"]["selector"]["matchLabels"]);
        assert!(
            find(&objects, "Deployment", budget.name())
                .is_some_and(|deployment| selects(&selector, &deployment.pod_labels())),
            "{}: selector {selector:?} must pick the pods of Deployment {:?}",
            budget.at(),
            budget.name()
        );
    }
}

#[test]
fn ingress_sends_live_sockets_to_realtime_and_the_rest_to_gateway() {
    let objects = objects();
    let ingress = find(&objects, "Ingress", INGRESS).expect("deploy/k8s has no Ingress \"onsale\"");
    let annotations = &ingress.doc["metadata"]["annotations"];
    for (annotation, value) in [
        // The live path is a regular expression, which ingress-nginx ignores without it.
        ("nginx.ingress.kubernetes.io/use-regex", "true"),
        // A waiting fan's socket is quiet for long stretches.
        ("nginx.ingress.kubernetes.io/proxy-read-timeout", "3600"),
        ("nginx.ingress.kubernetes.io/proxy-send-timeout", "3600"),
    ] {
        assert_eq!(
            annotations[annotation].as_str(),
            Some(value),
            "{}: annotation {annotation}",
            ingress.at()
        );
    }

    let routes: Vec<&Yaml> = items(&ingress.doc["spec"]["rules"])
        .iter()
        .flat_map(|rule| items(&rule["http"]["paths"]))
        .collect();
    for route in &routes {
        let path = text(&route["path"]);
        let live = path.starts_with("/v1/events/") && path.contains("/live");
        let wanted = if live { "realtime" } else { "gateway" };
        let backend = &route["backend"]["service"];
        assert_eq!(
            text(&backend["name"]),
            wanted,
            "{}: path {path:?} must go to {wanted}",
            ingress.at()
        );
        if live {
            assert_eq!(
                text(&route["pathType"]),
                "ImplementationSpecific",
                "{}: path {path:?} is a regular expression",
                ingress.at()
            );
        }
        let service = find(&objects, "Service", wanted)
            .unwrap_or_else(|| panic!("{}: no Service {wanted:?}", ingress.at()));
        let port_known = items(&service.doc["spec"]["ports"]).iter().any(|port| {
            backend["port"]["number"].as_i64() == port["port"].as_i64()
                || (present(&backend["port"]["name"]) && backend["port"]["name"] == port["name"])
        });
        assert!(
            port_known,
            "{}: path {path:?} goes to a port Service {wanted:?} does not have",
            ingress.at()
        );
    }
    let to_realtime = routes
        .iter()
        .any(|route| text(&route["backend"]["service"]["name"]) == "realtime");
    assert!(
        to_realtime && routes.iter().any(|route| text(&route["path"]) == "/"),
        "{}: needs a live path to realtime and \"/\" to gateway",
        ingress.at()
    );

    // Behind the Ingress every peer is the controller: unless it is trusted, every
    // fan shares its rate-limit bucket.
    let config = find(&objects, "ConfigMap", CONFIG_MAP).expect("deploy/k8s has no ConfigMap");
    assert!(
        !text(&config.doc["data"][TRUSTED_PROXIES]).trim().is_empty(),
        "{}: {TRUSTED_PROXIES} must name the ingress controller's network",
        config.at()
    );
}

#[test]
fn compose_runs_every_service_with_health_checks() {
    let compose = compose();
    let services = compose_services(&compose);
    assert!(!services.is_empty(), "compose.yaml: no services");
    let names: BTreeSet<&str> = services.iter().map(|(name, _)| *name).collect();
    for wanted in SERVICES {
        assert!(
            services
                .iter()
                .any(|(_, service)| compose_command(service) == Some(wanted)),
            "compose.yaml: no service runs {wanted}"
        );
    }
    for (name, service) in &services {
        assert!(
            text(&service["network_mode"]) != "host",
            "compose.yaml: service {name:?} is on the host network"
        );
        if compose_command(service).is_some_and(|binary| SERVICES.contains(&binary)) {
            let test: Vec<&str> = items(&service["healthcheck"]["test"])
                .iter()
                .filter_map(Yaml::as_str)
                .collect();
            assert!(
                test.iter().any(|word| word.contains("/readyz")),
                "compose.yaml: service {name:?} has no health check on /readyz"
            );
        }
        for (dependency, condition) in compose_dependencies(service) {
            assert!(
                names.contains(dependency),
                "compose.yaml: service {name:?} depends on {dependency:?}, which does not exist"
            );
            let checked = services
                .iter()
                .any(|(other, s)| *other == dependency && present(&s["healthcheck"]));
            assert!(
                condition != "service_healthy" || checked,
                "compose.yaml: service {name:?} waits for {dependency:?} to be healthy, which has no health check"
            );
        }
    }
}

/// Anyone running the compose file unchanged must not get a farm whose admin token,
/// payment webhooks or caught mail a stranger can use: the secrets have no default
/// (compose refuses to start without them), no secret-like setting anywhere in the
/// file has one, and every published port listens on 127.0.0.1 unless the user says
/// otherwise.
#[test]
fn compose_ships_no_credential_and_publishes_on_loopback_only() {
    let compose = compose();
    let env = &compose["x-onsale-env"];
    for var in [
        "ONSALE_AUTH__JWT_SECRET",
        "ONSALE_AUTH__IDEMPOTENCY_SECRET",
        "ONSALE_PAYMENTS__WEBHOOK_SECRET",
        "ONSALE_BOOTSTRAP_ADMIN",
    ] {
        let value = text(&env[var]);
        assert!(
            value.starts_with(&format!("${{{var}:?")),
            "compose.yaml: {var} is {value:?}: compose must refuse to start without it"
        );
    }
    let raw = read(&compose_path());
    for (number, line) in raw.lines().enumerate() {
        let secret_like = ["SECRET", "ADMIN", "TOKEN", "_KEY"]
            .iter()
            .any(|word| line.contains(word));
        assert!(
            !(secret_like && line.contains(":-")),
            "compose.yaml:{}: a secret with a default: {line}",
            number + 1
        );
    }
    let mut published = 0;
    for (name, service) in compose_services(&compose) {
        for port in items(&service["ports"]) {
            published += 1;
            assert!(
                text(port).starts_with("${ONSALE_BIND:-127.0.0.1}:"),
                "compose.yaml: {name} publishes {:?} on every interface",
                text(port)
            );
        }
    }
    assert!(published >= 2, "the site and the caught mail are published");
}

#[test]
fn haproxy_balances_both_gateways_and_is_trusted_by_them() {
    let path = deploy_dir().join("haproxy/compose.cfg");
    let config = read(&path);
    let lines: Vec<&str> = config
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .collect();
    // Without it an upgraded WebSocket is cut after the client/server timeout.
    assert!(
        lines.iter().any(|line| line.starts_with("timeout tunnel")),
        "{}: no `timeout tunnel`, so live sockets are cut",
        path.display()
    );
    let compose = compose();
    let services = compose_services(&compose);
    // The host of each `server` and `server-template` line.
    let hosts: Vec<&str> = lines
        .iter()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let address = match words.first() {
                Some(&"server") => words.get(2).copied(),
                Some(&"server-template") => words.get(3).copied(),
                _ => None,
            }?;
            address.split(':').next()
        })
        .collect();
    for host in &hosts {
        assert!(
            services.iter().any(|(name, _)| name == host),
            "{}: backend server {host:?} is no compose service",
            path.display()
        );
    }
    let gateways: Vec<(&str, &Yaml)> = services
        .iter()
        .filter(|(_, service)| compose_command(service) == Some("gateway"))
        .copied()
        .collect();
    assert!(
        gateways.len() >= 2,
        "compose.yaml: wants two gateway services behind haproxy, has {}",
        gateways.len()
    );
    for (name, _) in &gateways {
        assert!(
            hosts.contains(name),
            "{}: no server line for gateway {name:?}",
            path.display()
        );
    }

    let (_, haproxy) = services
        .iter()
        .find(|(_, service)| text(&service["image"]).starts_with("haproxy"))
        .expect("compose.yaml: no haproxy service");
    let address = text(&haproxy["networks"]["default"]["ipv4_address"]);
    for (name, gateway) in &gateways {
        let trusted = text(&gateway["environment"][TRUSTED_PROXIES]);
        assert!(
            trusted.split(',').any(|cidr| ipv4_in(address, cidr)),
            "compose.yaml: service {name:?} does not trust haproxy's address {address:?} \
             ({TRUSTED_PROXIES} {trusted:?}), so all fans share one rate-limit bucket"
        );
    }
}

#[test]
fn every_setting_the_manifests_set_is_read_by_the_code() {
    let code = code();
    let objects = objects();
    let compose = compose();
    let set = settings_set(&objects, &compose);
    assert!(!set.is_empty(), "the manifests set no ONSALE_ variable");
    let unknown: Vec<String> = set
        .iter()
        .filter(|(_, var)| !is_read(var, &code))
        .map(|(at, var)| format!("{at}: {var}"))
        .collect();
    assert!(
        unknown.is_empty(),
        "settings no service reads (misspelt, `_` for `__`, or gone from the code):\n{}",
        unknown.join("\n")
    );
}

#[test]
fn the_checks_above_read_settings_as_the_config_layer_does() {
    let fields = "#[derive(Deserialize)]\npub limits: LimitSettings,\npub per_ip_burst: u32,\n";
    let code = Code {
        all: format!("{fields}pub redis_url: String,\nenv::var(\"ONSALE_LOG_FORMAT\")"),
        deserialized: fields.to_owned(),
    };
    assert!(is_read("ONSALE_LIMITS__PER_IP_BURST", &code));
    assert!(is_read("ONSALE_LOG_FORMAT", &code));
    assert!(!is_read("ONSALE_LIMITS_PER_IP_BURST", &code));
    assert!(!is_read("ONSALE_REDIS_URL", &code));
    assert!(!is_read("ONSALE_LOG", &code));
    assert!(!is_read("ONSALE_LIMITS__", &code));
    assert!(ipv4_in("172.30.89.10", "172.30.89.10/32"));
    assert!(ipv4_in("10.244.3.7", "10.244.0.0/16"));
    assert!(ipv4_in("10.1.2.3", " 10.1.2.3"));
    assert!(!ipv4_in("10.245.0.1", "10.244.0.0/16"));
    assert!(!ipv4_in("10.0.0.1", "10.0.0.0/33"));
}

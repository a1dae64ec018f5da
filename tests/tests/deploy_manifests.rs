//! Keeps `docker/` honest without Docker: the compose file, the Kubernetes manifests, the
//! Dockerfile and the IAM policy are checked against what the code actually does — the
//! variables the binaries read (`buyonce_shared::config::vars::ALL`), the `[[bin]]` targets the
//! workspace builds, the worker's shutdown grace and health endpoints, and the AWS operations
//! the executors call.
//!
//! Each test gathers every problem it finds and fails once, listing them all.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use buyonce_shared::config::{vars, VarSpec};
use buyonce_shared::duration::parse_duration;
use serde::Deserialize;
use serde_norway::Value;

const PRODUCER: &str = "buyonce-producer";
const WORKER: &str = "buyonce-worker";
const REAPER: &str = "buyonce-reaper";
const FAKECLOUD: &str = "buyonce-fakecloud";

/// Variables compose sets to something other than the README default, and why. Any other
/// variable compose lists must carry its documented default.
const COMPOSE_OVERRIDES: &[(&str, &str)] = &[
    (
        "BUYONCE_LISTEN",
        "containers listen on all interfaces (ports, probes, scraping)",
    ),
    ("AWS_ENDPOINT_URL", "AWS calls go to fakecloud"),
    (
        "BUYONCE_AWS_ROLE_NAME",
        "fakecloud emulates several accounts through AssumeRole",
    ),
    (
        "BUYONCE_AZURE_CREDENTIAL",
        "Azure stays off: `emulator` needs a loopback URL, the default needs real Azure variables",
    ),
];

// ---------------------------------------------------------------------------------------------
// The workspace as the manifests must see it.

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}

fn docker() -> PathBuf {
    repo().join("docker")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every quoted string in `text` (enough for the `members = [...]` and `name = "..."` lines).
fn quoted(text: &str) -> Vec<String> {
    text.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The workspace's binaries: name → file holding `main`, from each member's `[[bin]]` sections
/// plus Cargo's auto-discovered `src/main.rs` and `src/bin/*.rs`. A line scanner rather than a
/// TOML parser: the manifests use only plain `key = "value"` lines for these keys.
fn workspace_bins() -> BTreeMap<String, PathBuf> {
    let root = read(&repo().join("Cargo.toml"));
    let members_start = root.find("members").expect("[workspace] members");
    let members_text = &root[members_start..];
    let members = quoted(&members_text[..members_text.find(']').expect("members = [...]")]);
    let mut bins = BTreeMap::new();
    for member in members {
        let dir = repo().join(member);
        let manifest = read(&dir.join("Cargo.toml"));
        let (mut section, mut package, mut autobins) = (String::new(), String::new(), true);
        let mut declared: Vec<(String, Option<String>)> = Vec::new();
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line.to_owned();
                if section == "[[bin]]" {
                    declared.push((String::new(), None));
                }
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            let string = || quoted(value).into_iter().next().unwrap_or_default();
            match (section.as_str(), key) {
                ("[package]", "name") => package = string(),
                ("[package]", "autobins") => autobins = value != "false",
                ("[[bin]]", "name") => declared.last_mut().expect("in [[bin]]").0 = string(),
                ("[[bin]]", "path") => declared.last_mut().expect("in [[bin]]").1 = Some(string()),
                _ => {}
            }
        }
        if autobins {
            if dir.join("src/main.rs").exists() {
                bins.insert(package.clone(), dir.join("src/main.rs"));
            }
            if let Ok(entries) = fs::read_dir(dir.join("src/bin")) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.extension().is_some_and(|e| e == "rs") {
                        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
                        bins.insert(stem, path);
                    } else if path.join("main.rs").exists() {
                        let name = path.file_name().unwrap().to_string_lossy().into_owned();
                        bins.insert(name, path.join("main.rs"));
                    }
                }
            }
        }
        for (name, path) in declared {
            let main = match path {
                Some(p) => dir.join(p),
                None => dir.join("src/bin").join(format!("{name}.rs")),
            };
            bins.insert(name, main);
        }
    }
    bins
}

fn spec(name: &str) -> Option<&'static VarSpec> {
    vars::ALL.iter().find(|s| s.name == name)
}

/// The secret a `<NAME>_FILE` variable stands for.
fn secret_of_file_var(name: &str) -> Option<&'static VarSpec> {
    spec(name.strip_suffix("_FILE")?).filter(|s| s.secret)
}

/// Variables `binary` reads: from `vars::ALL` for buyonce's own binaries, from the clap
/// `env = "..."` attributes of its source for the others (fakecloud).
fn variables_read_by(binary: &str, bins: &BTreeMap<String, PathBuf>) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = vars::ALL
        .iter()
        .filter(|s| s.read_by.contains(&binary))
        .flat_map(|s| {
            let file = s.secret.then(|| format!("{}_FILE", s.name));
            std::iter::once(s.name.to_owned()).chain(file)
        })
        .collect();
    if names.is_empty() {
        let source = read(&bins[binary]);
        names = source
            .split("env = \"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_owned)
            .collect();
    }
    names
}

fn parse_go(what: &str, value: &str) -> Duration {
    parse_duration(value).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn default_shutdown_grace() -> Duration {
    parse_go(
        "default",
        vars::SHUTDOWN_GRACE.default.expect("has a default"),
    )
}

/// Where a binary listens when BUYONCE_LISTEN is unset.
fn default_listen(binary: &str) -> &'static str {
    match binary {
        PRODUCER => buyonce_producer::config::DEFAULT_LISTEN,
        WORKER => buyonce_worker::config::DEFAULT_LISTEN,
        REAPER => buyonce_worker::reaper::DEFAULT_LISTEN,
        other => panic!("no listen default known for {other}"),
    }
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} has no port"))
}

// ---------------------------------------------------------------------------------------------
// YAML.

fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            let mut value = Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
            // Compose files share settings through `<<: *anchor`.
            value
                .apply_merge()
                .unwrap_or_else(|e| panic!("{}: merge keys: {e}", path.display()));
            value
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn string_list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        Value::Sequence(items) => items.iter().filter_map(scalar).collect(),
        _ => Vec::new(),
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, key| v.get(*key))?.as_str()
}

fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    static NULL: Value = Value::Null;
    path.iter()
        .try_fold(v, |v, key| v.get(*key))
        .unwrap_or(&NULL)
}

fn items(v: &Value) -> &[Value] {
    v.as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

// ---------------------------------------------------------------------------------------------
// One process a manifest starts, in terms both compose and Kubernetes can be reduced to.

struct Launch {
    /// Where it is defined, for messages.
    origin: String,
    binary: String,
    args: Vec<String>,
    /// `None`: set from a Secret or another reference, value not known here.
    env: BTreeMap<String, Option<String>>,
}

impl Launch {
    fn value(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .and_then(|v| v.as_deref())
            .filter(|v| !v.trim().is_empty())
    }

    fn is_set(&self, name: &str) -> bool {
        match self.env.get(name) {
            Some(None) => true,
            Some(Some(v)) => !v.trim().is_empty(),
            None => false,
        }
    }

    fn listen(&self) -> String {
        self.value(vars::LISTEN.name)
            .unwrap_or_else(|| default_listen(&self.binary))
            .to_owned()
    }

    fn shutdown_grace(&self) -> Duration {
        let flag = self
            .args
            .iter()
            .position(|a| a == "--shutdown-grace")
            .and_then(|i| self.args.get(i + 1));
        match flag
            .map(String::as_str)
            .or_else(|| self.value(vars::SHUTDOWN_GRACE.name))
        {
            Some(v) => parse_go(&self.origin, v),
            None => default_shutdown_grace(),
        }
    }
}

/// Checks shared by every launch of a workspace binary, from compose or Kubernetes.
fn check_launch(launch: &Launch, bins: &BTreeMap<String, PathBuf>, problems: &mut Vec<String>) {
    let origin = &launch.origin;
    let Some(main) = bins.get(&launch.binary) else {
        problems.push(format!(
            "{origin}: runs {:?}, which is no [[bin]] target of the workspace",
            launch.binary
        ));
        return;
    };
    let known = variables_read_by(&launch.binary, bins);
    for name in launch.env.keys() {
        if !known.contains(name) {
            let hint = match spec(name).or_else(|| secret_of_file_var(name)) {
                Some(s) => format!("read only by {}", s.read_by.join(", ")),
                None if name.starts_with("FAKECLOUD_") => {
                    "no clap `env` attribute in its source".to_owned()
                }
                None => "not declared in shared/src/config/catalog.rs vars::ALL".to_owned(),
            };
            problems.push(format!(
                "{origin}: sets {name}, which {} does not read ({hint})",
                launch.binary
            ));
        }
    }
    for s in vars::ALL.iter().filter(|s| s.secret) {
        let file = format!("{}_FILE", s.name);
        if launch.is_set(s.name) && launch.is_set(&file) {
            problems.push(format!("{origin}: sets both {} and {file}", s.name));
        }
    }
    // Flags must be ones the binary's clap definition has (`--dry-run` → field `dry_run`).
    let source = read(main);
    for flag in launch.args.iter().filter_map(|a| a.strip_prefix("--")) {
        let field = flag.split('=').next().unwrap_or_default().replace('-', "_");
        if !source.contains(&format!("{field}:")) {
            problems.push(format!(
                "{origin}: passes --{flag}, which {} does not define",
                launch.binary
            ));
        }
    }
    if launch.binary == PRODUCER {
        // The first argument is a subcommand: a variant of the clap `Command` enum.
        let sub = launch.args.first().map(String::as_str).unwrap_or_default();
        let variant: String = sub
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next().map_or(String::new(), |f| {
                    f.to_ascii_uppercase().to_string() + c.as_str()
                })
            })
            .collect();
        if variant.is_empty()
            || !(source.contains(&format!("    {variant} {{"))
                || source.contains(&format!("    {variant},")))
        {
            problems.push(format!("{origin}: {PRODUCER} has no subcommand {sub:?}"));
        }
    }
    if !matches!(launch.binary.as_str(), PRODUCER | WORKER | REAPER) {
        return;
    }
    // The defaults point at 127.0.0.1, which inside a container is the container itself.
    for required in [&vars::AMQP_URL, &vars::DATABASE_URL] {
        let file = format!("{}_FILE", required.name);
        if !launch.is_set(required.name) && !launch.is_set(&file) {
            problems.push(format!(
                "{origin}: sets neither {} nor {file}",
                required.name
            ));
        }
    }
    // Probes and scrapers come from outside the container's loopback.
    let listen = launch.listen();
    let host = &listen[..listen.rfind(':').unwrap_or(0)];
    if !matches!(host, "0.0.0.0" | "[::]") {
        problems.push(format!(
            "{origin}: listens on {listen}; in a container it must be 0.0.0.0:<port>"
        ));
    }
    if launch.binary == PRODUCER
        && launch.args.first().map(String::as_str) == Some("serve")
        && !matches!(host, "127.0.0.1" | "localhost" | "[::1]")
        && !launch.is_set(vars::API_TOKENS.name)
        && !launch.is_set("BUYONCE_API_TOKENS_FILE")
    {
        problems.push(format!(
            "{origin}: serve on {listen} without BUYONCE_API_TOKENS(_FILE) refuses to start"
        ));
    }
}

fn assert_none(what: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{what}:\n  - {}",
        problems.join("\n  - ")
    );
}

// ---------------------------------------------------------------------------------------------
// docker/compose.yaml

struct Compose {
    doc: Value,
}

impl Compose {
    fn load() -> Self {
        let mut docs = yaml_documents(&docker().join("compose.yaml"));
        assert_eq!(docs.len(), 1, "compose.yaml is one YAML document");
        Self {
            doc: docs.remove(0),
        }
    }

    fn services(&self) -> Vec<(String, &Value)> {
        at(&self.doc, &["services"])
            .as_mapping()
            .expect("compose.yaml has services")
            .iter()
            .map(|(k, v)| (k.as_str().expect("service name").to_owned(), v))
            .collect()
    }

    fn env(service: &Value) -> BTreeMap<String, Option<String>> {
        match at(service, &["environment"]) {
            Value::Mapping(m) => m
                .iter()
                .map(|(k, v)| (k.as_str().expect("variable name").to_owned(), scalar(v)))
                .collect(),
            Value::Sequence(list) => list
                .iter()
                .filter_map(Value::as_str)
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (kv.to_owned(), None),
                })
                .collect(),
            _ => BTreeMap::new(),
        }
    }

    /// Services built from this repository, which must name their binary in `entrypoint`.
    fn launches(&self) -> Vec<(Launch, &Value)> {
        self.services()
            .into_iter()
            .filter(|(_, s)| s.get("build").is_some())
            .map(|(name, s)| {
                let mut command = string_list(at(s, &["entrypoint"]));
                command.extend(string_list(at(s, &["command"])));
                let binary = if command.is_empty() {
                    String::new()
                } else {
                    command.remove(0)
                };
                let launch = Launch {
                    origin: format!("compose service {name}"),
                    binary,
                    args: command,
                    env: Self::env(s),
                };
                (launch, s)
            })
            .collect()
    }
}

#[test]
fn compose_services_set_only_variables_their_binary_reads_and_every_one_it_needs() {
    let bins = workspace_bins();
    let compose = Compose::load();
    let mut problems = Vec::new();
    let launches = compose.launches();
    assert!(
        launches.len() >= 4,
        "compose builds fakecloud, producer, worker and reaper"
    );
    for (launch, _) in &launches {
        if launch.binary.is_empty() {
            problems.push(format!(
                "{}: set `entrypoint` to the binary it runs",
                launch.origin
            ));
            continue;
        }
        check_launch(launch, &bins, &mut problems);
    }
    let running: BTreeSet<&str> = launches.iter().map(|(l, _)| l.binary.as_str()).collect();
    for binary in [PRODUCER, WORKER, REAPER, FAKECLOUD] {
        if !running.contains(binary) {
            problems.push(format!("no compose service runs {binary}"));
        }
    }
    assert_none("compose.yaml environment", problems);
}

#[test]
fn compose_lists_every_variable_with_the_documented_default() {
    let compose = Compose::load();
    let mut problems = Vec::new();
    for (launch, _) in compose.launches() {
        if !matches!(launch.binary.as_str(), PRODUCER | WORKER | REAPER) {
            continue;
        }
        let origin = &launch.origin;
        for s in vars::ALL
            .iter()
            .filter(|s| s.read_by.contains(&launch.binary.as_str()))
        {
            let file = format!("{}_FILE", s.name);
            let (name, value) = match (launch.env.get(s.name), launch.env.get(&file)) {
                (Some(v), _) => (s.name.to_owned(), v.clone().unwrap_or_default()),
                (None, Some(_)) if s.secret => continue, // from a secret file: checked elsewhere
                (None, _) => {
                    problems.push(format!(
                        "{origin}: does not list {} (default {:?})",
                        s.name,
                        s.default.unwrap_or("")
                    ));
                    continue;
                }
            };
            if COMPOSE_OVERRIDES.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let default = s.default.unwrap_or("");
            if value != default {
                problems.push(format!(
                    "{origin}: {name}={value:?}, but the documented default is {default:?} \
                     (change it, or add it to COMPOSE_OVERRIDES with the reason)"
                ));
            }
        }
    }
    assert_none("compose.yaml defaults", problems);
}

#[test]
fn compose_secrets_are_files_mounted_into_the_services_that_read_them() {
    let compose = Compose::load();
    let declared = at(&compose.doc, &["secrets"]);
    let mut problems = Vec::new();
    for (name, service) in compose.services() {
        let mounted: BTreeSet<String> = items(at(service, &["secrets"]))
            .iter()
            .filter_map(|s| s.as_str().or_else(|| str_at(s, &["source"])))
            .map(str::to_owned)
            .collect();
        for (var, value) in Compose::env(service) {
            let Some(path) = value.filter(|v| !v.is_empty()) else {
                continue;
            };
            let secret_var = secret_of_file_var(&var).is_some();
            match path.strip_prefix("/run/secrets/") {
                Some(secret) if !mounted.contains(secret) => problems.push(format!(
                    "service {name}: {var}={path} but the service does not mount secret {secret:?}"
                )),
                Some(secret) => match str_at(declared, &[secret, "file"]) {
                    Some(file) if docker().join(file).is_file() => {}
                    Some(file) => problems.push(format!(
                        "secret {secret}: file {file} does not exist next to compose.yaml"
                    )),
                    None => problems.push(format!("secret {secret} is not declared with a file")),
                },
                None if secret_var => problems.push(format!(
                    "service {name}: {var}={path} is not a compose secret (/run/secrets/<name>)"
                )),
                None => {}
            }
        }
        for s in vars::ALL.iter().filter(|s| s.secret) {
            let inline = Compose::env(service).get(s.name).cloned().flatten();
            if inline.is_some_and(|v| !v.is_empty()) {
                problems.push(format!(
                    "service {name}: {} is inline; use {}_FILE and a secret",
                    s.name, s.name
                ));
            }
        }
    }
    assert_none("compose.yaml secrets", problems);
}

#[test]
fn compose_workers_scale_without_collisions_and_outlive_their_shutdown_grace() {
    let compose = Compose::load();
    let mut problems = Vec::new();
    let workers: Vec<_> = compose
        .launches()
        .into_iter()
        .filter(|(l, _)| l.binary == WORKER)
        .collect();
    assert!(!workers.is_empty(), "compose runs workers");
    for (launch, service) in workers {
        let origin = &launch.origin;
        if at(service, &["deploy", "replicas"]).as_u64() != Some(3) {
            problems.push(format!("{origin}: deploy.replicas should be 3"));
        }
        for key in ["container_name", "ports"] {
            if service.get(key).is_some() {
                problems.push(format!(
                    "{origin}: `{key}` breaks `docker compose up --scale worker=N`"
                ));
            }
        }
        let grace = launch.shutdown_grace();
        match str_at(service, &["stop_grace_period"]) {
            Some(stop) if parse_go(origin, stop) > grace => {}
            Some(stop) => problems.push(format!(
                "{origin}: stop_grace_period {stop} must exceed the shutdown grace {grace:?}"
            )),
            None => problems.push(format!(
                "{origin}: no stop_grace_period; Docker kills after 10s, the worker drains for {grace:?}"
            )),
        }
    }
    assert_none("compose.yaml workers", problems);
}

#[test]
fn compose_services_are_health_checked_on_their_listen_port_and_start_in_order() {
    let compose = Compose::load();
    let services = compose.services();
    let checked: BTreeSet<&str> = services
        .iter()
        .filter(|(_, s)| at(s, &["healthcheck", "test"]).as_sequence().is_some())
        .map(|(n, _)| n.as_str())
        .collect();
    let mut problems = Vec::new();
    for (name, service) in &services {
        if !checked.contains(name.as_str()) {
            problems.push(format!("service {name}: no healthcheck"));
        }
        match at(service, &["depends_on"]) {
            Value::Null => {}
            Value::Mapping(deps) => {
                for (dep, how) in deps {
                    let dep = dep.as_str().unwrap_or_default();
                    if str_at(how, &["condition"]) != Some("service_healthy") {
                        problems.push(format!(
                            "service {name}: depends_on {dep} without condition: service_healthy"
                        ));
                    }
                    if !checked.contains(dep) {
                        problems.push(format!(
                            "service {name}: depends on {dep}, which has no healthcheck"
                        ));
                    }
                }
            }
            _ => problems.push(format!(
                "service {name}: depends_on must be a mapping with conditions"
            )),
        }
    }
    for (launch, service) in compose.launches() {
        let test = string_list(at(service, &["healthcheck", "test"])).join(" ");
        let expected: Vec<String> = match launch.binary.as_str() {
            PRODUCER | WORKER | REAPER => {
                let port = port_of(&launch.listen());
                ["/readyz", "/healthz"]
                    .iter()
                    .map(|p| format!("http://127.0.0.1:{port}{p}"))
                    .collect()
            }
            FAKECLOUD => match launch.value("FAKECLOUD_LISTEN") {
                Some(l) => vec![format!(
                    "http://127.0.0.1:{}/_fakecloud/healthz",
                    port_of(l)
                )],
                None => {
                    problems.push(format!("{}: set FAKECLOUD_LISTEN", launch.origin));
                    continue;
                }
            },
            _ => continue,
        };
        if !expected.iter().any(|url| test.contains(url.as_str())) {
            problems.push(format!(
                "{}: healthcheck `{test}` hits none of {expected:?}",
                launch.origin
            ));
        }
    }
    assert_none("compose.yaml health and start order", problems);
}

#[test]
fn compose_builds_dockerfile_targets_and_enables_the_rabbitmq_plugins() {
    let compose = Compose::load();
    let stages = Dockerfile::load().stages();
    let mut problems = Vec::new();
    for (name, service) in compose.services() {
        if let Some(target) = str_at(service, &["build", "target"]) {
            if !stages.contains(target) {
                problems.push(format!(
                    "service {name}: build target {target} is not a Dockerfile stage"
                ));
            }
            if str_at(service, &["build", "dockerfile"]) != Some("docker/Dockerfile") {
                problems.push(format!("service {name}: build docker/Dockerfile"));
            }
        }
    }
    // `${BUYONCE_RABBITMQ_IMAGE:-rabbitmq:…}`: what a user gets is the default.
    let image_of = |s: &Value| {
        let image = str_at(s, &["image"]).unwrap_or_default();
        match image.strip_prefix("${").and_then(|i| i.strip_suffix('}')) {
            Some(var) => var
                .split_once(":-")
                .map_or("", |(_, default)| default)
                .to_owned(),
            None => image.to_owned(),
        }
    };
    let rabbit = compose
        .services()
        .into_iter()
        .find(|(_, s)| image_of(s).starts_with("rabbitmq:"))
        .expect("a rabbitmq service");
    if !image_of(rabbit.1).contains("management") {
        problems.push("rabbitmq: use a -management image".into());
    }
    for (name, service) in compose.services() {
        if str_at(service, &["build", "target"]).is_some()
            && at(service, &["read_only"]).as_bool() != Some(true)
        {
            problems.push(format!(
                "service {name}: read_only: true (the image writes nothing)"
            ));
        }
    }
    let plugins = items(at(rabbit.1, &["volumes"]))
        .iter()
        .filter_map(Value::as_str)
        .find_map(|v| {
            let mut parts = v.split(':');
            let (host, target) = (parts.next()?, parts.next()?);
            (target == "/etc/rabbitmq/enabled_plugins").then(|| read(&docker().join(host)))
        });
    match plugins {
        Some(text) => {
            for plugin in ["rabbitmq_management", "rabbitmq_prometheus"] {
                if !text.contains(plugin) {
                    problems.push(format!("rabbitmq: enabled_plugins lacks {plugin}"));
                }
            }
        }
        None => problems.push("rabbitmq: mount an enabled_plugins file".into()),
    }
    assert_none("compose.yaml build and broker", problems);
}

// ---------------------------------------------------------------------------------------------
// docker/k8s/*.yaml

struct Kube {
    docs: Vec<(String, Value)>,
}

struct PodLaunch<'a> {
    launch: Launch,
    pod: &'a Value,
    container: &'a Value,
    workload: &'a Value,
}

impl Kube {
    fn load() -> Self {
        // Every manifest under docker/k8s (keda/ included), and the Secret template, which is
        // named `*.yaml.example` so that `kubectl apply -f docker/k8s/` never applies it.
        let root = docker().join("k8s");
        let mut files = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for path in fs::read_dir(dir).unwrap().flatten().map(|e| e.path()) {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if path.is_dir() {
                    dirs.push(path);
                } else if [".yaml", ".yml", ".yaml.example"]
                    .iter()
                    .any(|ext| name.ends_with(ext))
                {
                    files.push(path);
                }
            }
        }
        files.sort();
        assert!(!files.is_empty(), "docker/k8s has manifests");
        let docs = files
            .iter()
            .flat_map(|f| {
                let file = f
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                yaml_documents(f)
                    .into_iter()
                    .map(move |d| (file.clone(), d))
            })
            .collect();
        Self { docs }
    }

    fn of_kind(&self, kind: &str) -> impl Iterator<Item = &(String, Value)> {
        let kind = kind.to_owned();
        self.docs
            .iter()
            .filter(move |(_, d)| str_at(d, &["kind"]) == Some(kind.as_str()))
    }

    fn named(&self, kind: &str, name: &str) -> Option<&Value> {
        self.of_kind(kind)
            .map(|(_, d)| d)
            .find(|d| str_at(d, &["metadata", "name"]) == Some(name))
    }

    /// Keys of a Secret template (stringData and data).
    fn secret_keys(&self, name: &str) -> Option<BTreeSet<String>> {
        let secret = self.named("Secret", name)?;
        Some(
            ["stringData", "data"]
                .into_iter()
                .filter_map(|k| at(secret, &[k]).as_mapping())
                .flat_map(|m| m.keys().filter_map(Value::as_str).map(str::to_owned))
                .collect(),
        )
    }

    fn pod_spec(workload: &Value) -> Option<&Value> {
        match str_at(workload, &["kind"])? {
            "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => {
                Some(at(workload, &["spec", "template", "spec"]))
            }
            "CronJob" => Some(at(
                workload,
                &["spec", "jobTemplate", "spec", "template", "spec"],
            )),
            _ => None,
        }
    }

    fn launches(&self, problems: &mut Vec<String>) -> Vec<PodLaunch<'_>> {
        let mut out = Vec::new();
        for (file, workload) in &self.docs {
            let Some(pod) = Self::pod_spec(workload) else {
                continue;
            };
            let workload_name = str_at(workload, &["metadata", "name"]).unwrap_or("?");
            for container in items(at(pod, &["containers"])) {
                let origin = format!(
                    "{file} {} {workload_name} container {}",
                    str_at(workload, &["kind"]).unwrap_or("?"),
                    str_at(container, &["name"]).unwrap_or("?")
                );
                let mut command = string_list(at(container, &["command"]));
                command.extend(string_list(at(container, &["args"])));
                if command.is_empty() {
                    problems.push(format!("{origin}: set `command` to the binary it runs"));
                    continue;
                }
                let binary = command.remove(0);
                let mut env = BTreeMap::new();
                for from in items(at(container, &["envFrom"])) {
                    if let Some(name) = str_at(from, &["configMapRef", "name"]) {
                        match self.named("ConfigMap", name) {
                            Some(cm) => {
                                for (k, v) in at(cm, &["data"]).as_mapping().into_iter().flatten() {
                                    env.insert(k.as_str().unwrap_or("?").to_owned(), scalar(v));
                                }
                            }
                            None => problems.push(format!("{origin}: no ConfigMap {name}")),
                        }
                    }
                    if let Some(name) = str_at(from, &["secretRef", "name"]) {
                        for key in self.secret_keys(name).unwrap_or_default() {
                            env.insert(key, None);
                        }
                    }
                }
                for var in items(at(container, &["env"])) {
                    let name = str_at(var, &["name"]).unwrap_or("?").to_owned();
                    env.insert(name, var.get("value").and_then(scalar));
                }
                out.push(PodLaunch {
                    launch: Launch {
                        origin,
                        binary,
                        args: command,
                        env,
                    },
                    pod,
                    container,
                    workload,
                });
            }
        }
        out
    }
}

#[test]
fn k8s_containers_set_only_variables_their_binary_reads_and_the_ones_they_need() {
    let bins = workspace_bins();
    let kube = Kube::load();
    let mut problems = Vec::new();
    let launches = kube.launches(&mut problems);
    for pl in &launches {
        check_launch(&pl.launch, &bins, &mut problems);
    }
    let running: BTreeSet<&str> = launches
        .iter()
        .map(|pl| pl.launch.binary.as_str())
        .collect();
    for binary in [PRODUCER, WORKER, REAPER] {
        if !running.contains(binary) {
            problems.push(format!("no Kubernetes workload runs {binary}"));
        }
    }
    assert_none("k8s environment", problems);
}

#[test]
fn k8s_secret_files_are_mounted_from_keys_of_the_secret_template() {
    let kube = Kube::load();
    let mut problems = Vec::new();
    for pl in kube.launches(&mut problems) {
        let origin = &pl.launch.origin;
        // mount path → (secret name, file name → key)
        let mut mounts: BTreeMap<String, (String, BTreeMap<String, String>)> = BTreeMap::new();
        for mount in items(at(pl.container, &["volumeMounts"])) {
            let volume = items(at(pl.pod, &["volumes"]))
                .iter()
                .find(|v| v.get("name") == mount.get("name"));
            let Some(secret) = volume.and_then(|v| str_at(v, &["secret", "secretName"])) else {
                continue;
            };
            let Some(keys) = kube.secret_keys(secret) else {
                problems.push(format!(
                    "{origin}: mounts Secret {secret}, not in docker/k8s"
                ));
                continue;
            };
            let listed = items(at(volume.unwrap(), &["secret", "items"]));
            let files: BTreeMap<String, String> = if listed.is_empty() {
                keys.iter().map(|k| (k.clone(), k.clone())).collect()
            } else {
                listed
                    .iter()
                    .map(|i| {
                        let key = str_at(i, &["key"]).unwrap_or("?").to_owned();
                        let path = str_at(i, &["path"]).unwrap_or(&key).to_owned();
                        (path, key)
                    })
                    .collect()
            };
            for key in files.values().filter(|k| !keys.contains(*k)) {
                problems.push(format!("{origin}: Secret {secret} has no key {key}"));
            }
            if mount.get("readOnly").and_then(Value::as_bool) != Some(true) {
                problems.push(format!("{origin}: mount Secret {secret} readOnly"));
            }
            let path = str_at(mount, &["mountPath"]).unwrap_or("?");
            mounts.insert(
                path.trim_end_matches('/').to_owned(),
                (secret.to_owned(), files),
            );
        }
        for (var, value) in &pl.launch.env {
            if secret_of_file_var(var).is_none() {
                continue;
            }
            let Some(path) = value.as_deref().filter(|v| !v.is_empty()) else {
                continue;
            };
            let (dir, file) = path.rsplit_once('/').unwrap_or(("", path));
            if !mounts
                .get(dir)
                .is_some_and(|(_, files)| files.contains_key(file))
            {
                problems.push(format!(
                    "{origin}: {var}={path} is not a file of a mounted Secret"
                ));
            }
        }
        for s in vars::ALL.iter().filter(|s| s.secret) {
            if pl.launch.value(s.name).is_some() {
                problems.push(format!(
                    "{origin}: {} is inline in the pod spec; mount it and use {}_FILE",
                    s.name, s.name
                ));
            }
        }
    }
    assert_none("k8s secrets", problems);
}

#[test]
fn k8s_workers_get_more_time_to_stop_than_their_shutdown_grace() {
    let kube = Kube::load();
    let mut problems = Vec::new();
    let workers: Vec<_> = kube
        .launches(&mut problems)
        .into_iter()
        .filter(|pl| pl.launch.binary == WORKER)
        .collect();
    assert!(!workers.is_empty(), "a Kubernetes workload runs the worker");
    for pl in workers {
        let grace = pl.launch.shutdown_grace();
        // Kubernetes' default when unset.
        let termination = at(pl.pod, &["terminationGracePeriodSeconds"])
            .as_u64()
            .unwrap_or(30);
        if Duration::from_secs(termination) <= grace {
            problems.push(format!(
                "{}: terminationGracePeriodSeconds {termination} must exceed the shutdown grace {grace:?}",
                pl.launch.origin
            ));
        }
    }
    assert_none("k8s worker grace", problems);
}

#[test]
fn k8s_probes_hit_readyz_and_healthz_on_the_listen_port() {
    let kube = Kube::load();
    let mut problems = Vec::new();
    for pl in kube.launches(&mut problems) {
        if !matches!(pl.launch.binary.as_str(), PRODUCER | WORKER | REAPER) {
            continue;
        }
        let origin = &pl.launch.origin;
        let listen_port = port_of(&pl.launch.listen());
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            let get = at(pl.container, &[probe, "httpGet"]);
            if str_at(get, &["path"]) != Some(path) {
                problems.push(format!("{origin}: {probe} must GET {path}"));
            }
            let port = match at(get, &["port"]) {
                Value::Number(n) => n.as_u64(),
                Value::String(name) => items(at(pl.container, &["ports"]))
                    .iter()
                    .find(|p| str_at(p, &["name"]) == Some(name.as_str()))
                    .and_then(|p| at(p, &["containerPort"]).as_u64()),
                _ => None,
            };
            if port != Some(u64::from(listen_port)) {
                problems.push(format!(
                    "{origin}: {probe} port {port:?} is not the listen port {listen_port}"
                ));
            }
        }
    }
    assert_none("k8s probes", problems);
}

#[test]
fn k8s_pods_run_as_non_root_on_a_read_only_root_without_capabilities() {
    let kube = Kube::load();
    let mut problems = Vec::new();
    for pl in kube.launches(&mut problems) {
        let origin = &pl.launch.origin;
        let pod_non_root = at(pl.pod, &["securityContext", "runAsNonRoot"]).as_bool();
        let container = at(pl.container, &["securityContext"]);
        if at(container, &["runAsNonRoot"]).as_bool().or(pod_non_root) != Some(true) {
            problems.push(format!("{origin}: runAsNonRoot: true"));
        }
        if at(container, &["readOnlyRootFilesystem"]).as_bool() != Some(true) {
            problems.push(format!("{origin}: readOnlyRootFilesystem: true"));
        }
        if at(container, &["allowPrivilegeEscalation"]).as_bool() != Some(false) {
            problems.push(format!("{origin}: allowPrivilegeEscalation: false"));
        }
        if !string_list(at(container, &["capabilities", "drop"]))
            .iter()
            .any(|c| c == "ALL")
        {
            problems.push(format!("{origin}: capabilities.drop: [ALL]"));
        }
    }
    assert_none("k8s security contexts", problems);
}

#[test]
fn k8s_objects_fit_together() {
    let kube = Kube::load();
    let mut problems = Vec::new();
    let namespace = kube
        .of_kind("Namespace")
        .find_map(|(_, d)| str_at(d, &["metadata", "name"]))
        .expect("a Namespace");
    for (file, doc) in &kube.docs {
        let kind = str_at(doc, &["kind"]).unwrap_or("?");
        if str_at(doc, &["apiVersion"]).is_none() || str_at(doc, &["metadata", "name"]).is_none() {
            problems.push(format!(
                "{file}: a {kind} without apiVersion or metadata.name"
            ));
        }
        if kind != "Namespace" && str_at(doc, &["metadata", "namespace"]) != Some(namespace) {
            problems.push(format!("{file}: {kind} is not in namespace {namespace}"));
        }
    }
    let launches = kube.launches(&mut problems);
    for (file, service) in kube.of_kind("Service") {
        let selector = at(service, &["spec", "selector"]).as_mapping();
        let pods: Vec<_> = launches
            .iter()
            .filter(|pl| {
                let labels = at(pl.workload, &["spec", "template", "metadata", "labels"]);
                selector.is_some_and(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
            })
            .collect();
        if pods.is_empty() {
            problems.push(format!("{file}: Service selects no pod template"));
        }
        for port in items(at(service, &["spec", "ports"])) {
            if let Some(target) = str_at(port, &["targetPort"]) {
                let named = pods.iter().any(|pl| {
                    items(at(pl.container, &["ports"]))
                        .iter()
                        .any(|p| str_at(p, &["name"]) == Some(target))
                });
                if !named {
                    problems.push(format!(
                        "{file}: Service targetPort {target} is no container port"
                    ));
                }
            }
        }
    }
    for (file, sa) in kube.of_kind("ServiceAccount") {
        let name = str_at(sa, &["metadata", "name"]);
        if !launches
            .iter()
            .any(|pl| str_at(pl.pod, &["serviceAccountName"]) == name)
        {
            problems.push(format!("{file}: ServiceAccount {name:?} is used by no pod"));
        }
    }
    for pl in &launches {
        if let Some(sa) = str_at(pl.pod, &["serviceAccountName"]) {
            if kube.named("ServiceAccount", sa).is_none() {
                problems.push(format!("{}: no ServiceAccount {sa}", pl.launch.origin));
            }
        }
    }
    assert_none("k8s objects", problems);
}

#[test]
fn keda_scales_the_worker_deployment_on_the_purchases_queue() {
    let kube = Kube::load();
    let mut problems = Vec::new();
    let launches = kube.launches(&mut problems);
    let scaled: Vec<_> = kube.of_kind("ScaledObject").collect();
    assert!(!scaled.is_empty(), "a KEDA ScaledObject for the workers");
    for (file, so) in scaled {
        let target = str_at(so, &["spec", "scaleTargetRef", "name"]).unwrap_or("?");
        let kind = str_at(so, &["spec", "scaleTargetRef", "kind"]).unwrap_or("Deployment");
        let Some(worker) = launches.iter().find(|pl| {
            str_at(pl.workload, &["kind"]) == Some(kind)
                && str_at(pl.workload, &["metadata", "name"]) == Some(target)
        }) else {
            problems.push(format!(
                "{file}: scales {kind} {target}, which is not in docker/k8s"
            ));
            continue;
        };
        if worker.launch.binary != WORKER {
            problems.push(format!(
                "{file}: scales {target}, which does not run the worker"
            ));
        }
        let prefix = worker
            .launch
            .value(vars::QUEUE_PREFIX.name)
            .or(vars::QUEUE_PREFIX.default)
            .unwrap_or_default();
        let queue = format!("{prefix}.purchases");
        let triggers = items(at(so, &["spec", "triggers"]));
        let rabbit: Vec<_> = triggers
            .iter()
            .filter(|t| str_at(t, &["type"]) == Some("rabbitmq"))
            .collect();
        if rabbit.is_empty() {
            problems.push(format!("{file}: no rabbitmq trigger"));
        }
        for trigger in rabbit {
            if str_at(trigger, &["metadata", "queueName"]) != Some(queue.as_str()) {
                problems.push(format!(
                    "{file}: queueName must be {queue} (BUYONCE_QUEUE_PREFIX of {target})"
                ));
            }
            if str_at(trigger, &["metadata", "mode"]) != Some("QueueLength") {
                problems.push(format!("{file}: mode QueueLength"));
            }
            let auth = str_at(trigger, &["authenticationRef", "name"]).unwrap_or("?");
            match kube.named("TriggerAuthentication", auth) {
                None => problems.push(format!("{file}: no TriggerAuthentication {auth}")),
                Some(ta) => {
                    for r in items(at(ta, &["spec", "secretTargetRef"])) {
                        let (name, key) = (
                            str_at(r, &["name"]).unwrap_or("?"),
                            str_at(r, &["key"]).unwrap_or("?"),
                        );
                        if !kube.secret_keys(name).is_some_and(|k| k.contains(key)) {
                            problems.push(format!(
                                "TriggerAuthentication {auth}: Secret {name} has no key {key}"
                            ));
                        }
                    }
                }
            }
        }
    }
    assert_none("KEDA", problems);
}

// ---------------------------------------------------------------------------------------------
// docker/Dockerfile

struct Dockerfile {
    /// Instructions with line continuations joined: (stage, instruction, rest).
    lines: Vec<(String, String, String)>,
}

impl Dockerfile {
    fn load() -> Self {
        let text = read(&docker().join("Dockerfile"));
        let mut joined = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            // Comments may also sit inside a continued instruction.
            if trimmed.starts_with('#') || (current.is_empty() && trimmed.is_empty()) {
                continue;
            }
            match trimmed.strip_suffix('\\') {
                Some(part) => {
                    current.push_str(part);
                    current.push(' ');
                }
                None => {
                    current.push_str(trimmed);
                    joined.push(std::mem::take(&mut current));
                }
            }
        }
        let mut stage = String::new();
        let lines = joined
            .into_iter()
            .map(|l| {
                let (instruction, rest) = l.split_once(' ').unwrap_or((l.as_str(), ""));
                let instruction = instruction.to_ascii_uppercase();
                if instruction == "FROM" {
                    let words: Vec<&str> = rest.split_whitespace().collect();
                    stage = match words.as_slice() {
                        [_, as_, name] if as_.eq_ignore_ascii_case("as") => (*name).to_owned(),
                        _ => String::new(),
                    };
                }
                (stage.clone(), instruction, rest.trim().to_owned())
            })
            .collect();
        Self { lines }
    }

    fn stages(&self) -> BTreeSet<String> {
        self.lines
            .iter()
            .filter(|(s, i, _)| i == "FROM" && !s.is_empty())
            .map(|(s, _, _)| s.clone())
            .collect()
    }

    fn in_stage<'a>(&'a self, stage: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.lines
            .iter()
            .filter(move |(s, _, _)| s == stage)
            .map(|(_, i, r)| (i.as_str(), r.as_str()))
    }
}

#[test]
fn dockerfile_builds_workspace_binaries_in_cached_layers_and_runs_them_as_non_root() {
    let bins = workspace_bins();
    let file = Dockerfile::load();
    let mut problems = Vec::new();
    let mut built = BTreeSet::new();
    for (stage, instruction, rest) in &file.lines {
        if instruction == "RUN" && rest.contains("cargo build") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            for pair in words.windows(2).filter(|w| w[0] == "--bin") {
                built.insert(pair[1].to_owned());
            }
        }
        if instruction == "ENTRYPOINT" {
            let entry: Vec<String> = serde_json::from_str(rest)
                .unwrap_or_else(|e| panic!("stage {stage}: ENTRYPOINT must be exec form: {e}"));
            if !built.contains(&entry[0]) {
                problems.push(format!(
                    "stage {stage}: ENTRYPOINT {} is not built by `cargo build --bin`",
                    entry[0]
                ));
            }
            if !file
                .in_stage(stage)
                .any(|(i, r)| i == "HEALTHCHECK" && r.contains("http://127.0.0.1:"))
            {
                problems.push(format!("stage {stage}: no HEALTHCHECK"));
            }
        }
    }
    for binary in &built {
        if !bins.contains_key(binary) {
            problems.push(format!(
                "Dockerfile builds {binary}, no [[bin]] target of the workspace"
            ));
        }
    }
    for binary in [PRODUCER, WORKER, REAPER, FAKECLOUD] {
        if !built.contains(binary) {
            problems.push(format!("Dockerfile does not build {binary}"));
        }
    }
    // Dependencies are cooked from the recipe before the sources are copied.
    let builder: Vec<(&str, &str)> = file
        .lines
        .iter()
        .filter(|(_, _, r)| r.contains("cargo build"))
        .flat_map(|(s, _, _)| file.in_stage(s))
        .collect();
    let position = |pred: &dyn Fn(&(&str, &str)) -> bool| builder.iter().position(pred);
    let cook = position(&|(i, r)| *i == "RUN" && r.contains("cargo chef cook"));
    let copy = position(&|(i, r)| *i == "COPY" && r.starts_with(". "));
    let build = position(&|(i, r)| *i == "RUN" && r.contains("cargo build"));
    if !(cook.is_some() && cook < copy && copy < build) {
        problems.push(
            "the build stage must cook dependencies, then COPY the sources, then cargo build"
                .into(),
        );
    }
    let users: Vec<&str> = file
        .lines
        .iter()
        .filter(|(_, i, _)| i == "USER")
        .map(|(_, _, r)| r.as_str())
        .collect();
    if users.is_empty()
        || users.iter().any(|u| {
            let uid = u.split(':').next().unwrap_or_default();
            !matches!(uid.parse::<u32>(), Ok(n) if n > 0)
        })
    {
        problems.push(format!(
            "runtime must switch to a numeric non-root USER, got {users:?}"
        ));
    }
    for (stage, instruction, rest) in &file.lines {
        if instruction == "ENV" && rest.contains("BUYONCE_LISTEN=") && !rest.contains("=0.0.0.0:") {
            problems.push(format!("stage {stage}: BUYONCE_LISTEN must bind 0.0.0.0"));
        }
    }
    assert_none("Dockerfile", problems);
}

// ---------------------------------------------------------------------------------------------
// docker/iam-policy.json against the AWS calls in the worker's code.

/// IAM service prefix → the file under worker/src that calls that AWS SDK client (OpenSearch's
/// prefix is `es`). Every file using an `aws_sdk_*` client must be here.
const SERVICE_FILE: &[(&str, &str)] = &[
    ("sts", "clients/aws/mod.rs"),
    ("ec2", "executors/ec2.rs"),
    ("savingsplans", "executors/savings_plans.rs"),
    ("rds", "executors/rds.rs"),
    ("elasticache", "executors/elasticache.rs"),
    ("memorydb", "executors/memorydb.rs"),
    ("es", "executors/opensearch.rs"),
    ("redshift", "executors/redshift.rs"),
];

/// Why the policy holds an action.
enum Needed {
    /// The code calls the operation: `ec2:CreateTags` ⇒ `.create_tags()` in the service's file.
    Call,
    /// AWS authorizes the tags passed to this purchase operation with the action (tag on
    /// create: a dependent action in the IAM service authorization reference).
    TagsOn(&'static str),
    /// A credential provider of aws-config calls it; the needle is its type name.
    Provider(&'static str),
}
use Needed::{Call, Provider, TagsOn};

/// Every AWS action buyonce needs: what worker/src/clients/aws/mod.rs (STS) and
/// worker/src/executors/{ec2,savings_plans,rds,elasticache,memorydb,opensearch,redshift}.rs call.
/// Savings Plans' CreateSavingsPlan carries tags too, but its reference entry lists no dependent
/// action (tags there are governed by aws:RequestTag conditions on CreateSavingsPlan itself).
const AWS_ACTIONS: &[(&str, Needed)] = &[
    ("sts:GetCallerIdentity", Call),
    ("sts:AssumeRole", Provider("AssumeRoleProvider")),
    ("ec2:DescribeReservedInstancesOfferings", Call),
    ("ec2:DescribeReservedInstances", Call),
    ("ec2:PurchaseReservedInstancesOffering", Call),
    ("ec2:CreateTags", Call),
    ("savingsplans:DescribeSavingsPlansOfferings", Call),
    ("savingsplans:DescribeSavingsPlans", Call),
    ("savingsplans:CreateSavingsPlan", Call),
    ("rds:DescribeReservedDBInstancesOfferings", Call),
    ("rds:DescribeReservedDBInstances", Call),
    ("rds:PurchaseReservedDBInstancesOffering", Call),
    (
        "rds:AddTagsToResource",
        TagsOn("PurchaseReservedDBInstancesOffering"),
    ),
    ("elasticache:DescribeReservedCacheNodesOfferings", Call),
    ("elasticache:DescribeReservedCacheNodes", Call),
    ("elasticache:PurchaseReservedCacheNodesOffering", Call),
    (
        "elasticache:AddTagsToResource",
        TagsOn("PurchaseReservedCacheNodesOffering"),
    ),
    ("memorydb:DescribeReservedNodesOfferings", Call),
    ("memorydb:DescribeReservedNodes", Call),
    ("memorydb:PurchaseReservedNodesOffering", Call),
    (
        "memorydb:TagResource",
        TagsOn("PurchaseReservedNodesOffering"),
    ),
    ("es:DescribeReservedInstanceOfferings", Call),
    ("es:DescribeReservedInstances", Call),
    ("es:PurchaseReservedInstanceOffering", Call),
    ("redshift:DescribeReservedNodeOfferings", Call),
    ("redshift:DescribeReservedNodes", Call),
    ("redshift:PurchaseReservedNodeOffering", Call),
];

/// Zero-argument calls that look like SDK operations but are ours.
const NOT_SDK_CALLS: &[&str] = &["tag_key"];

fn worker_source(file: &str) -> String {
    read(&repo().join("worker/src").join(file))
}

/// The Rust SDK's method for an operation: `DescribeReservedDBInstances` →
/// `describe_reserved_db_instances` (an acronym stays one word).
fn sdk_method(operation: &str) -> String {
    let chars: Vec<char> = operation.chars().collect();
    let mut out = String::new();
    for (i, c) in chars.iter().enumerate() {
        let prev_lower = i > 0 && chars[i - 1].is_ascii_lowercase();
        let acronym_ends = i > 0
            && chars[i - 1].is_ascii_uppercase()
            && chars.get(i + 1).is_some_and(char::is_ascii_lowercase);
        if c.is_ascii_uppercase() && (prev_lower || acronym_ends) {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// `.verb_thing()` calls in `source`: how the fluent SDK clients start an operation.
fn sdk_calls(source: &str) -> BTreeSet<String> {
    const VERBS: &[&str] = &[
        "describe", "purchase", "create", "get", "list", "add", "tag", "untag", "delete", "modify",
        "accept", "cancel", "return", "exchange", "assume", "update", "put",
    ];
    source
        .split('.')
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let verb = name.split('_').next()?;
            (rest[name.len()..].starts_with("()")
                && name.contains('_')
                && VERBS.contains(&verb)
                && !NOT_SDK_CALLS.contains(&name.as_str()))
            .then_some(name)
        })
        .collect()
}

#[test]
fn iam_policy_lists_exactly_the_aws_actions_the_executors_call() {
    let policy: serde_json::Value =
        serde_json::from_str(&read(&docker().join("iam-policy.json"))).expect("valid JSON");
    let mut in_policy = BTreeSet::new();
    for statement in policy["Statement"].as_array().expect("Statement list") {
        assert_eq!(statement["Effect"], "Allow", "the policy only allows");
        match &statement["Action"] {
            serde_json::Value::String(a) => {
                in_policy.insert(a.clone());
            }
            serde_json::Value::Array(list) => {
                in_policy.extend(list.iter().filter_map(|a| a.as_str().map(str::to_owned)));
            }
            other => panic!("Action must be a string or a list, got {other}"),
        }
    }
    let expected: BTreeSet<String> = AWS_ACTIONS.iter().map(|(a, _)| (*a).to_owned()).collect();
    let mut problems = Vec::new();
    for extra in in_policy.difference(&expected) {
        problems.push(format!(
            "iam-policy.json grants {extra}, which buyonce never needs"
        ));
    }
    for missing in expected.difference(&in_policy) {
        problems.push(format!("iam-policy.json lacks {missing}"));
    }
    if in_policy.iter().any(|a| a.contains('*')) {
        problems.push("iam-policy.json uses a wildcard action".into());
    }

    for (action, needed) in AWS_ACTIONS {
        let (service, operation) = action.split_once(':').expect("service:Operation");
        let Some(file) = SERVICE_FILE
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, f)| *f)
        else {
            problems.push(format!("{action}: no file calls the {service} client"));
            continue;
        };
        let source = worker_source(file);
        match needed {
            Call => {
                let method = sdk_method(operation);
                if !sdk_calls(&source).contains(&method) {
                    problems.push(format!(
                        "{action}: worker/src/{file} does not call .{method}()"
                    ));
                }
            }
            TagsOn(purchase) => {
                // The tags must be set on that very call, between `.method()` and its `.send()`.
                let method = sdk_method(purchase);
                let tagged = source.find(&format!(".{method}()")).is_some_and(|start| {
                    let rest = &source[start..];
                    rest[..rest.find(".send()").unwrap_or(rest.len())].contains(".tags(")
                });
                if !tagged {
                    problems.push(format!(
                        "{action}: worker/src/{file} no longer tags .{method}(); drop the action"
                    ));
                }
            }
            Provider(needle) => {
                if !source.contains(needle) {
                    problems.push(format!(
                        "{action}: worker/src/{file} no longer uses {needle}"
                    ));
                }
            }
        }
    }
    assert_none("IAM policy", problems);
}

#[test]
fn every_aws_sdk_call_in_the_worker_is_in_the_policy_list() {
    let root = repo().join("worker/src");
    let mut problems = Vec::new();
    // Every file that talks to an AWS SDK client must be known, so that a new executor cannot
    // slip past the policy.
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for path in fs::read_dir(dir).unwrap().flatten().map(|e| e.path()) {
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if read(&path).contains("aws_sdk_") && !SERVICE_FILE.iter().any(|(_, f)| *f == relative)
            {
                problems.push(format!(
                    "worker/src/{relative} uses an AWS SDK client: add it to SERVICE_FILE, \
                     AWS_ACTIONS and docker/iam-policy.json"
                ));
            }
        }
    }
    for (service, file) in SERVICE_FILE {
        for method in sdk_calls(&worker_source(file)) {
            let listed = AWS_ACTIONS.iter().any(|(action, needed)| {
                matches!(needed, Call)
                    && action
                        .split_once(':')
                        .is_some_and(|(s, op)| s == *service && sdk_method(op) == method)
            });
            if !listed {
                problems.push(format!(
                    "worker/src/{file} calls .{method}() ({service}): add the action to \
                     AWS_ACTIONS and docker/iam-policy.json"
                ));
            }
        }
    }
    assert_none("AWS calls outside the policy", problems);
}

//! Kubernetes render tier (`render --target kubernetes`, docs/kubernetes.md): a snapshot of every
//! file, byte stability and `--check`, every object validated against the Kubernetes 1.37 OpenAPI
//! schemas (`kubernetes-validate`, strict), `kubectl kustomize` building the overlay, a policy
//! check over every container, and the NetworkPolicies admitting exactly the manifest's graph.
//! No cluster is needed (none can run here).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{run_mcpctl, text};
use mcpctl::render::kubernetes::{self, Options};
use serde_yaml_ng::Value;

const TOOLS: &str = "/var/cache/mcpctl/tools/bin";
/// The Kubernetes version the objects are validated against (bundled by kubernetes-validate).
const K8S_VERSION: &str = "1.37.0";

fn manifest() -> mcpctl::manifest::Manifest {
    mcpctl::manifest::load(&common::repo_root().join("services.yaml"))
        .expect("default manifest is valid")
        .manifest
}

fn options() -> Options {
    Options {
        registry: Some("registry.example:5000".into()),
        tags: BTreeMap::from([("fetch".to_string(), "0123456789ab".to_string())]),
        internet: vec!["fetch".into()],
    }
}

fn rendered() -> Vec<mcpctl::render::Artifact> {
    kubernetes::render(&manifest(), &options()).unwrap()
}

fn write_all(dir: &Path, artifacts: &[mcpctl::render::Artifact]) {
    mcpctl::render::write(dir, artifacts).unwrap();
}

/// Every YAML document of the base, with the file it came from.
fn objects(artifacts: &[mcpctl::render::Artifact]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for a in artifacts
        .iter()
        .filter(|a| a.path.starts_with("base") && !a.path.ends_with("kustomization.yaml"))
    {
        for doc in serde_yaml_ng::Deserializer::from_str(&a.contents) {
            let v = Value::deserialize(doc).unwrap();
            if !v.is_null() {
                out.push((a.path.display().to_string(), v));
            }
        }
    }
    out
}

use serde::Deserialize as _;

#[test]
fn every_rendered_file_matches_its_snapshot() {
    let artifacts = rendered();
    let names: Vec<String> = artifacts
        .iter()
        .map(|a| a.path.display().to_string())
        .collect();
    assert_eq!(
        artifacts.len(),
        10 + 4 + 1 + 3,
        "10 services, network + 2 kustomizations + namespace, the secrets script, Prometheus config + 2 rule files: {names:?}"
    );
    // The rule files are the Docker render's (snapshotted by tests/render.rs): same bytes.
    let docker = mcpctl::render::render(&manifest(), None).unwrap();
    for a in &artifacts {
        if a.path.starts_with("prometheus/rules") {
            let same = docker.iter().find(|d| d.path == a.path).unwrap();
            assert_eq!(a.contents, same.contents, "{}", a.path.display());
            continue;
        }
        let name = a.path.to_string_lossy().replace('/', "__");
        insta::assert_snapshot!(name, &a.contents);
    }
    let script = artifacts
        .iter()
        .find(|a| a.path == Path::new("create-secrets.sh"))
        .unwrap();
    assert!(script.executable);
}

#[test]
fn two_processes_render_identical_bytes_and_check_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let m = common::repo_root().join("services.yaml");
    let m = m.to_str().unwrap();
    let args = |dir: &str| {
        vec![
            "-f",
            m,
            "render",
            "--target",
            "kubernetes",
            "--out",
            dir.to_string().leak(),
            "--internet",
            "fetch",
        ]
    };
    for dir in ["a", "b"] {
        let out = run_mcpctl(tmp.path(), &args(dir));
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let read = |d: &str| -> Vec<(PathBuf, Vec<u8>)> {
        let mut v = Vec::new();
        let mut stack = vec![tmp.path().join(d)];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    v.push((
                        p.strip_prefix(tmp.path().join(d)).unwrap().into(),
                        std::fs::read(&p).unwrap(),
                    ));
                }
            }
        }
        v.sort();
        v
    };
    let a = read("a");
    assert_eq!(a.len(), 18);
    assert_eq!(a, read("b"), "two renders differ");
    let mut check = args("a");
    check.push("--check");
    let out = run_mcpctl(tmp.path(), &check);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::write(tmp.path().join("a/base/fetch.yaml"), "kind: List\n").unwrap();
    let out = run_mcpctl(tmp.path(), &check);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("base/fetch.yaml"));
    // The Docker default is unchanged, and Kubernetes-only flags are refused there.
    let out = run_mcpctl(
        tmp.path(),
        &["-f", m, "render", "--out", "d", "--registry", "r"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // An unknown --internet service is a usage error naming the services.
    let out = run_mcpctl(
        tmp.path(),
        &[
            "-f",
            m,
            "render",
            "--target",
            "kubernetes",
            "--out",
            "c",
            "--internet",
            "nope",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no service `nope`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn no_secret_value_and_tags_from_an_export() {
    let artifacts = rendered();
    let all: String = artifacts.iter().map(|a| a.contents.as_str()).collect();
    // Only names: no Secret object is rendered, no data/stringData anywhere.
    assert!(!all.contains("kind: Secret\n"));
    assert!(!all.contains("stringData"));
    let overlay = artifacts
        .iter()
        .find(|a| a.path == Path::new("overlays/default/kustomization.yaml"))
        .unwrap();
    assert!(overlay
        .contents
        .contains("newName: registry.example:5000/mcp/fetch\n    newTag: \"0123456789ab\""));

    // The tags of an `images export` directory's manifest.json.
    let tmp = tempfile::tempdir().unwrap();
    let export = serde_json::json!({
        "format": 1, "mcpctl_version": "x", "project": "mcp", "created": "2026-01-01T00:00:00Z",
        "images": [{
            "file": "service-mcp_fetch.tar", "sha256": "a".repeat(64), "size": 1, "image_id": "sha256:ab",
            "repo_tags": ["mcp/fetch:fedcba987654"], "role": "service",
            "used_by": [{"container": "mcp-fetch-r3", "service": "fetch", "revision": "r3-0011aabb"}]
        }, {
            "file": "base.tar", "sha256": "b".repeat(64), "size": 1, "image_id": "sha256:cd",
            "repo_tags": ["mcpctl-base/python311:bookworm"], "role": "base",
            "used_by": [{"container": "mcp-fetch-r3", "service": "fetch", "revision": "r3-0011aabb"}]
        }]
    });
    std::fs::write(
        tmp.path().join("manifest.json"),
        serde_json::to_vec(&export).unwrap(),
    )
    .unwrap();
    let tags = kubernetes::tags_from_export(tmp.path(), "mcp").unwrap();
    assert_eq!(
        tags,
        BTreeMap::from([("fetch".to_string(), "fedcba987654".to_string())])
    );
    let err = kubernetes::tags_from_export(tmp.path(), "other").unwrap_err();
    assert!(format!("{err:#}").contains("project `mcp`"), "{err:#}");
}

fn tool(name: &str) -> Option<PathBuf> {
    common::tool(name, name, &[&format!("{TOOLS}/{name}")])
}

#[test]
fn every_object_validates_against_the_kubernetes_schemas() {
    let Some(validate) = tool("kubernetes-validate") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let artifacts = rendered();
    write_all(tmp.path(), &artifacts);
    let files: Vec<PathBuf> = artifacts
        .iter()
        .filter(|a| a.path.extension().is_some_and(|e| e == "yaml"))
        .filter(|a| !a.path.ends_with("kustomization.yaml"))
        .map(|a| tmp.path().join(&a.path))
        .collect();
    assert_eq!(files.len(), 12, "10 services, network, namespace");
    let out = Command::new(&validate)
        .args(["--strict", "--kubernetes-version", K8S_VERSION])
        .args(&files)
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "kubernetes-validate failed:\n{stdout}\n{}",
        text(&out.stderr)
    );
    // Every object is reported valid; nothing is skipped as unknown.
    let objects = objects(&artifacts).len() + 1;
    let passed = stdout
        .lines()
        .filter(|l| l.starts_with("INFO ") && l.contains(" passed for resource "))
        .count();
    assert_eq!(passed, objects, "{stdout}");
    assert!(!stdout.contains("ERROR"), "{stdout}");
    assert!(!stdout.contains("WARN"), "{stdout}");
}

#[test]
fn kubectl_kustomize_builds_the_overlay_with_registry_and_tags() {
    let Some(kubectl) = tool("kubectl") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    write_all(tmp.path(), &rendered());
    let out = common::must(
        Command::new(&kubectl)
            .arg("kustomize")
            .arg(tmp.path().join("overlays/default")),
    );
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&out)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    let base = objects(&rendered()).len();
    assert_eq!(docs.len(), base + 1, "the base's objects and the namespace");
    for d in &docs {
        let kind = d["kind"].as_str().unwrap();
        if kind != "Namespace" {
            assert_eq!(d["metadata"]["namespace"].as_str(), Some("mcp"), "{kind}");
        }
    }
    assert!(out.contains("image: registry.example:5000/mcp/fetch:0123456789ab"));
    assert!(out.contains("image: registry.example:5000/mcp/memory:compose"));
    // Validate what kubectl would apply, too.
    if let Some(validate) = tool("kubernetes-validate") {
        let built = tmp.path().join("built.yaml");
        std::fs::write(&built, &out).unwrap();
        common::must(
            Command::new(validate)
                .args(["--strict", "--quiet", "--kubernetes-version", K8S_VERSION])
                .arg(&built),
        );
    }
}

/// Debian's promtool (2.42) is built without Kubernetes discovery (`field kubernetes_sd_configs not
/// found`), so the scrape config is checked here: it discovers pods by the contract labels the
/// rendered pods carry, and keeps the bridge's named port.
#[test]
fn the_kubernetes_prometheus_config_discovers_the_rendered_pods() {
    let artifacts = rendered();
    let prom = artifacts
        .iter()
        .find(|a| a.path == Path::new("prometheus/prometheus.yml"))
        .unwrap();
    let v: Value = serde_yaml_ng::from_str(&prom.contents).unwrap();
    let job = &v["scrape_configs"][0];
    assert_eq!(job["job_name"], "mcp-bridges");
    let sd = &job["kubernetes_sd_configs"][0];
    assert_eq!(sd["role"], "pod");
    assert_eq!(sd["namespaces"]["names"][0], "mcp");
    let selector = sd["selectors"][0]["label"].as_str().unwrap();
    let fetch = objects(&artifacts)
        .into_iter()
        .find(|(_, o)| o["kind"] == "Deployment" && o["metadata"]["name"] == "mcp-fetch")
        .unwrap()
        .1;
    let labels = &fetch["spec"]["template"]["metadata"]["labels"];
    for term in selector.split(',') {
        let (k, want) = term.split_once('=').unwrap();
        assert_eq!(labels[k].as_str(), Some(want), "{term}");
    }
    let port = &fetch["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"];
    let relabel = job["relabel_configs"].as_sequence().unwrap();
    assert!(relabel.iter().any(|r| r["source_labels"][0]
        == "__meta_kubernetes_pod_container_port_name"
        && r["regex"] == *port
        && r["action"] == "keep"));
    // `service` comes from the pod label the contract names.
    assert!(relabel.iter().any(|r| r["source_labels"][0]
        == "__meta_kubernetes_pod_label_com_mcp_service"
        && r["target_label"] == "service"));
    assert!(
        fetch["spec"]["template"]["metadata"]["annotations"]["com.mcp.config-hash"].is_string()
    );
}

#[test]
fn the_secrets_script_is_valid_sh_and_creates_every_referenced_secret() {
    // Run it against stand-ins for kubectl and mcpctl that record what they were asked.
    let tmp = tempfile::tempdir().unwrap();
    let artifacts = rendered();
    write_all(tmp.path(), &artifacts);
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = tmp.path().join("calls.log");
    let kubectl = format!(
        "#!/bin/sh\necho \"kubectl $*\" >> {log}\ncase \"$*\" in\n  *' get secret '*) exit 1 ;;\n  *'create secret generic'*) for a in \"$@\"; do case \"$a\" in --from-file=*) ls \"${{a#--from-file=}}\" | sed 's/^/  key /' >> {log} ;; esac; done ;;\nesac\ncat >/dev/null 2>&1 || true\n",
        log = log.display()
    );
    let mcpctl = format!(
        "#!/bin/sh\necho \"mcpctl $*\" >> {log}\necho value\n",
        log = log.display()
    );
    for (name, body) in [("kubectl", kubectl), ("mcpctl", mcpctl)] {
        let p = bin.join(name);
        std::fs::write(&p, body).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let run = |extra: &[(&str, &str)]| {
        let mut c = Command::new("sh");
        c.arg(tmp.path().join("create-secrets.sh"))
            .env("PATH", &path)
            .env("MANIFEST", common::repo_root().join("services.yaml"))
            .env_remove("GITHUB_TOKEN")
            .env_remove("N8N_API_KEY");
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let out = run(&[("GITHUB_TOKEN", "ghp_x")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let calls = std::fs::read_to_string(&log).unwrap();
    // One Secret per service that mounts one (every name the objects reference), plus the probe's.
    let mut referenced: BTreeSet<String> = BTreeSet::new();
    for (_, o) in objects(&artifacts) {
        let vols = &o["spec"]["template"]["spec"]["volumes"];
        for v in vols.as_sequence().into_iter().flatten() {
            if let Some(s) = v["secret"]["secretName"].as_str() {
                referenced.insert(s.to_string());
            }
        }
    }
    let created: BTreeSet<String> = calls
        .lines()
        .filter_map(|l| l.split("create secret generic ").nth(1))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(created, referenced, "{calls}");
    assert!(calls.contains("mcpctl -f "), "{calls}");
    assert!(calls.contains("token bridge-file fetch"), "{calls}");
    assert!(calls.contains("token show mcpctl"), "{calls}");
    // The optional n8n key is left out when unset; the github token is there when set.
    assert!(
        calls.contains("  key GITHUB_PERSONAL_ACCESS_TOKEN"),
        "{calls}"
    );
    assert!(!calls.contains("  key N8N_API_KEY"), "{calls}");
    assert!(calls.contains("  key db_role_mcp_memory"), "{calls}");
    assert!(calls.contains("  key DATABASE_URL"), "{calls}");
}

// ---- policy: every container is limited, probed, non-root, read-only, without capabilities ----

fn pod_specs(objs: &[(String, Value)]) -> Vec<(String, &Value)> {
    objs.iter()
        .filter(|(_, o)| matches!(o["kind"].as_str(), Some("Deployment" | "StatefulSet")))
        .map(|(_, o)| {
            (
                o["metadata"]["name"].as_str().unwrap().to_string(),
                &o["spec"]["template"]["spec"],
            )
        })
        .collect()
}

#[test]
fn every_container_meets_the_policy() {
    let objs = objects(&rendered());
    let pods = pod_specs(&objs);
    assert_eq!(pods.len(), 10);
    for (name, pod) in pods {
        assert_eq!(
            pod["automountServiceAccountToken"],
            Value::Bool(false),
            "{name}"
        );
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"],
            Value::Bool(true),
            "{name}"
        );
        let containers = pod["containers"].as_sequence().unwrap();
        assert!(!containers.is_empty());
        assert!(
            pod["initContainers"].is_null(),
            "{name}: the policy covers init containers too"
        );
        for c in containers {
            let r = &c["resources"];
            for k in ["cpu", "memory"] {
                assert!(r["limits"][k].is_string(), "{name}: limits.{k}");
                assert!(r["requests"][k].is_string(), "{name}: requests.{k}");
            }
            for p in ["startupProbe", "readinessProbe", "livenessProbe"] {
                assert!(c[p].is_mapping(), "{name}: {p}");
            }
            let s = &c["securityContext"];
            assert_eq!(s["runAsNonRoot"], Value::Bool(true), "{name}");
            let uid = s["runAsUser"].as_u64().unwrap();
            assert!(uid > 0, "{name}: uid {uid}");
            if !name.ends_with("-db") {
                assert_eq!(uid, 10001, "{name}");
            }
            assert_eq!(s["readOnlyRootFilesystem"], Value::Bool(true), "{name}");
            assert_eq!(s["allowPrivilegeEscalation"], Value::Bool(false), "{name}");
            assert_eq!(
                s["capabilities"]["drop"],
                Value::Sequence(vec![Value::String("ALL".into())]),
                "{name}"
            );
            assert!(s["capabilities"]["add"].is_null(), "{name}");
            assert_eq!(s["seccompProfile"]["type"].as_str(), Some("RuntimeDefault"));
            let mounts = c["volumeMounts"].as_sequence().unwrap();
            assert!(
                mounts
                    .iter()
                    .any(|m| m["mountPath"].as_str() == Some("/tmp")),
                "{name}: a writable /tmp"
            );
        }
    }
    // Every ServiceAccount refuses a token.
    for (_, o) in objs
        .iter()
        .filter(|(_, o)| o["kind"].as_str() == Some("ServiceAccount"))
    {
        assert_eq!(o["automountServiceAccountToken"], Value::Bool(false));
    }
}

#[test]
fn rollout_and_probes_follow_the_manifest() {
    let objs = objects(&rendered());
    let get = |kind: &str, name: &str| {
        objs.iter()
            .find(|(_, o)| {
                o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name)
            })
            .map(|(_, o)| o)
            .unwrap_or_else(|| panic!("{kind} {name}"))
    };
    let fetch = get("Deployment", "mcp-fetch");
    assert_eq!(
        fetch["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    assert_eq!(fetch["spec"]["strategy"]["rollingUpdate"]["maxSurge"], 1);
    assert_eq!(fetch["spec"]["progressDeadlineSeconds"], 80);
    let c = &fetch["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let startup = &c["startupProbe"];
    assert_eq!(
        startup["exec"]["command"][5], "--mcp",
        "the MCP-level check gates the pod"
    );
    // start_period 20 s + 3 × 10 s, probed every 5 s.
    assert_eq!(startup["failureThreshold"], 10);
    assert_eq!(c["resources"]["limits"]["memory"], "192Mi");
    assert_eq!(c["resources"]["limits"]["cpu"], "500m");
    let n8n = get("Deployment", "mcp-n8n");
    // 30 s start period.
    assert_eq!(
        n8n["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["failureThreshold"],
        12
    );
    let db = get("StatefulSet", "mcp-db");
    assert_eq!(db["spec"]["replicas"], 1);
    assert_eq!(
        db["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "pgdata"
    );
    assert_eq!(get("Service", "mcp-db")["spec"]["clusterIP"], "None");
    assert_eq!(
        get("PodDisruptionBudget", "mcp-db")["spec"]["maxUnavailable"],
        0
    );
    // Stateless services run two replicas; their Service keeps a client on one pod.
    assert_eq!(fetch["spec"]["replicas"], 2);
    let svc = get("Service", "mcp-fetch");
    assert_eq!(svc["spec"]["sessionAffinity"], "ClientIP");
    assert_eq!(
        get("PodDisruptionBudget", "mcp-fetch")["spec"]["minAvailable"],
        1
    );
    // filesystem mounts a volume (one ReadWriteOnce claim): one replica, no affinity needed.
    assert_eq!(get("Deployment", "mcp-filesystem")["spec"]["replicas"], 1);
    assert!(get("Service", "mcp-filesystem")["spec"]["sessionAffinity"].is_null());
    get("PersistentVolumeClaim", "mcp-fsdata");
}

// ---- NetworkPolicy: the admitted pairs are exactly the manifest's stack graph ----

/// A pod (or address) traffic can come from or go to.
#[derive(Debug, Clone)]
struct Peer {
    name: String,
    namespace: &'static str,
    labels: BTreeMap<String, String>,
    /// An address outside the cluster: "public" or "private".
    ip: Option<&'static str>,
    /// The port it listens on (pods of the stack).
    port: Option<u16>,
}

fn matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let Some(m) = selector.get("matchLabels") else {
        assert!(
            selector.as_mapping().is_none_or(|m| m.is_empty()),
            "only matchLabels: {selector:?}"
        );
        return true;
    };
    assert!(selector.get("matchExpressions").is_none());
    m.as_mapping()
        .unwrap()
        .iter()
        .all(|(k, v)| labels.get(k.as_str().unwrap()) == v.as_str().map(String::from).as_ref())
}

/// Whether a NetworkPolicy peer (`from`/`to` item) selects `p`, seen from `ns` (the policy's).
fn peer_selects(item: &Value, p: &Peer, ns: &str) -> bool {
    if let Some(block) = item.get("ipBlock") {
        let cidr = block["cidr"].as_str().unwrap();
        assert!(cidr == "0.0.0.0/0" || cidr == "::/0", "{cidr}");
        let excepts: Vec<&str> = block["except"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        // The model knows two addresses: 93.184.216.34 (public) and 10.1.2.3 (a pod/private).
        if cidr == "::/0" {
            // The model's addresses are IPv4; a dual-stack pod's IPv6 address is a ULA
            // (fd00::/8), which the rendered block must leave out.
            assert!(excepts.contains(&"fc00::/7"), "{excepts:?}");
            return false;
        }
        // Pods and the private network are in 10.0.0.0/8 in this model.
        return p.ip == Some("public") || !excepts.contains(&"10.0.0.0/8");
    }
    if p.ip.is_some() {
        return false;
    }
    let ns_ok = match item.get("namespaceSelector") {
        None => p.namespace == ns,
        Some(sel) => {
            let mut nl = BTreeMap::new();
            nl.insert(
                "kubernetes.io/metadata.name".to_string(),
                p.namespace.to_string(),
            );
            matches(sel, &nl)
        }
    };
    ns_ok
        && item
            .get("podSelector")
            .is_none_or(|s| matches(s, &p.labels))
}

fn port_ok(rule: &Value, port: u16, proto: &str) -> bool {
    match rule.get("ports") {
        None => true,
        Some(ports) => ports.as_sequence().unwrap().iter().any(|p| {
            p["port"].as_u64() == Some(port as u64)
                && p["protocol"].as_str().unwrap_or("TCP") == proto
        }),
    }
}

/// Whether `policies` (all in namespace `ns`) let `src` open a connection to `dst` on `port`.
fn allowed(policies: &[&Value], ns: &str, src: &Peer, dst: &Peer, port: u16, proto: &str) -> bool {
    let applies = |pol: &Value, p: &Peer, kind: &str| {
        p.ip.is_none()
            && p.namespace == ns
            && matches(&pol["spec"]["podSelector"], &p.labels)
            && pol["spec"]["policyTypes"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|t| t.as_str() == Some(kind))
    };
    let egress_ok = {
        let pols: Vec<_> = policies
            .iter()
            .filter(|p| applies(p, src, "Egress"))
            .collect();
        (pols.is_empty() && src.namespace != ns)
            || pols.iter().any(|pol| {
                pol["spec"]["egress"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .any(|rule| {
                        port_ok(rule, port, proto)
                            && rule.get("to").is_none_or(|to| {
                                to.as_sequence()
                                    .unwrap()
                                    .iter()
                                    .any(|i| peer_selects(i, dst, ns))
                            })
                    })
            })
    };
    let ingress_ok = {
        let pols: Vec<_> = policies
            .iter()
            .filter(|p| applies(p, dst, "Ingress"))
            .collect();
        (pols.is_empty() && dst.namespace != ns)
            || pols.iter().any(|pol| {
                pol["spec"]["ingress"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .any(|rule| {
                        port_ok(rule, port, proto)
                            && rule.get("from").is_none_or(|from| {
                                from.as_sequence()
                                    .unwrap()
                                    .iter()
                                    .any(|i| peer_selects(i, src, ns))
                            })
                    })
            })
    };
    egress_ok && ingress_ok
}

#[test]
fn network_policies_admit_exactly_the_stack_graph() {
    let m = manifest();
    let opts = options();
    let artifacts = kubernetes::render(&m, &opts).unwrap();
    let objs = objects(&artifacts);
    let policies: Vec<&Value> = objs
        .iter()
        .filter(|(_, o)| o["kind"].as_str() == Some("NetworkPolicy"))
        .map(|(_, o)| o)
        .collect();
    // The overlay puts everything in namespace `mcp` (= project).
    let ns = "mcp";
    let p = &m.label_prefix;
    let lbl = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    // The stack's pods, with the labels their templates give them.
    let mut peers: Vec<Peer> = objs
        .iter()
        .filter(|(_, o)| matches!(o["kind"].as_str(), Some("Deployment" | "StatefulSet")))
        .map(|(_, o)| {
            let labels = o["spec"]["template"]["metadata"]["labels"]
                .as_mapping()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.as_str().unwrap().into(), v.as_str().unwrap().into()))
                .collect::<BTreeMap<String, String>>();
            Peer {
                name: labels[&format!("{p}.service")].clone(),
                namespace: "mcp",
                port: o["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
                    .as_u64()
                    .map(|p| p as u16),
                labels,
                ip: None,
            }
        })
        .collect();
    assert_eq!(peers.len(), m.services.len());
    let outsiders = [
        (
            "consumer:litellm",
            "mcp",
            lbl(&[(&format!("{p}.consumer"), "litellm")]),
            None,
        ),
        (
            "edge",
            "ingress",
            lbl(&[(&format!("{p}.role"), "edge")]),
            None,
        ),
        (
            "prometheus",
            "monitoring",
            lbl(&[(&format!("{p}.role"), "prometheus")]),
            None,
        ),
        ("other-pod", "mcp", lbl(&[("app", "other")]), None),
        ("foreign-pod", "elsewhere", lbl(&[("app", "x")]), None),
        // A pod claiming a service's labels from another namespace is not that service.
        (
            "impostor",
            "elsewhere",
            lbl(&[
                (&format!("{p}.project"), "mcp"),
                (&format!("{p}.service"), "db"),
            ]),
            None,
        ),
        (
            "kube-dns",
            "kube-system",
            lbl(&[("k8s-app", "kube-dns")]),
            None,
        ),
        ("internet", "", BTreeMap::new(), Some("public")),
        ("private-net", "", BTreeMap::new(), Some("private")),
    ];
    for (name, namespace, labels, ip) in outsiders {
        peers.push(Peer {
            name: name.into(),
            namespace,
            labels,
            ip,
            port: None,
        });
    }
    // What the manifest says: consumers and the edge (and Prometheus) reach MCP services; each
    // service reaches its dependencies (depends_on, the databases its secrets name); --internet
    // services reach public addresses; every stack pod resolves names.
    let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
    let services: BTreeSet<&str> = m.services.keys().map(String::as_str).collect();
    for (name, svc) in &m.services {
        if svc.role == mcpctl::manifest::Role::Service {
            let eff = mcpctl::auth::effective(&m, name);
            for c in eff.consumers.iter().filter(|c| c.as_str() != "mcpctl") {
                expected.insert((format!("consumer:{c}"), name.clone()));
            }
            expected.insert(("edge".into(), name.clone()));
            expected.insert(("prometheus".into(), name.clone()));
        }
        for d in &svc.depends_on {
            expected.insert((name.clone(), d.clone()));
        }
        for r in svc.secrets.values() {
            if let Some(db) = &r.database {
                expected.insert((name.clone(), db.service.clone()));
            }
        }
    }
    for s in &opts.internet {
        expected.insert((s.clone(), "internet".into()));
    }
    for peer in peers.iter().filter(|p| p.namespace == "mcp") {
        expected.insert((peer.name.clone(), "kube-dns".into()));
    }
    // Connections the policies admit: to a stack pod on its port, to kube-dns on 53/UDP, to an
    // address on 443 (a probe of "anything outside").
    let mut admitted: BTreeSet<(String, String)> = BTreeSet::new();
    for src in &peers {
        for dst in &peers {
            if src.name == dst.name {
                continue;
            }
            let (port, proto) = match (dst.name.as_str(), dst.port, dst.ip) {
                ("kube-dns", _, _) => (53, "UDP"),
                (_, Some(port), _) => (port, "TCP"),
                (_, None, Some(_)) => (443, "TCP"),
                _ => (8080, "TCP"),
            };
            if allowed(&policies, ns, src, dst, port, proto) {
                admitted.insert((src.name.clone(), dst.name.clone()));
            }
        }
    }
    // Traffic between two pods outside the namespace is not this render's business.
    admitted.retain(|(s, d)| {
        let inside = |n: &str| services.contains(n) || n == "consumer:litellm" || n == "other-pod";
        inside(s) || inside(d)
    });
    assert_eq!(
        admitted,
        expected,
        "admitted but not in the graph: {:?}\nin the graph but not admitted: {:?}",
        admitted.difference(&expected).collect::<Vec<_>>(),
        expected.difference(&admitted).collect::<Vec<_>>()
    );
    // The graph is not trivially small: 9 services × (litellm, edge, prometheus), 3 database
    // edges, 1 internet edge, 11 DNS edges (10 services + litellm... + other pod).
    assert!(expected.contains(&("memory".into(), "db".into())));
    assert!(!admitted.contains(&("fetch".into(), "db".into())));
    assert!(!admitted.contains(&("impostor".into(), "db".into())));
}

"""Checks behind scripts/deploy-check.sh (run with the venv's python, which has PyYAML).

  deploy_check.py compose CONFIG_YAML          # `docker-compose config` output: health checks, depends_on, roles
  deploy_check.py configs                      # deploy/ files parse; Prometheus scrapes every compose role
  deploy_check.py split RENDERED OUT_YAML      # drop KEDA ScaledObjects (no schema) before kubernetes-validate
  deploy_check.py k8s OVERLAY RENDERED         # what the overlay must hold (security, probes, secrets, scaling)
  deploy_check.py promql OUT_RULES             # every PromQL query (Grafana, KEDA) as a rule file for promtool

Each prints one summary line on success and exits 0, or prints the problems and exits 1.
"""

import json
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
METRICS_PORT = 9464
# compose service -> the `auroraq` arguments it must run.
COMPOSE_ROLES = {
    "connect-binance": ["connect", "binance"],
    "connect-feedly": ["connect", "feedly"],
    "score": ["score"],
    "fuse": ["fuse"],
    "agent-auroraq": ["agent", "--name", "auroraq"],
    "risk": ["risk"],
    "execute": ["execute"],
    "sink-postgres": ["sink", "postgres"],
    "sink-redis": ["sink", "redis"],
    "api": ["api"],
}
LAG_QUERY = 'sum(max by (partition) (auroraq_bus_pending_messages{group="sentiment"}))'


def done(problems, summary):
    if problems:
        for p in problems:
            print(p)
        sys.exit(1)
    print(summary)


def check_compose(path):
    cfg = yaml.safe_load(Path(path).read_text())
    services = cfg.get("services", {})
    problems = []
    for name, svc in services.items():
        hc = svc.get("healthcheck")
        if not hc or hc.get("disable") or not hc.get("test"):
            problems.append(f"service {name}: no health check")
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            problems.append(f"service {name}: depends_on without conditions")
        else:
            for dep, how in deps.items():
                if (how or {}).get("condition") != "service_healthy":
                    problems.append(f"service {name}: depends_on {dep} is not condition: service_healthy")
                if dep not in services:
                    problems.append(f"service {name}: depends_on unknown service {dep}")
    for role, args in COMPOSE_ROLES.items():
        svc = services.get(role)
        if svc is None:
            problems.append(f"role service {role} missing")
            continue
        if svc.get("command") != args:
            problems.append(f"service {role}: command {svc.get('command')} is not {args}")
        if "build" not in svc:
            problems.append(f"service {role}: not built from the Dockerfile (build: .)")
        env = svc.get("environment") or {}
        for key, want in [
            ("AURORAQ_BUS_URL", "nats://nats:4222"),
            ("AURORAQ_METRICS_LISTEN", f"0.0.0.0:{METRICS_PORT}"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector:4318"),
            ("AURORAQ_TRACING_ENABLED", "true"),
        ]:
            if env.get(key) != want:
                problems.append(f"service {role}: {key}={env.get(key)!r}, want {want!r}")
        if "nats" not in (svc.get("depends_on") or {}):
            problems.append(f"service {role}: does not wait for nats")
    roles = len([s for s in services if s in COMPOSE_ROLES])
    done(problems, f"{len(services)} services ({roles} AuroraQ roles), every one with a health check, "
                   f"every depends_on on service_healthy")


def check_configs():
    problems = []
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    scraped = set()
    for job in prom.get("scrape_configs", []):
        for sd in job.get("dns_sd_configs", []):
            if sd.get("port") == METRICS_PORT:
                scraped.update(sd.get("names", []))
    for role in COMPOSE_ROLES:
        if role not in scraped:
            problems.append(f"deploy/prometheus/prometheus.yml does not scrape {role}:{METRICS_PORT}")
    otel = yaml.safe_load((ROOT / "deploy/otel/collector.yaml").read_text())
    grpc = otel["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    http = otel["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    if not grpc.endswith(":4317") or not http.endswith(":4318"):
        problems.append("collector: OTLP must listen on 4317 (gRPC) and 4318 (HTTP)")
    traces = otel["service"]["pipelines"]["traces"]
    for e in traces["exporters"]:
        if e not in otel["exporters"]:
            problems.append(f"collector: exporter {e} is used but not defined")
    if not any(str(otel["exporters"][e].get("endpoint", "")).startswith("jaeger:") for e in traces["exporters"]):
        problems.append("collector: traces are not exported to jaeger")
    for r in traces["receivers"]:
        if r not in otel["receivers"]:
            problems.append(f"collector: receiver {r} is used but not defined")
    for p in traces.get("processors", []):
        if p not in otel["processors"]:
            problems.append(f"collector: processor {p} is used but not defined")
    ds = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/auroraq.yaml").read_text())
    uids = {d["uid"]: d["type"] for d in ds["datasources"]}
    if uids.get("auroraq-prometheus") != "prometheus":
        problems.append("grafana: no Prometheus data source auroraq-prometheus")
    if "grafana-postgresql-datasource" not in uids.values():
        problems.append("grafana: no PostgreSQL data source for dashboards/grafana/auroraq.json")
    yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/auroraq.yaml").read_text())
    json.loads((ROOT / "dashboards/grafana/auroraq.json").read_text())
    metrics_dashboards = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))
    for f in metrics_dashboards:
        for panel in json.loads(f.read_text()).get("panels", []):
            for t in panel.get("targets", []):
                uid = (t.get("datasource") or panel.get("datasource") or {}).get("uid", "")
                if uid not in uids:
                    problems.append(f"{f.name}: panel {panel.get('title')!r} uses unknown data source {uid!r}")
    dashboards = 1 + len(metrics_dashboards)
    # The cluster's configuration file uses only settings documented in auroraq.example.toml (the
    # binary refuses unknown keys at start).
    example = tomllib.loads((ROOT / "auroraq.example.toml").read_text())
    k8s_cfg = tomllib.loads((ROOT / "k8s/base/auroraq.toml").read_text())
    for section, keys in k8s_cfg.items():
        for key in keys:
            if key not in example.get(section, {}):
                problems.append(f"k8s/base/auroraq.toml: [{section}] {key} is not in auroraq.example.toml")
    done(problems, f"prometheus.yml scrapes all {len(COMPOSE_ROLES)} roles on :{METRICS_PORT}; collector "
                   f"OTLP 4317/4318 -> jaeger; {len(uids)} Grafana data sources; {dashboards} dashboards parse; "
                   f"k8s auroraq.toml keys known")


def load_docs(path):
    return [d for d in yaml.safe_load_all(Path(path).read_text()) if d]


def split(rendered, out):
    docs = load_docs(rendered)
    kept = [d for d in docs if d.get("kind") != "ScaledObject"]
    Path(out).write_text(yaml.safe_dump_all(kept, sort_keys=False))
    print(f"{len(kept)} {len(docs) - len(kept)}")


def container_problems(where, c, pod):
    problems = []
    sc = c.get("securityContext") or {}
    psc = pod.get("securityContext") or {}
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        problems.append(f"{where}: not runAsNonRoot")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: root filesystem not read-only")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation not false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        problems.append(f"{where}: capabilities not dropped (ALL)")
    res = c.get("resources") or {}
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(kind) or {}):
                problems.append(f"{where}: no {r} {kind}")
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    if ports.get("metrics") != METRICS_PORT:
        problems.append(f"{where}: no metrics port {METRICS_PORT}")
    for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
        get = ((c.get(probe) or {}).get("httpGet")) or {}
        if get.get("path") != path or get.get("port") not in ("metrics", METRICS_PORT):
            problems.append(f"{where}: {probe} is not GET {path} on the metrics port")
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    if "/tmp" not in mounts or "emptyDir" not in vols.get(mounts["/tmp"], {}):
        problems.append(f"{where}: /tmp is not an emptyDir")
    return problems


def check_k8s(overlay, rendered):
    docs = load_docs(rendered)
    problems = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    if by_kind.get("Secret"):
        problems.append("a Secret is rendered: secrets must be created in the cluster, never kept here")
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    services = {d["metadata"]["name"]: d for d in by_kind.get("Service", [])}
    pdbs = {d["metadata"]["name"] for d in by_kind.get("PodDisruptionBudget", [])}
    want_roles = [f"auroraq-{r}" for r in COMPOSE_ROLES]
    for name in want_roles:
        if name not in deployments:
            problems.append(f"Deployment {name} missing")
    for name, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        for c in pod["containers"]:
            problems += container_problems(f"Deployment {name} container {c['name']}", c, pod)
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref.get("name") != "auroraq-secrets":
                    problems.append(f"Deployment {name}: {e['name']} from Secret {ref.get('name')}, not auroraq-secrets")
                if "value" in e and any(s in e["name"] for s in ("PASSWORD", "TOKEN", "SECRET", "API_KEY")):
                    problems.append(f"Deployment {name}: {e['name']} is inlined, take it from auroraq-secrets")
        svc = services.get(name)
        if not svc or not any(p.get("port") == METRICS_PORT for p in svc["spec"].get("ports", [])):
            problems.append(f"Deployment {name}: no Service {name} with port {METRICS_PORT}")
        if name not in pdbs:
            problems.append(f"Deployment {name}: no PodDisruptionBudget")
    hpas = {d["spec"]["scaleTargetRef"]["name"]: d for d in by_kind.get("HorizontalPodAutoscaler", [])}
    scaled = {}
    for so in by_kind.get("ScaledObject", []):
        name = so["metadata"]["name"]
        if so.get("apiVersion") != "keda.sh/v1alpha1":
            problems.append(f"ScaledObject {name}: apiVersion {so.get('apiVersion')}")
        target = so["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            problems.append(f"ScaledObject {name}: targets unknown Deployment {target}")
        triggers = so["spec"].get("triggers") or []
        prom = [t for t in triggers if t.get("type") == "prometheus"]
        if not prom or prom[0]["metadata"].get("query") != LAG_QUERY:
            problems.append(f"ScaledObject {name}: no prometheus trigger on {LAG_QUERY}")
        if target in hpas:
            problems.append(f"Deployment {target}: both an HPA and a ScaledObject scale it")
        scaled[target] = so
    if "auroraq-score" not in hpas and "auroraq-score" not in scaled:
        problems.append("Deployment auroraq-score: neither an HPA nor a ScaledObject scales it")
    for target, hpa in hpas.items():
        if hpa["apiVersion"] != "autoscaling/v2":
            problems.append(f"HPA for {target}: apiVersion {hpa['apiVersion']}")
    gpu = deployments.get("auroraq-score-gpu")
    if overlay == "prod":
        if not gpu:
            problems.append("prod: no GPU sentiment workers (auroraq-score-gpu)")
        if "auroraq-score" not in scaled:
            problems.append("prod: CPU sentiment workers are not scaled on consumer lag (KEDA)")
    if gpu:
        c = gpu["spec"]["template"]["spec"]["containers"][0]
        if c.get("args") != ["score", "--device", "cuda"]:
            problems.append(f"auroraq-score-gpu: args {c.get('args')}")
        if str((c["resources"].get("limits") or {}).get("nvidia.com/gpu")) != "1":
            problems.append("auroraq-score-gpu: does not request nvidia.com/gpu: 1")
    kinds = ", ".join(f"{len(v)} {k}" for k, v in sorted(by_kind.items()))
    done(problems, f"{len(deployments)} Deployments non-root, read-only, probes on :{METRICS_PORT}, "
                   f"secrets from auroraq-secrets; scaling: {len(hpas)} HPA, {len(scaled)} ScaledObject ({kinds})")


def promql(out):
    """Writes every PromQL query of the Grafana dashboards and the KEDA ScaledObjects as recording
    rules, so that `promtool check rules` parses them ($__rate_interval becomes 5m)."""
    exprs = []
    for f in sorted((ROOT / "deploy/grafana/dashboards").glob("*.json")):
        for panel in json.loads(f.read_text()).get("panels", []):
            exprs += [t["expr"] for t in panel.get("targets", []) if t.get("expr")]
    for f in sorted((ROOT / "k8s").rglob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if d and d.get("kind") == "ScaledObject":
                exprs += [t["metadata"]["query"] for t in d["spec"]["triggers"] if t.get("type") == "prometheus"]
    rules = [{"record": f"auroraq:check:{i}", "expr": e.replace("$__rate_interval", "5m")} for i, e in enumerate(exprs)]
    Path(out).write_text(yaml.safe_dump({"groups": [{"name": "deploy-check", "rules": rules}]}, sort_keys=False))
    print(len(rules))


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"compose": check_compose, "configs": check_configs, "split": split, "k8s": check_k8s, "promql": promql}[cmd](*args)

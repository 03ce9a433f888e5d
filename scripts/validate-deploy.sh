#!/usr/bin/env bash
# Checks Herald's deployment files without a container engine or a cluster
# (called by scripts/test.sh; exits non-zero when anything fails):
#  1. docker-compose.yml against the Compose Specification's JSON schema
#     (check-jsonschema --builtin-schema vendor.compose-spec);
#  2. k8s/ and k8s/demo/ assembled by kustomize (its Go API, through the PyPI
#     package pykustomize), and every object against the Kubernetes API JSON
#     schemas of Kubernetes 1.29 and 1.37, strictly: unknown fields are errors
#     (kubernetes-validate);
#  3. the config files compose and k8s mount exist, are the files
#     scripts/cluster.sh uses (nats/*.conf, deploy/nginx/herald.conf), find
#     their includes, and agree on K (scripts/deploy_checks.py files);
#  4. nats-server -t on nats/herald.conf and nats/cluster.conf, and nginx -t
#     on deploy/nginx/herald.conf as scripts/cluster.sh assembles it;
#  5. the partition mapping on a real 3-server NATS cluster (nats-server
#     2.15.1): publishes to herald.events.<org>.<service>.<property> land on
#     ...<property>.<k> in partition k's stream, and herald.conf maps nothing
#     (scripts/deploy_checks.py mapping, with nats-py);
#  6. the Prometheus config and alert rules: promtool check config and check
#     rules, and the rules' unit tests (promtool test rules
#     deploy/prometheus/alerts.test.yml); the dashboard's queries are tested
#     against a real Prometheus by services/edge/tests/dashboard.rs.
# Installs what it needs: the Python packages into .tools/deploy-venv (PyPI),
# nats-server and promtool through scripts/setup.sh, and nginx with apt-get when missing
# and running as root. Writes only under .tools/ and a temporary directory.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

venv="$repo/.tools/deploy-venv"
# pykustomize declares Python >= 3.14 but runs on 3.9+ (a cffi binding of
# kustomize's Go library), so it is installed without that check.
requirements=(
    "check-jsonschema==0.39.0"
    "kubernetes-validate==1.37.0"
    "nats-py==2.16.0"
    "PyYAML==6.0.4"
    "cffi==2.1.1"
)
pykustomize="pykustomize==0.1.4"
k8s_versions=(1.29.0 1.37.0)

say() { echo "validate-deploy: $*"; }
die() { echo "validate-deploy: error: $*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------
"$repo/scripts/setup.sh" --test-tools >/dev/null
nats_bin="$repo/.tools/bin/nats-server"

stamp="$venv/.installed"
want="${requirements[*]} $pykustomize"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    command -v python3 >/dev/null 2>&1 || die "python3 is required"
    say "installing ${requirements[*]} $pykustomize into .tools/deploy-venv"
    rm -rf "$venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}" \
        || die "pip install ${requirements[*]} failed"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --ignore-requires-python "$pykustomize" \
        || die "pip install $pykustomize failed"
    echo "$want" >"$stamp"
fi
py="$venv/bin/python"

# shellcheck source=lib/nginx.sh
source "$repo/scripts/lib/nginx.sh"
find_nginx "nginx is required for nginx -t"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/herald-validate.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

failed=()
step() { echo; echo "--> $*"; }

# --- 1. compose --------------------------------------------------------------
step "docker-compose.yml against the compose-spec JSON schema"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml || failed+=("compose schema")

# --- 2. kubernetes -----------------------------------------------------------
step "kustomize build k8s/ and k8s/demo/, Kubernetes API schemas ${k8s_versions[*]} (strict)"
if "$py" scripts/deploy_checks.py kustomize k8s "$tmp/k8s.yaml" \
    && "$py" scripts/deploy_checks.py kustomize k8s/demo "$tmp/k8s-demo.yaml"; then
    for v in "${k8s_versions[@]}"; do
        "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "$tmp/k8s.yaml" "$tmp/k8s-demo.yaml" \
            && say "every object valid for Kubernetes $v" \
            || failed+=("k8s schemas $v")
    done
else
    failed+=("kustomize build")
fi

# --- 3. mounted files ----------------------------------------------------------
step "config files of compose, k8s and scripts/cluster.sh"
if [[ -f "$tmp/k8s.yaml" ]]; then
    "$py" scripts/deploy_checks.py files "$tmp/k8s.yaml" "$tmp/k8s-demo.yaml" || failed+=("config files")
else
    failed+=("config files (no kustomize build)")
fi

# --- 4. nats-server -t, nginx -t -------------------------------------------------
step "nats-server -t and nginx -t"
for conf in nats/herald.conf nats/cluster.conf; do
    HERALD_NATS_EDGE_PASSWORD=x HERALD_NATS_PUBLISHER_PASSWORD=y "$nats_bin" -t -c "$conf" || failed+=("nats-server -t $conf")
done
# As scripts/cluster.sh runs it: the repo's file inside a main config, with
# the two per-deployment includes beside that.
ng="$tmp/nginx"
mkdir -p "$ng/tmp"
printf 'server 127.0.0.1:1;\nserver 127.0.0.1:2;\n' >"$ng/herald-edges.conf"
echo 'listen 127.0.0.1:1;' >"$ng/herald-listen.conf"
cat >"$ng/nginx.conf" <<NGINX
pid $ng/nginx.pid;
events {}
http {
    access_log off;
    client_body_temp_path $ng/tmp/body;
    proxy_temp_path $ng/tmp/proxy;
    fastcgi_temp_path $ng/tmp/fastcgi;
    uwsgi_temp_path $ng/tmp/uwsgi;
    scgi_temp_path $ng/tmp/scgi;
    include $repo/deploy/nginx/herald.conf;
}
NGINX
"$nginx_bin" -t -q -p "$ng" -c "$ng/nginx.conf" -e stderr && say "nginx accepts deploy/nginx/herald.conf" \
    || failed+=("nginx -t")

# --- 5. the mapping on a real cluster --------------------------------------------
step "partition mapping on a real 3-server NATS cluster"
"$py" scripts/deploy_checks.py mapping "$nats_bin" || failed+=("NATS mapping")

# --- 6. alert rules --------------------------------------------------------------
step "Prometheus config and alert rules: promtool check config, check rules, test rules"
promtool="$repo/.tools/prometheus/promtool"
"$promtool" check config deploy/prometheus/prometheus.yml || failed+=("promtool check config")
"$promtool" check config deploy/prometheus/kubernetes.yml || failed+=("promtool check config (kubernetes)")
"$promtool" check rules deploy/prometheus/alerts.yml || failed+=("promtool check rules")
"$promtool" test rules deploy/prometheus/alerts.test.yml || failed+=("promtool test rules")

echo
if (( ${#failed[@]} )); then
    echo "validate-deploy: FAILED: ${failed[*]}"
    exit 1
fi
echo "validate-deploy: deployment files OK"

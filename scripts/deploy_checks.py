"""Checks of Herald's deployment files, run by scripts/validate-deploy.sh.

    deploy_checks.py kustomize DIR OUT   kustomize build of DIR (kustomize's Go
                                         API through pykustomize) into OUT
    deploy_checks.py files BUILT [MORE]  the config files docker-compose.yml and
                                         k8s/ (BUILT: kustomize build of k8s/;
                                         MORE: other builds) mount are those
                                         scripts/cluster.sh uses (plus, for
                                         compose, the observability stack's,
                                         checked here and by the tests named in
                                         OBSERVABILITY), exist, and find their
                                         includes; K agrees everywhere
    deploy_checks.py mapping NATS_SERVER the partition mapping of
                                         nats/cluster.conf on a real 3-server
                                         cluster, and no mapping in
                                         nats/herald.conf

Each prints what it checked and exits 1 on the first failure.
"""

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


# The observability stack's files docker-compose.yml mounts beside the
# topology's, and what exercises each (scripts/cluster.sh runs no
# Prometheus, Grafana or collector).
OBSERVABILITY = {
    "deploy/prometheus/prometheus.yml": "promtool check config; the dashboard test runs Prometheus with it",
    "deploy/prometheus/alerts.yml": "promtool check rules and test rules; loaded by the dashboard test",
    "deploy/prometheus/targets/herald-edges.json": "file_sd shape, names the compose edges (here)",
    "deploy/prometheus/targets/nats.json": "file_sd shape, names the compose NATS exporters (here)",
    "deploy/grafana/dashboards/herald.json": "every panel's query returns data in the dashboard test",
    "deploy/grafana/provisioning/datasources.yml": "names the compose Prometheus (here)",
    "deploy/grafana/provisioning/dashboards.yml": "reads the folder compose mounts the dashboard into (here)",
    "deploy/otel/collector.yaml": "its pipeline's parts are defined and export to the compose Jaeger (here)",
}


class CheckFailed(Exception):
    """A check found the deployment files wrong."""


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def rel(path):
    """`path` relative to the repo, as a string."""
    return str(Path(path).resolve().relative_to(REPO))


# --- kustomize ---------------------------------------------------------------


def kustomize(directory, out):
    import pykustomize

    result = asyncio.run(pykustomize.build(str(directory)))
    Path(out).write_text(result.yaml)
    kinds = [d["kind"] for d in yaml.safe_load_all(result.yaml) if d]
    print(f"kustomize build {rel(directory)}: {len(kinds)} objects ({', '.join(kinds)})")


# --- files -------------------------------------------------------------------


def nats_includes(text):
    """The files a NATS config includes (`include ./x.conf`), as names."""
    return re.findall(r"^\s*include\s+\.?/?([^\s#;]+)", text, re.M)


def nginx_includes(text):
    """The files an nginx config includes, relative to nginx's config dir."""
    return re.findall(r"^\s*include\s+([^\s;]+);", text, re.M)


def partitions_k():
    text = (REPO / "nats/partitions.conf").read_text()
    found = re.findall(r"\{\{partition\((\d+),1\)\}\}", text)
    check(len(found) == 1, "nats/partitions.conf: expected one {{partition(K,1)}} mapping")
    return int(found[0])


def cluster_sh_files():
    out = subprocess.run(
        [str(REPO / "scripts/cluster.sh"), "--config-files"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    for f in out:
        check((REPO / f).is_file(), f"scripts/cluster.sh uses {f}, which does not exist")
    return set(out)


def compose_files(cluster_files):
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    configs = compose.get("configs", {})
    services = compose["services"]

    # Every bind mount and config file exists.
    for name, config in configs.items():
        if "file" in config:
            check((REPO / config["file"]).is_file(),
                  f"docker-compose.yml: config {name}: {config['file']} does not exist")
    for sname, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")):
                check((REPO / source).exists(),
                      f"docker-compose.yml: {sname} mounts {source}, which does not exist")

    # Files mounted from the repo, per service: target -> repo file or None (inline).
    mounted = {}
    for sname, service in services.items():
        targets = {}
        for ref in service.get("configs", []):
            ref = {"source": ref} if isinstance(ref, str) else ref
            config = configs[ref["source"]]
            target = ref.get("target", "/" + ref["source"])
            targets[target] = rel(REPO / config["file"]) if "file" in config else None
        mounted[sname] = targets
    repo_files = {f for targets in mounted.values() for f in targets.values() if f}
    topology_files = repo_files - set(OBSERVABILITY)
    check(topology_files == cluster_files,
          "docker-compose.yml mounts " + ", ".join(sorted(topology_files))
          + " but scripts/cluster.sh uses " + ", ".join(sorted(cluster_files)))
    observability(services, mounted)

    # Each NATS server loads cluster.conf, and its includes sit beside it.
    nats_services = [s for s in services if re.fullmatch(r"nats-\d+", s)]
    check(len(nats_services) == 3, f"docker-compose.yml: expected 3 NATS servers, got {nats_services}")
    names = set()
    for sname in nats_services:
        command = services[sname]["command"]
        config = command[command.index("-c") + 1]
        targets = mounted[sname]
        check(targets.get(config) == "nats/cluster.conf",
              f"docker-compose.yml: {sname} loads {config}, which is not nats/cluster.conf")
        for target, source in targets.items():
            for inc in nats_includes((REPO / source).read_text()):
                want = str(Path(target).parent / inc)
                check(targets.get(want) == rel(REPO / Path(source).parent / inc),
                      f"docker-compose.yml: {sname}: {target} includes {inc}, not mounted at {want}")
        names.add(command[command.index("--server_name") + 1])
    check(len(names) == 3, "docker-compose.yml: the NATS servers need distinct --server_name")

    # nginx: the Herald config, and what it includes from /etc/nginx.
    targets = mounted["nginx"]
    herald = [t for t, s in targets.items() if s == "deploy/nginx/herald.conf"]
    check(herald, "docker-compose.yml: nginx does not mount deploy/nginx/herald.conf")
    for inc in nginx_includes((REPO / "deploy/nginx/herald.conf").read_text()):
        check(f"/etc/nginx/{inc}" in targets,
              f"docker-compose.yml: nginx: deploy/nginx/herald.conf includes {inc}, not mounted")

    # K: the edges' HERALD_PARTITIONS (and anyone else's who sets it).
    k = partitions_k()
    for sname, service in services.items():
        env = service.get("environment", {})
        if sname.startswith("edge") or "HERALD_PARTITIONS" in env:
            check(str(env.get("HERALD_PARTITIONS")) == str(k),
                  f"docker-compose.yml: {sname} has HERALD_PARTITIONS={env.get('HERALD_PARTITIONS')}, "
                  f"nats/partitions.conf has K={k}")
    print("docker-compose.yml: mounts " + ", ".join(sorted(repo_files))
          + f", the files of scripts/cluster.sh; includes resolve; 3 NATS servers; edges at K={k}")


def observability(services, mounted):
    """The observability stack of docker-compose.yml: every file of
    OBSERVABILITY mounted, and each pointing at the services that exist."""
    mounted_files = {f for targets in mounted.values() for f in targets.values() if f}
    for f in OBSERVABILITY:
        check(f in mounted_files, f"docker-compose.yml does not mount {f}")
    # Prometheus targets: file_sd lists naming compose services and ports.
    for f, prefix in [("deploy/prometheus/targets/herald-edges.json", "edge-"),
                      ("deploy/prometheus/targets/nats.json", "nats-exporter-")]:
        groups = json.loads((REPO / f).read_text())
        check(isinstance(groups, list) and groups, f"{f}: a non-empty list of target groups")
        for group in groups:
            for target in group["targets"]:
                host = target.rsplit(":", 1)[0]
                check(host.startswith(prefix) and host in services,
                      f"{f}: {target} is not a docker-compose.yml service")
    prom = mounted["prometheus"]
    for name in ["targets/herald-edges.json", "targets/nats.json", "alerts.yml"]:
        check(f"/etc/prometheus/{name}" in prom, f"docker-compose.yml: prometheus lacks /etc/prometheus/{name}")
    # Grafana: the data source is the compose Prometheus, the dashboard
    # folder is where compose mounts the dashboard.
    ds = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources.yml").read_text())
    url = ds["datasources"][0]["url"]
    check(url == "http://prometheus:9090" and "prometheus" in services,
          f"deploy/grafana/provisioning/datasources.yml: {url} is not the compose Prometheus")
    dash = yaml.safe_load((REPO / "deploy/grafana/provisioning/dashboards.yml").read_text())
    folder = dash["providers"][0]["options"]["path"]
    graf = mounted["grafana"]
    check(graf.get(f"{folder}/herald.json") == "deploy/grafana/dashboards/herald.json",
          f"docker-compose.yml: grafana does not mount the dashboard into {folder}")
    # Collector: every pipeline part is defined, traces go to the compose Jaeger.
    otel = yaml.safe_load((REPO / "deploy/otel/collector.yaml").read_text())
    for name, pipeline in otel["service"]["pipelines"].items():
        for kind in ["receivers", "processors", "exporters"]:
            for part in pipeline.get(kind, []):
                check(part in otel.get(kind, {}),
                      f"deploy/otel/collector.yaml: pipeline {name} uses undefined {kind[:-1]} {part}")
    endpoint = otel["exporters"]["otlp/jaeger"]["endpoint"]
    check(endpoint.split(":")[0] in services,
          f"deploy/otel/collector.yaml: exports to {endpoint}, not a compose service")
    edge_env = services["edge-1"].get("environment", {})
    want = "http://otel-collector:4317"
    check(edge_env.get("OTEL_EXPORTER_OTLP_ENDPOINT") == want and "otel-collector" in services,
          f"docker-compose.yml: the edges do not export traces to {want}")
    print("docker-compose.yml: observability stack mounts " + ", ".join(sorted(OBSERVABILITY))
          + "; targets, data source, dashboard folder and trace pipeline point at compose services")


def k8s_partitions(docs, k):
    """Every HERALD_PARTITIONS set in the manifests (ConfigMap data, container env) is K."""
    for d in docs:
        name = f"{d['kind']} {d['metadata']['name']}"
        if d["kind"] == "ConfigMap" and "HERALD_PARTITIONS" in d.get("data", {}):
            check(d["data"]["HERALD_PARTITIONS"] == str(k),
                  f"k8s: {name} has HERALD_PARTITIONS={d['data']['HERALD_PARTITIONS']}, "
                  f"nats/partitions.conf has K={k}")
        pod = d.get("spec", {}).get("template", {}).get("spec", {})
        for c in pod.get("containers", []):
            for e in c.get("env", []):
                if e["name"] == "HERALD_PARTITIONS":
                    check(e.get("value") == str(k),
                          f"k8s: {name} has HERALD_PARTITIONS={e.get('value')}, nats/partitions.conf has K={k}")


def k8s_files(built, extra, cluster_files):
    docs = [d for d in yaml.safe_load_all(Path(built).read_text()) if d]
    for path in extra:
        k8s_partitions([d for d in yaml.safe_load_all(Path(path).read_text()) if d], partitions_k())

    # Every manifest in k8s/ is assembled by a kustomization.
    listed = set()
    for kfile in [REPO / "k8s/kustomization.yaml", *sorted((REPO / "k8s").glob("*/kustomization.yaml"))]:
        for res in yaml.safe_load(kfile.read_text()).get("resources", []):
            listed.add((kfile.parent / res).resolve())
    for manifest in sorted((REPO / "k8s").rglob("*.yaml")):
        if manifest.name != "kustomization.yaml":
            check(manifest.resolve() in listed, f"{rel(manifest)} is in no kustomization's resources")

    # The NATS ConfigMap is generated from the repo's files, the ones cluster.sh uses.
    gen = yaml.safe_load((REPO / "nats/kustomization.yaml").read_text())["configMapGenerator"]
    generated = {rel(REPO / "nats" / f) for g in gen for f in g["files"]}
    nats_cluster_files = {f for f in cluster_files if f.startswith("nats/")}
    check(generated == nats_cluster_files,
          "nats/kustomization.yaml generates the ConfigMap from " + ", ".join(sorted(generated))
          + " but scripts/cluster.sh uses " + ", ".join(sorted(nats_cluster_files)))

    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    configmaps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    sts = [d for d in by_kind.get("StatefulSet", []) if d["metadata"]["name"] == "nats"]
    check(len(sts) == 1, "k8s: no StatefulSet nats")
    spec = sts[0]["spec"]
    check(spec["replicas"] == 3, "k8s: the NATS StatefulSet should have 3 replicas")
    pod = spec["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "nats")
    args = dict(a.lstrip("-").split("=", 1) for a in container["args"])
    config_path = Path(args["config"])
    mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == config_path.parent)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    cm_name = volume["configMap"]["name"]
    check(cm_name in configmaps, f"k8s: the NATS servers mount ConfigMap {cm_name}, which the build lacks")
    data = configmaps[cm_name]["data"]
    check(data.get(config_path.name) == (REPO / "nats/cluster.conf").read_text(),
          f"k8s: {config_path} is not nats/cluster.conf")
    for key, text in data.items():
        check(text == (REPO / "nats" / key).read_text(), f"k8s: ConfigMap key {key} differs from nats/{key}")
        for inc in nats_includes(text):
            check(inc in data, f"k8s: nats/{key} includes {inc}, which is not in the ConfigMap")
    check(args.get("server_name") == "$(POD_NAME)", "k8s: each NATS server needs --server_name=$(POD_NAME)")

    k = partitions_k()
    check("HERALD_PARTITIONS" in configmaps["herald-edge-config"]["data"],
          "k8s: herald-edge-config lacks HERALD_PARTITIONS")
    k8s_partitions(docs, k)
    ingress = by_kind.get("Ingress", [])
    check(ingress and ingress[0]["metadata"]["annotations"].get(
        "nginx.ingress.kubernetes.io/upstream-hash-by") == "$arg_org",
        "k8s: the Ingress must hash on $arg_org")
    print(f"k8s: ConfigMap {cm_name} holds nats/{', nats/'.join(sorted(data))} verbatim (the files of "
          f"scripts/cluster.sh), the NATS servers load {config_path}; edges at K={k}; Ingress hashes on $arg_org")
    k8s_observability(by_kind, configmaps)


def k8s_observability(by_kind, configmaps):
    """The observability stack of k8s/: its ConfigMaps hold the repo's files
    verbatim, and discovery, data source and trace export point at objects
    the build has."""
    want = {
        "prometheus-config": {"prometheus.yml": "deploy/prometheus/kubernetes.yml",
                              "alerts.yml": "deploy/prometheus/alerts.yml"},
        "grafana-provisioning": {"datasources.yml": "deploy/grafana/provisioning/datasources.yml",
                                 "dashboards.yml": "deploy/grafana/provisioning/dashboards.yml"},
        "grafana-dashboards": {"herald.json": "deploy/grafana/dashboards/herald.json"},
        "otel-collector-config": {"collector.yaml": "deploy/otel/collector.yaml"},
    }
    for cm, keys in want.items():
        # Generated ConfigMaps carry a hash of their content in the name.
        found = [d for name, d in configmaps.items() if re.fullmatch(re.escape(cm) + r"(-[a-z0-9]+)?", name)]
        check(len(found) == 1, f"k8s: no ConfigMap {cm}")
        for key, f in keys.items():
            check(found[0]["data"].get(key) == (REPO / f).read_text(),
                  f"k8s: ConfigMap {cm} key {key} is not {f}")
    services = {d["metadata"]["name"]: d for d in by_kind.get("Service", [])}
    # Prometheus finds the pods through SRV records of named Service ports.
    prom = yaml.safe_load((REPO / "deploy/prometheus/kubernetes.yml").read_text())
    for job in prom["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                port, _proto, svc, ns = name.split(".")[:4]
                service = services.get(svc)
                check(service is not None and ns == "herald",
                      f"deploy/prometheus/kubernetes.yml: {name} names no Service of the namespace herald")
                check(service["spec"].get("clusterIP") == "None",
                      f"k8s: Service {svc} must be headless (one SRV record per pod)")
                check(any(p["name"] == port.lstrip("_") for p in service["spec"]["ports"]),
                      f"k8s: Service {svc} has no port named {port.lstrip('_')}")
    ds = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources.yml").read_text())
    host, port = ds["datasources"][0]["url"].split("//")[1].split(":")
    check(host in services and any(p["port"] == int(port) for p in services[host]["spec"]["ports"]),
          f"k8s: Grafana's data source {host}:{port} is no Service of the build")
    otel = yaml.safe_load((REPO / "deploy/otel/collector.yaml").read_text())
    host = otel["exporters"]["otlp/jaeger"]["endpoint"].split(":")[0]
    check(host in services, f"k8s: the collector exports to {host}, no Service of the build")
    endpoint = configmaps["herald-edge-config"]["data"].get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    host = endpoint.split("//")[-1].split(":")[0]
    check(host in services, f"k8s: the edges export traces to {endpoint!r}, no Service of the build")
    print("k8s: the observability stack's ConfigMaps hold deploy/prometheus, deploy/grafana and "
          "deploy/otel verbatim; scrape discovery, data source and trace export point at its Services")


def cluster_sh_k():
    text = (REPO / "scripts/cluster.sh").read_text()
    found = re.findall(r'HERALD_CLUSTER_PARTITIONS:-(\d+)', text)
    check(found and int(found[0]) == partitions_k(),
          f"scripts/cluster.sh's default K ({found}) differs from nats/partitions.conf's")


def files(built, extra):
    cluster_files = cluster_sh_files()
    compose_files(cluster_files)
    k8s_files(built, extra, cluster_files)
    cluster_sh_k()


# --- mapping -----------------------------------------------------------------

EDGE = ("edge", "validate-edge-password")
PUBLISHER = ("publisher", "validate-publisher-password")
ORGS = [f"org-{i}" for i in range(32)] + ["acme-hotels", "globex-resorts", "initech-inns"]


def fnv1a32(data):
    """FNV-1a, 32 bits: the hash of NATS's partition() (and of herald-proto's Partitions::of)."""
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_healthy(monitor_ports, procs, deadline):
    for port in monitor_ports:
        while True:
            for p in procs:
                check(p.poll() is None, f"nats-server (pid {p.pid}) exited during startup")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            check(time.monotonic() < deadline, f"nats-server on monitoring port {port} not healthy in time")
            time.sleep(0.2)


def start_servers(nats_server, config, n, workdir):
    """n servers loading `config`: a cluster when n > 1. Returns (procs, client ports)."""
    env = dict(os.environ, HERALD_NATS_EDGE_PASSWORD=EDGE[1], HERALD_NATS_PUBLISHER_PASSWORD=PUBLISHER[1])
    ports = free_ports(3 * n)
    client, route, monitor = ports[:n], ports[n:2 * n], ports[2 * n:]
    routes = ",".join(f"nats://127.0.0.1:{p}" for p in route)
    procs = []
    for i in range(n):
        args = [nats_server, "-c", str(config), "--server_name", f"validate-{i}", "-a", "127.0.0.1",
                "-p", str(client[i]), "-m", str(monitor[i]), "-sd", str(workdir / f"store-{i}")]
        if n > 1:
            args += ["--cluster", f"nats://127.0.0.1:{route[i]}", "--routes", routes]
        else:
            args += ["-js"]
        log = open(workdir / f"nats-{i}.log", "w")
        procs.append(subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        wait_healthy(monitor, procs, time.monotonic() + 60)
    except CheckFailed:
        stop(procs)
        for i in range(n):
            print((workdir / f"nats-{i}.log").read_text()[-3000:], file=sys.stderr)
        raise
    return procs, client


def stop(procs):
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def retried(what, call, deadline):
    """`call()` again while JetStream answers with a timeout or "unavailable"
    (a fresh cluster elects its meta and stream leaders after /healthz is
    green), until `deadline`."""
    import nats.errors
    import nats.js.errors

    while True:
        try:
            return await call()
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError) as e:
            check(time.monotonic() < deadline, f"{what}: JetStream did not answer in time ({e!r})")
            await asyncio.sleep(0.2)


async def subscribed(conn, subject):
    """A subscription to `subject` the server has registered: flush() alone does
    not prove that, so a probe under the subject is published (no stream
    exists yet to store it) until it comes back."""
    sub = await conn.subscribe(subject)
    probe = subject.replace(">", "probe.validate.p1")
    deadline = time.monotonic() + 10
    while True:
        await conn.publish(probe, b"probe")
        try:
            await sub.next_msg(timeout=0.2)
            break
        except asyncio.TimeoutError:
            check(time.monotonic() < deadline, f"the subscription to {subject} never received its probe")
    while sub.pending_msgs:
        await sub.next_msg(timeout=1)
    return sub


async def publish_all(url, k, replicas):
    """Publishes one event per org as `publisher`; returns {org: (subject seen by the edge, ack stream)}."""
    import nats
    from nats.js.api import StreamConfig

    errors = []

    async def on_error(e):
        errors.append(str(e))

    deadline = time.monotonic() + 60
    edge = await nats.connect(url, user=EDGE[0], password=EDGE[1], connect_timeout=5)
    pub = await nats.connect(url, user=PUBLISHER[0], password=PUBLISHER[1], error_cb=on_error,
                             connect_timeout=5)
    try:
        sub = await subscribed(edge, "herald.events.>")
        js = edge.jetstream(timeout=5)
        if k > 1:
            configs = [StreamConfig(name=f"VALIDATE_{i}", subjects=[f"herald.events.*.*.*.{i}"],
                                    num_replicas=replicas) for i in range(k)]
        else:
            configs = [StreamConfig(name="VALIDATE", subjects=["herald.events.>"], num_replicas=replicas)]
        for config in configs:
            await retried(f"add stream {config.name}", lambda c=config: js.add_stream(c), deadline)
        pjs = pub.jetstream(timeout=5)
        acks = {}
        for org in ORGS:
            # A retried publish carries the same message id: stored once.
            ack = await retried(f"publish for {org}", lambda o=org: pjs.publish(
                f"herald.events.{o}.finance.p1", b'{"eventType":"validate"}',
                headers={"Nats-Msg-Id": f"validate-{o}"}), deadline)
            acks[org] = ack.stream
        seen = {}
        while len(seen) < len(ORGS):
            try:
                msg = await sub.next_msg(timeout=5)
            except asyncio.TimeoutError:
                check(False, f"no message seen for {[o for o in ORGS if o not in seen]}")
            org = msg.subject.split(".")[2]
            if org in acks:
                seen[org] = msg.subject
        # The account is redefined in cluster.conf: the publisher must still be
        # confined to herald.events.> (and _INBOX.>).
        await pub.subscribe("herald.live.>")
        await pub.flush()
        await asyncio.sleep(0.5)
        check(any("permissions violation" in e.lower() for e in errors),
              f"the publisher may subscribe to herald.live.> (errors: {errors})")
        return {org: (seen.get(org), acks[org]) for org in ORGS}
    finally:
        await pub.close()
        await edge.close()


def mapping(nats_server):
    k = partitions_k()
    with tempfile.TemporaryDirectory(prefix="herald-validate-") as tmp:
        tmp = Path(tmp)
        procs, client = start_servers(nats_server, REPO / "nats/cluster.conf", 3, tmp)
        try:
            url = ",".join(f"nats://127.0.0.1:{p}" for p in client)
            # Publish through one server, as `nats pub` would.
            result = asyncio.run(publish_all(f"nats://127.0.0.1:{client[1]}", k, 3))
        finally:
            stop(procs)
        used = set()
        for org, (subject, stream) in result.items():
            check(subject is not None, f"cluster.conf: no message seen for org {org}")
            tokens = subject.split(".")
            check(len(tokens) == 6 and tokens[:5] == ["herald", "events", org, "finance", "p1"],
                  f"cluster.conf: herald.events.{org}.finance.p1 arrived as {subject}")
            part = int(tokens[5])
            check(0 <= part < k, f"cluster.conf: partition {part} of {org} is outside 0..{k - 1}")
            check(stream == f"VALIDATE_{part}", f"cluster.conf: {subject} was stored in {stream}")
            check(part == fnv1a32(org.encode()) % k,
                  f"cluster.conf: {org} went to partition {part}, the edges expect {fnv1a32(org.encode()) % k}")
            used.add(part)
        check(used == set(range(k)), f"cluster.conf: {len(ORGS)} orgs used only partitions {sorted(used)}")
        sample = ", ".join(f"{o} -> .{result[o][0].split('.')[5]}" for o in ORGS[-3:])
        print(f"nats/cluster.conf on a 3-server cluster ({url}): herald.events.<org>.finance.p1 published "
              f"as `publisher` lands on herald.events.<org>.finance.p1.<k> in the stream of partition k "
              f"(k = FNV-1a(org) mod {k}, as the edges compute it), all {k} partitions used by {len(ORGS)} orgs ({sample}); publisher still confined")

    with tempfile.TemporaryDirectory(prefix="herald-validate-") as tmp:
        tmp = Path(tmp)
        procs, client = start_servers(nats_server, REPO / "nats/herald.conf", 1, tmp)
        try:
            result = asyncio.run(publish_all(f"nats://127.0.0.1:{client[0]}", 1, 1))
        finally:
            stop(procs)
        for org, (subject, stream) in result.items():
            check(subject == f"herald.events.{org}.finance.p1", f"herald.conf: {org}'s event arrived as {subject}")
        print("nats/herald.conf (single server, K=1): subjects unchanged, no mapping; publisher confined")


def main(argv):
    try:
        if argv[:1] == ["kustomize"] and len(argv) == 3:
            kustomize(Path(argv[1]), argv[2])
        elif argv[:1] == ["files"] and len(argv) >= 2:
            files(argv[1], argv[2:])
        elif argv[:1] == ["mapping"] and len(argv) == 2:
            mapping(argv[1])
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

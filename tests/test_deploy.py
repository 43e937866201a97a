"""deploy/ agrees with itself and with frontdesk's settings.

No container engine runs here, so these tests read the files: the compose file (written in the
JSON subset of YAML, so the standard library parses it), the shared settings file and environment
(loaded with frontdesk's own loader, so an unknown key or a bad value fails here as it would in
the containers), the proxy's Caddyfile and the replica set's init script; and they check that the
pieces point at each other: store URL and replica set, proxy and receivers, rate limiters and sandbox.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from frontdesk.protocol import config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
CONTAINER_CONFIG = "/etc/frontdesk/frontdesk.toml"
FRONTDESK_ROLES = {"receiver", "dispatcher", "sandbox", "bench"}


@pytest.fixture(scope="module")
def services() -> dict:
    return json.loads((DEPLOY / "compose.yaml").read_text())["services"]


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; # comments and blank lines skipped (compose's env_file format)."""
    pairs = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}:{number}: not KEY=VALUE: {line!r}"
            pairs[key.strip()] = value
    return pairs


def frontdesk_services(services: dict) -> dict[str, dict]:
    return {name: s for name, s in services.items() if s.get("image") == "frontdesk:local"}


def container_env(service: dict) -> dict[str, str]:
    env = {}
    for name in service.get("env_file", []):
        env.update(read_env_file(DEPLOY / name))
    env.update(service.get("environment", {}))
    return env


def settings_of(service: dict) -> config.Settings:
    """What frontdesk itself resolves in that container (the settings file mounted where
    FRONTDESK_CONFIG says)."""
    env = container_env(service)
    assert env.get("FRONTDESK_CONFIG") == CONTAINER_CONFIG
    assert f"./frontdesk.toml:{CONTAINER_CONFIG}:ro" in service["volumes"]
    return config.load(environ={**env, "FRONTDESK_CONFIG": str(DEPLOY / "frontdesk.toml")})


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def test_the_compose_file_starts_the_scale_out_the_readme_describes(services):
    roles = sorted(s.get("command", ["?"])[0] for s in frontdesk_services(services).values())
    assert roles == ["bench", "dispatcher", "dispatcher", "receiver", "receiver", "sandbox"]
    assert sorted(n for n, s in services.items() if s.get("image", "").startswith("mongo:")) == \
        ["mongo-1", "mongo-2", "mongo-3", "mongo-init"]
    assert services["proxy"]["image"].startswith("caddy:")
    assert services["bench"]["profiles"] == ["bench"]      # run on demand, not by `up`
    for service in frontdesk_services(services).values():
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert (DEPLOY / "Dockerfile").exists() and 'ENTRYPOINT ["frontdesk"]' in (DEPLOY / "Dockerfile").read_text()


def test_every_frontdesk_variable_and_setting_is_one_frontdesk_config_knows(services):
    known = {knob.env_name for knob in config.KNOBS} | {"FRONTDESK_CONFIG"}
    for name, service in frontdesk_services(services).items():
        unknown = {v for v in container_env(service) if v.startswith(("FRONTDESK_", "LINE_"))} - known
        assert not unknown, f"{name}: not frontdesk settings: {unknown}"
        settings_of(service)   # raises ConfigError naming a bad key or value


def test_the_store_is_the_three_member_replica_set_that_mongo_init_initiates(services):
    store = urlsplit(settings_of(services["dispatcher-1"]).store)
    assert store.scheme == "mongodb"
    hosts = store.netloc.split(",")
    replica_set = parse_qs(store.query)["replicaSet"]
    members = [name for name in services if re.fullmatch(r"mongo-\d", name)]
    assert hosts == [f"{name}:27017" for name in members]
    for name in members:
        command = services[name]["command"]
        assert command[:1] == ["mongod"] and command[command.index("--replSet") + 1:][:1] == replica_set
    init = (DEPLOY / "mongo-init.js").read_text()
    assert json.loads(re.search(r"const members = (\[.*?\]);", init).group(1)) == hosts
    assert f'_id: "{replica_set[0]}"' in init
    assert services["mongo-init"]["command"][-1] == "/deploy/mongo-init.js"
    for name in ("receiver-1", "receiver-2", "dispatcher-1", "dispatcher-2"):
        assert services[name]["depends_on"]["mongo-init"] == {"condition": "service_completed_successfully"}


def test_the_proxy_terminates_tls_and_balances_the_two_receivers(services):
    caddyfile = (DEPLOY / "Caddyfile").read_text()
    site = re.search(r"^(\S.*?)\s*\{\s*$\s*tls internal", caddyfile, re.M)
    assert site, "a site block with `tls internal`"
    site_ports = {host_port(address.strip())[1] for address in site.group(1).split(",")}
    upstreams = re.search(r"reverse_proxy ([^{\n]+)", caddyfile).group(1).split()
    receivers = {name: settings_of(s) for name, s in services.items() if s.get("command") == ["receiver"]}
    assert sorted(upstreams) == sorted(f"{name}:{host_port(s.listen)[1]}" for name, s in receivers.items())
    assert all(host_port(s.listen)[0] == "0.0.0.0" for s in receivers.values())
    published = {int(p.rsplit(":", 1)[1]) for p in services["proxy"]["ports"]}
    assert published == site_ports == {8443}
    bench = services["bench"]["command"]
    callback = urlsplit(bench[bench.index("--url") + 1])
    assert (callback.scheme, callback.hostname, callback.port) == ("https", "proxy", 8443)
    assert callback.path == settings_of(services["bench"]).callback_path
    assert "caddy-data:/data" in services["proxy"]["volumes"]
    assert services["bench"]["environment"]["SSL_CERT_FILE"].startswith("/caddy-data/caddy/pki/")


def test_the_rate_limiters_call_the_sandbox_with_the_credentials_it_accepts_and_share_one_budget(services):
    sandbox = settings_of(services["sandbox"])
    sandbox_host, sandbox_port = host_port(sandbox.sandbox_listen)
    assert sandbox_host == "0.0.0.0"
    receiver = settings_of(services["receiver-1"])
    for name in ("dispatcher-1", "dispatcher-2"):
        dispatcher = settings_of(services[name])
        for base in (dispatcher.api_base, dispatcher.api_data_base):
            assert (urlsplit(base).hostname, urlsplit(base).port) == ("sandbox", sandbox_port)
        assert dispatcher.channel_access_token == sandbox.channel_access_token
        assert dispatcher.shared_rate_budget and dispatcher.rate_limits == sandbox.sandbox_rate_limits
    assert receiver.channel_secret == sandbox.channel_secret
    bench = services["bench"]["command"]
    assert urlsplit(bench[bench.index("--sandbox-url") + 1]).port == sandbox_port

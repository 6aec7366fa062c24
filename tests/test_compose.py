"""compose.yaml: every container's command is one this tool accepts, the web app listens where
its published port points (over TLS, as `serve --public` demands), and the environment the
containers share is read by the configuration. No Docker is needed: the file is parsed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from monitor.cli import _parser
from monitor.config import load_settings
from monitor.web.serve import check_bind

yaml = pytest.importorskip("yaml", reason="PyYAML reads compose.yaml (in the test extra)")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "compose.yaml").read_text())


def ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if s.get("image") == "exposure-monitor"}


def test_every_container_runs_a_command_this_tool_accepts(compose: dict[str, Any]) -> None:
    services = ours(compose)
    assert {"scheduler", "web", "fetch-worker", "hash-worker"} <= set(services)
    for name, service in services.items():
        try:
            _parser().parse_args(service["command"])
        except SystemExit:  # argparse's way of refusing
            pytest.fail(f"{name}: `run_monitor.py {' '.join(service['command'])}` is refused")


def test_the_web_app_listens_where_its_published_port_points(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    web = ours(compose)["web"]
    args = _parser().parse_args(web["command"])
    # inside its container loopback is not reachable from the published port
    assert args.host in ("0.0.0.0", "::")
    published = [str(p).split(":")[-1] for p in web["ports"]]
    assert published == [str(args.port)]
    assert all(str(p).startswith("127.0.0.1:") for p in web["ports"])  # this host only
    assert args.no_scheduler  # the `scheduler` container schedules
    secrets = set(web["secrets"])
    for path in (args.cert, args.key):
        assert path.startswith("/run/secrets/") and path.rsplit("/", 1)[1] in secrets
        assert path.rsplit("/", 1)[1] in compose["secrets"]
    # what `serve` checks before it listens: with the secrets in place, it is allowed
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("x")
    key.write_text("x")
    plan = check_bind(args.host, args.port, public=args.public, cert=str(cert), key=str(key))
    assert plan.url.startswith("https://")


def test_the_shared_environment_is_read_by_the_configuration(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = dict(ours(compose)["scheduler"]["environment"])
    assert env.pop("MONITOR_CONFIG") == "/config/monitor.toml"  # mounted from ./config
    for name, value in env.items():
        monkeypatch.setenv(name, re.sub(r"\$\{[^}]*\}", "secret", str(value)))
    monkeypatch.delenv("MONITOR_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no config/monitor.toml here
    settings = load_settings(None)
    assert settings.database_url == "postgresql+psycopg://monitor:secret@postgres:5432/monitor"
    assert str(settings.key_path) == "/run/secrets/reference_key"
    assert settings.queue.enabled and settings.queue.broker_url == "redis://redis:6379/0"
    # every container shares it (YAML anchors), and the reference key reaches all of them
    for name, service in ours(compose).items():
        assert "MONITOR_DATABASE__KEY_FILE" in service["environment"], name
        assert "reference_key" in service["secrets"], name

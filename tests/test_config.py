"""Configuration: file, environment, defaults, and readable errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from monitor.config import load_settings, parse_duration
from monitor.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.sqlite_default
def test_defaults_without_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no config/monitor.toml here
    s = load_settings()
    assert s.database_url == f"sqlite:///{tmp_path / 'default-data' / 'monitor.db'}"
    assert s.fetch.allow_private_networks is False
    assert s.mail.smtp_host == "" and s.outbox_dir == tmp_path / "default-data" / "outbox"
    assert (s.match.pdq_threshold, s.match.phash_threshold) == (70, 10)


def test_example_file_documents_every_key_and_loads() -> None:
    s = load_settings(REPO / "config" / "monitor.example.toml")
    assert s.search.backends[0].kind == "searxng"
    text = (REPO / "config" / "monitor.example.toml").read_text()
    for section in ("database", "search", "fetch", "match", "mail", "schedule", "cases", "queue"):
        model = type(getattr(s, section))
        for key in model.model_fields:
            if key != "backends":
                assert f"{key} =" in text, f"[{section}] {key} is not documented"
    for key in type(s.search.backends[0]).model_fields:
        assert f"{key} =" in text, f"[[search.backends]] {key} is not documented"


@pytest.mark.sqlite_default
def test_lookup_order_flag_then_env_then_default_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "monitor.toml").write_text('[database]\nurl = "sqlite:///default.db"\n')
    (tmp_path / "env.toml").write_text('[database]\nurl = "sqlite:///env.db"\n')
    (tmp_path / "flag.toml").write_text('[database]\nurl = "sqlite:///flag.db"\n')
    assert load_settings().database.url == "sqlite:///default.db"
    monkeypatch.setenv("MONITOR_CONFIG", str(tmp_path / "env.toml"))
    assert load_settings().database.url == "sqlite:///env.db"
    assert load_settings(tmp_path / "flag.toml").database.url == "sqlite:///flag.db"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[mail]\nsmtp_host = "file.example"\nsmtp_port = 25\n')
    monkeypatch.setenv("MONITOR_MAIL__SMTP_HOST", "env.example")
    s = load_settings(cfg)
    assert (s.mail.smtp_host, s.mail.smtp_port) == ("env.example", 25)


@pytest.mark.sqlite_default
def test_data_dir_in_the_file_wins_over_the_default_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The autouse fixture sets $MONITOR_DATA_DIR; it supplies only the default data folder.
    monkeypatch.chdir(tmp_path)
    assert load_settings().data_dir == (tmp_path / "default-data")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "mine"}"\n')
    s = load_settings(cfg)
    assert s.data_dir == tmp_path / "mine"
    assert s.database_url == f"sqlite:///{tmp_path / 'mine' / 'monitor.db'}"
    assert s.outbox_dir == tmp_path / "mine" / "outbox"


def test_secret_comes_from_the_named_environment_variable(tmp_path: Path, monkeypatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[mail]\npassword_env = "MY_SMTP_SECRET"\n')
    monkeypatch.setenv("MY_SMTP_SECRET", "s3cret")
    assert load_settings(cfg).mail.password() == "s3cret"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[fetch]\ntimout = 3\n", "fetch.timout"),
        ("[fetch]\ntimeout = -1\n", "fetch.timeout"),
        ("[schedule]\ndefault_interval = 'soon'\n", "not a duration"),
        ("[database\nurl = 1\n", "not valid TOML"),
    ],
)
def test_bad_configuration_is_a_readable_error(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=needle) as info:
        load_settings(cfg)
    assert str(cfg) in str(info.value)


def test_missing_config_file_is_named() -> None:
    with pytest.raises(ConfigError, match="not found: /nonexistent.toml"):
        load_settings("/nonexistent.toml")


@pytest.mark.parametrize(
    ("value", "seconds"), [("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800), (30, 30)]
)
def test_durations(value: str | int, seconds: int) -> None:
    assert parse_duration(value) == timedelta(seconds=seconds)

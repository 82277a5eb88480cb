"""Settings: one object, parts enabled by their keys, clear one-line refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.settings import Settings, SettingsError, load_settings

CLEAN = {
    k: v
    for k, v in os.environ.items()
    if not k.startswith(("DISCORD_", "SLACK_", "LLM_", "DATABASE_"))
}


def _rapport(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env={**CLEAN, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_defaults_enable_nothing_but_the_core() -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.DATABASE_URL == "sqlite:///./data/rapport.db"
    assert not (s.discord_enabled or s.slack_enabled or s.llm_enabled)
    assert s.DISCORD_API_BASE == "https://discord.com/api/v10"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"DISCORD_TOKEN": "changeme"}, "DISCORD_TOKEN"),
        ({"DISCORD_TOKEN": ""}, "DISCORD_TOKEN"),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_FLAGS_CHANNEL": "C1"}, "SLACK_SIGNING_SECRET"),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}, "SLACK_FLAGS_CHANNEL"),
        ({"LLM_BASE_URL": "http://127.0.0.1:1/v1"}, "LLM_API_KEY"),
        ({"RAPPORT_HTTP_PORT": "eighty"}, "RAPPORT_HTTP_PORT"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ],
)
def test_bad_settings_name_the_key(
    env: dict[str, str], key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SettingsError, match=key):
        load_settings(_env_file=None)


def test_cli_refuses_bad_setting_with_one_line(tmp_path: Path) -> None:
    proc = _rapport(["run"], {"DISCORD_TOKEN": "changeme"}, tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "DISCORD_TOKEN" in lines[0] and "Traceback" not in proc.stderr


def test_cli_help_lists_commands(tmp_path: Path) -> None:
    proc = _rapport(["--help"], {}, tmp_path)
    assert proc.returncode == 0
    for command in ("run", "demo", "eval-detector", "db"):
        assert command in proc.stdout


def test_db_upgrade_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    proc = _rapport(["db", "upgrade"], {"DATABASE_URL": url}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "0005" in proc.stdout
    proc = _rapport(["db", "current"], {"DATABASE_URL": url}, tmp_path)
    assert proc.stdout.strip() == "0005"


def test_env_example_lists_every_setting() -> None:
    text = (Path(__file__).parent.parent / ".env.example").read_text()
    keys = {
        line.split("=", 1)[0] for line in text.splitlines() if line and not line.startswith("#")
    }
    assert keys == set(Settings.model_fields)

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
        # An empty DISCORD_TOKEN= means "not set" (see test_empty_keys_mean_not_set); a
        # placeholder someone forgot to replace is still refused.
        ({"DISCORD_TOKEN": "your-token-here"}, "DISCORD_TOKEN"),
        ({"SLACK_BOT_TOKEN": "xoxb-..."}, "SLACK_BOT_TOKEN"),
        ({"SLACK_ONCALL_GROUP": "@oncall"}, "SLACK_ONCALL_GROUP"),
        ({"SLACK_ONCALL_GROUP": "<!subteam^S0ONCALL>"}, "SLACK_ONCALL_GROUP"),
        ({"RAPPORT_PROMPTS_DIR": "/nonexistent/rapport-prompts"}, "RAPPORT_PROMPTS_DIR"),
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
    assert "0006" in proc.stdout
    proc = _rapport(["db", "current"], {"DATABASE_URL": url}, tmp_path)
    assert proc.stdout.strip() == "0006"


def test_env_example_lists_every_setting() -> None:
    text = (Path(__file__).parent.parent / ".env.example").read_text()
    keys = {
        line.split("=", 1)[0] for line in text.splitlines() if line and not line.startswith("#")
    }
    assert keys == set(Settings.model_fields)


SWITCHES = ("DISCORD_TOKEN", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "LLM_BASE_URL")


@pytest.mark.parametrize("blank", ["", "   "])
def test_empty_keys_mean_not_set(blank: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # An empty line in .env (``DISCORD_TOKEN=``) is how .env.example ships every secret:
    # a user who leaves it empty means "I do not use Discord", not "my token is ''".
    for key in (*SWITCHES, "SLACK_SIGNING_SECRET", "SLACK_ONCALL_GROUP", "LLM_API_KEY"):
        monkeypatch.setenv(key, blank)
    s = load_settings(_env_file=None)
    assert not (s.discord_enabled or s.slack_enabled or s.llm_enabled)
    assert s.DISCORD_TOKEN is None and s.SLACK_ONCALL_GROUP is None


def test_env_example_as_shipped_starts_the_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = Path(__file__).parent.parent / ".env.example"
    (tmp_path / ".env").write_text(example.read_text())
    for key in Settings.model_fields:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)  # not the checkout: the prompts must still be found
    s = load_settings()
    assert not (s.discord_enabled or s.slack_enabled or s.llm_enabled)
    assert (s.RAPPORT_PROMPTS_DIR / "draft" / "system.j2").is_file()
    assert s.RAPPORT_KB_DIR.is_dir()

    # Fill in Slack (HTTP mode) only: SLACK_APP_TOKEN= stays empty, so HTTP mode it is.
    text = (tmp_path / ".env").read_text()
    for key, value in {
        "SLACK_BOT_TOKEN": "xoxb-123-abc",
        "SLACK_SIGNING_SECRET": "abcdef0123",
        "SLACK_FLAGS_CHANNEL": "C0123ABCD",
    }.items():
        text = text.replace(f"\n{key}=\n", f"\n{key}={value}\n")
    (tmp_path / ".env").write_text(text)
    s = load_settings()
    assert s.slack_enabled and not s.slack_socket_mode and not s.discord_enabled


def test_slack_without_managers_is_a_warning_not_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in {
        "SLACK_BOT_TOKEN": "xoxb-1",
        "SLACK_SIGNING_SECRET": "s",
        "SLACK_FLAGS_CHANNEL": "C1",
        "SLACK_ONCALL_GROUP": "S0ONCALL",
    }.items():
        monkeypatch.setenv(key, value)
    s = load_settings(_env_file=None)
    (warning,) = s.warnings()
    assert "SLACK_MANAGERS" in warning and "\n" not in warning
    monkeypatch.setenv("SLACK_MANAGERS", "U012")
    assert load_settings(_env_file=None).warnings() == []


def test_no_platform_or_an_empty_secret_in_the_environment_is_said_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A secret that failed to reach the container (``DISCORD_TOKEN=${MISSING}``) leaves
    its part off: legal, but the operator is told, not left with a silent bot."""
    monkeypatch.setenv("DISCORD_TOKEN", "")
    warnings = load_settings(_env_file=None).warnings()
    assert any("neither DISCORD_TOKEN nor SLACK_BOT_TOKEN" in w for w in warnings)
    assert any(w.startswith("DISCORD_TOKEN is set but empty") for w in warnings)
    monkeypatch.setenv("DISCORD_TOKEN", "abc.def.ghi")
    assert load_settings(_env_file=None).warnings() == []


def test_default_prompts_dir_does_not_depend_on_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAPPORT_PROMPTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    s = load_settings(_env_file=None)
    assert s.RAPPORT_PROMPTS_DIR.is_absolute() and s.RAPPORT_PROMPTS_DIR.is_dir()


def test_cli_refuses_missing_prompts_dir_with_one_line(tmp_path: Path) -> None:
    proc = _rapport(["run"], {"RAPPORT_PROMPTS_DIR": "prompts"}, tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "RAPPORT_PROMPTS_DIR" in lines[0]


def test_db_downgrade_takes_a_relative_revision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    assert _rapport(["db", "upgrade"], {"DATABASE_URL": url}, tmp_path).returncode == 0
    proc = _rapport(["db", "downgrade", "-1"], {"DATABASE_URL": url}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "0005" in proc.stdout


def test_a_discord_reconnect_is_one_warning_line_not_a_traceback() -> None:
    import logging
    import sys

    from bot.cli import reconnect_as_one_line

    try:
        raise OSError("Connect call failed ('127.0.0.1', 9)")
    except OSError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "discord.client",
        logging.ERROR,
        "client.py",
        781,
        "Attempting a reconnect in %.2fs",
        (1.09,),
        exc_info,
    )
    assert reconnect_as_one_line(record)
    assert record.levelname == "WARNING" and record.exc_info is None
    assert record.getMessage() == (
        "Attempting a reconnect in 1.09s (OSError: Connect call failed ('127.0.0.1', 9))"
    )

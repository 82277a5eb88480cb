"""The one settings object, read from the environment and ``.env``.

Each part (Discord, Slack, LLM) is switched on by its keys. A part that is switched on
with a missing or placeholder secret refuses to start, naming the key, so a typo shows
at start-up and not at the first member message.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDERS = frozenset(
    {"", "changeme", "changethis", "xxx", "todo", "your-token-here", "replace-me", "placeholder"}
)


PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The checkout Rapport runs from: the shipped ``prompts/`` folder lives here."""

DEFAULT_PROMPTS_DIR = PROJECT_ROOT / "prompts"
DEFAULT_KB_DIR = DEFAULT_PROMPTS_DIR / "kb"

# Keys whose presence switches a part on, and optional keys: an empty line in ``.env``
# (``DISCORD_TOKEN=``, as ``.env.example`` ships them) means "not set", not "set to ''".
UNSET_WHEN_EMPTY = (
    "DISCORD_TOKEN",
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "SLACK_FLAGS_CHANNEL",
    "SLACK_ONCALL_GROUP",
    "LLM_BASE_URL",
    "LLM_API_KEY",
)

SLACK_GROUP_ID = re.compile(r"^S[A-Z0-9]{2,}$")


class SettingsError(Exception):
    """A setting is missing or wrong; the message names the key and fits on one line."""


def _is_placeholder(value: str | None) -> bool:
    if value is None:
        return True
    v = value.strip().lower()
    return v in PLACEHOLDERS or v.startswith("<") or v.endswith("...") or "your-" in v


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=True
    )

    DATABASE_URL: str = "sqlite:///./data/rapport.db"

    DISCORD_TOKEN: str | None = None
    DISCORD_API_BASE: str = "https://discord.com/api/v10"
    DISCORD_GATEWAY_URL: str = "wss://gateway.discord.gg/"

    SLACK_BOT_TOKEN: str | None = None
    SLACK_SIGNING_SECRET: str | None = None
    SLACK_APP_TOKEN: str | None = None
    SLACK_API_BASE: str = "https://slack.com/api/"
    SLACK_FLAGS_CHANNEL: str | None = None
    SLACK_MANAGERS: str = ""
    SLACK_ONCALL_GROUP: str | None = None

    RAPPORT_HTTP_HOST: str = "127.0.0.1"
    RAPPORT_HTTP_PORT: int = Field(default=3000, ge=0, le=65535)

    LLM_BASE_URL: str | None = None
    LLM_API_KEY: str | None = None
    LLM_MODEL: str = "gpt-4o-mini"
    LLM_TIMEOUT_S: float = Field(default=20.0, gt=0)
    LLM_CONCURRENCY: int = Field(default=4, ge=1)
    LLM_DAILY_TOKEN_BUDGET: int = Field(default=0, ge=0)
    LLM_JUDGE: bool = True

    SLA_HIGH_MIN: int = Field(default=15, ge=1)
    SLA_MEDIUM_MIN: int = Field(default=120, ge=1)
    SLA_LOW_MIN: int = Field(default=1440, ge=1)
    SLA_MAX_REMINDERS: int = Field(default=3, ge=0)

    RAPPORT_COMPETITORS: str = ""

    # Empty means the folders shipped with Rapport (found from the code, not from the
    # current directory); a relative path that is set is read from the current directory.
    RAPPORT_PROMPTS_DIR: Path = DEFAULT_PROMPTS_DIR
    RAPPORT_KB_DIR: Path = DEFAULT_KB_DIR

    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator(*UNSET_WHEN_EMPTY, mode="before")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        if isinstance(v, str) and not v.strip():
            return None
        return v

    @field_validator("RAPPORT_PROMPTS_DIR", "RAPPORT_KB_DIR", mode="before")
    @classmethod
    def _empty_is_default(cls, v: object, info: ValidationInfo) -> object:
        if isinstance(v, str) and not v.strip():
            return (
                DEFAULT_PROMPTS_DIR if info.field_name == "RAPPORT_PROMPTS_DIR" else DEFAULT_KB_DIR
            )
        return v

    @field_validator("LOG_LEVEL", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @field_validator("DATABASE_URL")
    @classmethod
    def _db_scheme(cls, v: str) -> str:
        if not v.startswith(("sqlite", "postgresql")):
            raise ValueError("must start with sqlite:// or postgresql://")
        return v

    # -- which parts are on ---------------------------------------------------------
    @property
    def discord_enabled(self) -> bool:
        return self.DISCORD_TOKEN is not None

    @property
    def slack_enabled(self) -> bool:
        return self.SLACK_BOT_TOKEN is not None

    @property
    def slack_socket_mode(self) -> bool:
        return self.slack_enabled and self.SLACK_APP_TOKEN is not None

    @property
    def llm_enabled(self) -> bool:
        return self.LLM_BASE_URL is not None

    @property
    def competitors(self) -> tuple[str, ...]:
        return tuple(n.strip() for n in self.RAPPORT_COMPETITORS.split(",") if n.strip())

    @property
    def managers(self) -> frozenset[str]:
        return frozenset(m.strip() for m in self.SLACK_MANAGERS.split(",") if m.strip())

    def check(self) -> None:
        """Refuse a part that is switched on without its secrets, and a missing folder."""
        prompts = self.RAPPORT_PROMPTS_DIR
        if not prompts.is_dir():
            where = "" if prompts.is_absolute() else f" (read from {str(Path.cwd())!r})"
            raise SettingsError(
                f"RAPPORT_PROMPTS_DIR: no folder {str(prompts)!r}{where}; "
                "leave it empty for the prompts shipped with Rapport"
            )
        if self.SLACK_ONCALL_GROUP is not None and not SLACK_GROUP_ID.match(
            self.SLACK_ONCALL_GROUP.strip()
        ):
            raise SettingsError(
                "SLACK_ONCALL_GROUP must be a user group id like S0123ABCD "
                "(not a @handle or a name); leave it empty for none"
            )
        if self.discord_enabled and _is_placeholder(self.DISCORD_TOKEN):
            raise SettingsError("DISCORD_TOKEN is empty or a placeholder; set the bot token")
        if self.slack_enabled:
            if _is_placeholder(self.SLACK_BOT_TOKEN):
                raise SettingsError("SLACK_BOT_TOKEN is empty or a placeholder")
            if not self.slack_socket_mode and _is_placeholder(self.SLACK_SIGNING_SECRET):
                raise SettingsError(
                    "SLACK_SIGNING_SECRET is required in HTTP mode (or set SLACK_APP_TOKEN)"
                )
            if self.SLACK_APP_TOKEN is not None and _is_placeholder(self.SLACK_APP_TOKEN):
                raise SettingsError("SLACK_APP_TOKEN is a placeholder")
            if not self.SLACK_FLAGS_CHANNEL:
                raise SettingsError("SLACK_FLAGS_CHANNEL is required when Slack is enabled")
        if self.llm_enabled and _is_placeholder(self.LLM_API_KEY):
            raise SettingsError(
                "LLM_API_KEY is empty or a placeholder (any value for local servers)"
            )

    def warnings(self) -> list[str]:
        """Settings that work but are probably not what the operator wants (logged at start)."""
        found: list[str] = []
        if not self.discord_enabled and not self.slack_enabled:
            found.append(
                "neither DISCORD_TOKEN nor SLACK_BOT_TOKEN is set: Rapport listens to no "
                "community (only the database and the health endpoint run)"
            )
        for key in ("DISCORD_TOKEN", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "LLM_BASE_URL"):
            value = os.environ.get(key)
            if value is not None and not value.strip():
                found.append(
                    f"{key} is set but empty in the environment, so that part stays off "
                    "(a secret that was not passed through?)"
                )
        if self.slack_enabled and not self.managers:
            found.append(
                "SLACK_MANAGERS is empty: nobody can act on flag cards in Slack yet. That is "
                "fine while you look around; set it to the managers' Slack user ids "
                "(e.g. U012,U034) and restart when you are ready"
            )
        return found


def load_settings(**overrides: object) -> Settings:
    """Read and check settings; raise :class:`SettingsError` with one line on failure."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "settings"
        raise SettingsError(f"{key}: {err['msg']}") from None
    settings.check()
    return settings

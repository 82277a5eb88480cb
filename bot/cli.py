"""The ``rapport`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bot.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from handlers.detect import LlmJudge

app = typer.Typer(
    help="Rapport: a community engagement bot for social CRM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _settings() -> Settings:
    """Load settings or stop with one line naming the key (no traceback wall)."""
    try:
        return load_settings()
    except SettingsError as exc:
        typer.echo(f"rapport: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("discord.gateway", "discord.client", "discord.http", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("discord.client").addFilter(reconnect_as_one_line)


def reconnect_as_one_line(record: logging.LogRecord) -> bool:
    """discord.py logs every reconnect attempt as an ERROR with two tracebacks; a lost
    connection it is about to retry is one WARNING line naming the error."""
    if record.levelno >= logging.ERROR and str(record.msg).startswith("Attempting a reconnect"):
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
            record.args = None
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


@app.command()
def run() -> None:
    """Run the live bot: upgrade the schema, serve /healthz, start the enabled parts."""
    settings = _settings()
    _logging(settings.LOG_LEVEL)
    from bot.service import PartFailed, serve

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(settings))
    except PartFailed as exc:
        typer.echo(f"rapport: stopped: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def demo(
    fast: Annotated[bool, typer.Option(help="No pauses between scenes.")] = True,
) -> None:
    """Run the whole bot against local emulators with a scripted community."""
    from bot.demo import run_demo

    raise typer.Exit(asyncio.run(run_demo(fast=fast)))


@app.command("eval-detector")
def eval_detector(
    file: Annotated[Path, typer.Argument(help="A CSV file with a text and a label column.")],
    text_column: Annotated[
        str, typer.Option("--text-column", help="Column holding the message text.")
    ],
    label_column: Annotated[str, typer.Option("--label-column", help="Column holding the label.")],
    positive: Annotated[
        str, typer.Option("--positive", help="Label value meaning 'negative word-of-mouth'.")
    ],
    feedback: Annotated[
        int, typer.Option("--feedback", min=0, help="Replay the first N rows as manager decisions.")
    ] = 0,
    llm: Annotated[
        bool, typer.Option("--llm", help="Send borderline messages to the configured LLM judge.")
    ] = False,
) -> None:
    """Score the detector on a labelled CSV; the last line is one JSON object."""
    from bot.eval_command import eval_detector_command

    eval_detector_command(
        file, text_column, label_column, positive, feedback, llm, llm_judge=_llm_judge
    )


def _llm_judge() -> LlmJudge | None:
    """The configured LLM as a judge for ``eval-detector --llm`` (None without one)."""
    settings = _settings()
    if not settings.llm_enabled:
        return None
    from bot.llm import OpenAIChatClient

    return OpenAIChatClient.from_settings(settings)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Upgrade the schema (the bot also does this on start)."""
    from storage.db import Database
    from storage.migrate import current, upgrade

    db = Database(_settings().DATABASE_URL)
    upgrade(db, revision)
    typer.echo(f"schema at {current(db)}")
    db.dispose()


# ignore_unknown_options: "-1" (one step down) is a revision here, not an option.
@db_app.command("downgrade", context_settings={"ignore_unknown_options": True})
def db_downgrade(revision: Annotated[str, typer.Argument()]) -> None:
    """Downgrade the schema to REVISION (e.g. -1, or base)."""
    from storage.db import Database
    from storage.migrate import current, downgrade

    db = Database(_settings().DATABASE_URL)
    downgrade(db, revision)
    typer.echo(f"schema at {current(db)}")
    db.dispose()


@db_app.command("current")
def db_current() -> None:
    """Print the schema revision."""
    from storage.db import Database
    from storage.migrate import current

    db = Database(_settings().DATABASE_URL)
    typer.echo(current(db) or "empty")
    db.dispose()


def main() -> None:
    app()


if __name__ == "__main__":
    main()

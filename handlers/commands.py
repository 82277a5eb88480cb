"""The admin's ``/rapport`` subcommands: one implementation serves every platform.

An adapter turns its platform's slash command into a :class:`CommandContext` (who, where,
the free-text argument, and whether the caller holds the platform's admin right) and shows
the returned text to that caller only. Parsing, validation and the answers live here, so
``/rapport sensitivity 0.4`` means the same on Discord and Slack.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from handlers.ports import CommunityCore

MIN_SENSITIVITY = 0.05
MAX_SENSITIVITY = 0.95
MAX_COMPETITORS = 50
MAX_COMPETITOR_NAME = 100
"""Longest competitor name (the stored tag's column width)."""
MENTION_DAYS = 7
"""How far back ``/rapport competitors`` counts mentions."""

_RESET_WORDS = frozenset({"default", "reset"})

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CommandContext:
    """Who ran a command, where, with what argument; what a subcommand passes to the core."""

    platform: str
    community_id: str
    channel_id: str
    actor: str
    args: str = ""
    may_change: bool = True
    """Whether the caller holds the admin right to change settings (checked by the
    adapter: Manage Server on Discord, SLACK_MANAGERS on Slack)."""


CommandRun = Callable[[CommunityCore, CommandContext], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class AdminCommand:
    """One ``/rapport <name> [argument]``; its text answer is shown to the caller only."""

    name: str
    description: str
    run: CommandRun
    argument: str = ""
    """Name of the optional free-text argument ("" when the command takes none)."""
    argument_help: str = ""

    @property
    def usage(self) -> str:
        return f"{self.name} [{self.argument}]" if self.argument else self.name


_REFUSED = "Only admins can change this (Manage Server on Discord, SLACK_MANAGERS on Slack)."


async def _status(core: CommunityCore, ctx: CommandContext) -> str:
    return await core.status_text(ctx.platform, ctx.community_id)


def parse_sensitivity(text: str) -> float | None:
    """``"0.4"``, ``"40%"`` -> 0.4; ``"default"`` -> None; anything else raises ValueError."""
    word = text.strip().lower()
    if word in _RESET_WORDS:
        return None
    try:
        value = float(word[:-1]) / 100 if word.endswith("%") else float(word)
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not a number") from None
    if not MIN_SENSITIVITY <= value <= MAX_SENSITIVITY:
        raise ValueError(f"{value:g} is outside {MIN_SENSITIVITY}-{MAX_SENSITIVITY}")
    return value


async def _change(
    ctx: CommandContext,
    parse: Callable[[str], T],
    apply: Callable[[T], Awaitable[None]],
    what: str,
    hint: str = "",
) -> str | None:
    """Apply the command's argument, if any: None when done (or nothing to change),
    else the one line that says why nothing changed."""
    if not ctx.args.strip():
        return None
    if not ctx.may_change:
        return _REFUSED
    try:
        value = parse(ctx.args)
    except ValueError as exc:
        return f"{what} not changed: {exc}.{hint}"
    await apply(value)
    return None


async def _sensitivity(core: CommunityCore, ctx: CommandContext) -> str:
    async def apply(threshold: float | None) -> None:
        await core.set_sensitivity(ctx.platform, ctx.community_id, threshold)

    refused = await _change(
        ctx,
        parse_sensitivity,
        apply,
        "Sensitivity",
        f" Give a score between {MIN_SENSITIVITY} and {MAX_SENSITIVITY} "
        "(lower flags more messages), or `default`.",
    )
    if refused is not None:
        return refused
    settings = await core.community_settings(ctx.platform, ctx.community_id)
    which = (
        "the default"
        if settings.sensitivity == settings.default_sensitivity
        else f"the default is {settings.default_sensitivity:.2f}"
    )
    head = "Sensitivity set" if ctx.args.strip() else "Sensitivity"
    return (
        f"{head}: messages scoring {settings.sensitivity:.2f} or more are flagged ({which}). "
        "Lower flags more messages, higher only the clearest complaints."
    )


def parse_competitors(text: str) -> list[str] | None:
    """Comma-separated names; ``"default"`` -> None; ``"none"``/``"clear"`` -> []."""
    word = text.strip().lower()
    if word in _RESET_WORDS:
        return None
    if word in ("none", "clear"):
        return []
    # One competitor per name whatever its case: the first spelling given is kept.
    spelled: dict[str, str] = {}
    for n in (n.strip() for n in text.split(",")):
        if n:
            spelled.setdefault(n.casefold(), n)
    names = list(spelled.values())
    if len(names) > MAX_COMPETITORS:
        raise ValueError(f"{len(names)} names; at most {MAX_COMPETITORS}")
    too_long = [n for n in names if len(n) > MAX_COMPETITOR_NAME]
    if too_long:
        raise ValueError(f"a name is longer than {MAX_COMPETITOR_NAME} characters")
    return names


async def _competitors(core: CommunityCore, ctx: CommandContext) -> str:
    async def apply(names: list[str] | None) -> None:
        await core.set_competitors(ctx.platform, ctx.community_id, names)

    refused = await _change(ctx, parse_competitors, apply, "Competitors")
    if refused is not None:
        return refused
    settings = await core.community_settings(ctx.platform, ctx.community_id)
    source = (
        "the deployment's default list"
        if settings.competitors_are_default
        else "this community's list"
    )
    if not settings.competitors:
        listed = "No competitor names are tagged"
    else:
        listed = "Competitors tagged: " + ", ".join(sorted(settings.competitors))
    answer = f"{listed} ({source})."
    if settings.competitors:
        answer += " " + _mentions_line(
            settings.competitors,
            await core.competitor_mentions(ctx.platform, ctx.community_id, MENTION_DAYS),
        )
    return answer + " Set them with comma-separated names, `none` to tag none, or `default`."


def _mentions_line(names: tuple[str, ...], counts: list[tuple[str, str, int]]) -> str:
    """ "Mentions in the last 7 days: Globex 3 (2 positive, 1 negative); Initech none."."""
    by_name: dict[str, dict[str, int]] = {}
    for name, sentiment, n in counts:
        by_name.setdefault(name, {})[sentiment] = n
    parts = []
    for name in sorted({*names, *by_name}):
        tally = by_name.get(name)
        if not tally:
            parts.append(f"{name} none")
            continue
        detail = ", ".join(
            f"{tally[s]} {s}" for s in ("positive", "negative", "neutral") if s in tally
        )
        parts.append(f"{name} {sum(tally.values())} ({detail})")
    return f"Mentions in the last {MENTION_DAYS} days: " + "; ".join(parts) + "."


ADMIN_COMMANDS: tuple[AdminCommand, ...] = (
    AdminCommand("status", "How Rapport sees this community", _status),
    AdminCommand(
        "sensitivity",
        "Show or set the score from which messages are flagged",
        _sensitivity,
        argument="value",
        argument_help="0.05-0.95 (lower flags more), or default",
    ),
    AdminCommand(
        "competitors",
        "Show or set the competitor names tagged in messages",
        _competitors,
        argument="names",
        argument_help="Comma-separated names, none, or default",
    ),
)
"""Every ``/rapport`` subcommand, in the order platforms list them."""

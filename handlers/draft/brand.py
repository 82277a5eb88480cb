"""The brand's voice and policy for drafted replies, read from ``prompts/brand.toml``.

Data, not code: a brand edits its voice, sign-off, link allow-list and the promises it
lets replies make without touching Python.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class BrandConfig:
    name: str = "our team"
    voice: str = "warm, plain-spoken and honest; no corporate jargon"
    sign_off: str = ""
    languages: tuple[str, ...] = ("en",)
    default_language: str = "en"
    do: tuple[str, ...] = ()
    dont: tuple[str, ...] = ()
    allowed_domains: tuple[str, ...] = ()
    allowed_promises: frozenset[str] = field(default_factory=frozenset)
    allowed_contacts: tuple[str, ...] = ()  # brand emails/phones a reply may contain
    max_reply_chars: int = 900  # asked of the model; the platform cap is enforced anyway

    @classmethod
    def load(cls, path: Path) -> BrandConfig:
        """Read a brand TOML file; missing keys keep their defaults."""
        with path.open("rb") as fh:
            data = tomllib.load(fh)
        return cls.from_mapping(data)

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> BrandConfig:
        brand = data.get("brand", {})
        links = data.get("links", {})
        promises = data.get("promises", {})
        values: dict[str, Any] = {}
        for key in ("name", "voice", "sign_off", "default_language"):
            if key in brand:
                values[key] = str(brand[key])
        for key in ("languages", "do", "dont", "allowed_contacts"):
            if key in brand:
                values[key] = tuple(str(v) for v in brand[key])
        if "max_reply_chars" in brand:
            values["max_reply_chars"] = int(brand["max_reply_chars"])
        if "allowed_domains" in links:
            values["allowed_domains"] = tuple(str(v).lower() for v in links["allowed_domains"])
        if "allowed" in promises:
            values["allowed_promises"] = frozenset(str(v) for v in promises["allowed"])
        return cls(**values)

    def replace(self, **changes: Any) -> BrandConfig:
        """A copy with some fields changed (e.g. a community's own voice from /rapport)."""
        return dataclasses.replace(self, **changes)

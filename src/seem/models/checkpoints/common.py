"""Strict conversion of official checkpoints to our parameter names.

An official checkpoint is converted by a ``KeyMap``: an ordered list of rename rules (regex → replacement, the first
matching rule wins) and an explicit ignore list (regex → reason). Conversion is strict: every official key must be
either renamed onto one of our keys with the same shape, or ignored with a stated reason; every key our model
expects must be provided. Anything else raises ``CheckpointError`` naming the keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor


class CheckpointError(ValueError):
    """A checkpoint does not fit the model: names the missing, unexpected or mis-shaped keys."""


@dataclass(frozen=True)
class KeyMap:
    """How one official layout maps onto our modules.

    Attributes:
        renames: ``(pattern, replacement)`` pairs for ``re.sub``-style renaming; patterns are anchored at the key's
            start (``re.match``), the first matching rule wins, and a key no rule matches is "unexpected".
        ignore: ``(pattern, reason)`` pairs; official keys fully matching a pattern are dropped, with the reason
            recorded in the report (e.g. training-only buffers, aliases of another key).
    """

    renames: tuple[tuple[str, str], ...]
    ignore: tuple[tuple[str, str], ...] = ()


@dataclass
class ConversionReport:
    """What happened to every official key."""

    mapped: dict[str, str] = field(default_factory=dict)
    """official key → our key."""
    ignored: dict[str, str] = field(default_factory=dict)
    """official key → reason."""

    @property
    def n_official(self) -> int:
        return len(self.mapped) + len(self.ignored)

    def summary(self) -> str:
        return f"{len(self.mapped)} keys mapped, {len(self.ignored)} ignored (of {self.n_official})"


def _list(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")


def convert_state_dict(
    official: Mapping[str, Tensor],
    keymap: KeyMap,
    expected: Mapping[str, torch.Size | tuple[int, ...]],
    *,
    what: str = "checkpoint",
) -> tuple[dict[str, Tensor], ConversionReport]:
    """Rename an official state_dict to ours, strictly.

    Args:
        official: the official flat state_dict (key → tensor). Tensors may live on the meta device.
        keymap: the layout's rules.
        expected: our model's ``{key: shape}`` (``{k: v.shape for k, v in model.state_dict().items()}``).
        what: name used in error messages (e.g. the file name).

    Returns:
        ``(ours, report)``: our state_dict and what happened to every official key.

    Raises:
        CheckpointError: listing unexpected keys (no rule), keys mapped twice, missing keys and shape mismatches.
    """
    report = ConversionReport()
    ours: dict[str, Tensor] = {}
    unexpected: list[str] = []
    duplicated: list[str] = []
    mismatched: list[str] = []
    ignore = [(re.compile(p), r) for p, r in keymap.ignore]
    renames = [(re.compile(p), r) for p, r in keymap.renames]
    for key, value in official.items():
        reason = next((r for p, r in ignore if p.fullmatch(key)), None)
        if reason is not None:
            report.ignored[key] = reason
            continue
        new = next((p.sub(r, key, count=1) for p, r in renames if p.match(key)), None)
        if new is None or new not in expected:
            unexpected.append(key if new is None else f"{key} (→ {new})")
            continue
        if new in ours:
            duplicated.append(f"{key} (→ {new})")
            continue
        if tuple(value.shape) != tuple(expected[new]):
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(expected[new])}")
            continue
        ours[new] = value
        report.mapped[key] = new
    missing = sorted(set(expected) - set(ours))
    problems = []
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_list(sorted(unexpected))}")
    if duplicated:
        problems.append(f"{len(duplicated)} key(s) mapped twice: {_list(duplicated)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_list(mismatched)}")
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_list(missing)}")
    if problems:
        raise CheckpointError(f"{what} does not fit the model:\n  " + "\n  ".join(problems))
    return ours, report

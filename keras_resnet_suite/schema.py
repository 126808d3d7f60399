"""Declarative value checks for configuration keys and command-line flags: one rule per key
(type, range, allowed values, finiteness), one error line naming the key. Used by the detector's
YAML schema (`detection.config`), the training recipes and the CLIs' argparse types, so a
`learning_rate: -0.1` or `batch_size: "four"` is refused before any work starts instead of
surfacing deep inside tf.data or as a diverging loss. Light: no TensorFlow import.
"""

from __future__ import annotations

import argparse
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any


class Rule:
    """A value rule: `check(value, key)` returns the value (normalised) or raises ValueError."""

    optional = False

    def check(self, value: Any, key: str) -> Any:
        if value is None:
            if self.optional:
                return None
            raise ValueError(f"{key} must be {self.describe()}, got null")
        return self._check(value, key)

    def _check(self, value: Any, key: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def fail(self, value: Any, key: str) -> None:
        raise ValueError(f"{key} must be {self.describe()}, got {value!r}")


@dataclass(frozen=True)
class Number(Rule):
    """An int or a finite float in `[low, high]` (`open_low` / `open_high`: bound excluded).
    Floats also accept a numeric string: YAML 1.1 reads `1e-3` (no dot) as text."""

    kind: type = float
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    optional: bool = False

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a finite number"
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.open_low else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"{'<' if self.open_high else '<='} {self.high:g}")
        text = what + (" " + " and ".join(bounds) if bounds else "")
        return text + (" (or null)" if self.optional else "")

    def _check(self, value: Any, key: str) -> Any:
        if isinstance(value, bool):
            self.fail(value, key)
        if self.kind is int:
            if not isinstance(value, numbers.Integral):  # numpy integers too
                self.fail(value, key)
            value = int(value)
        else:
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    self.fail(value, key)
            if not isinstance(value, numbers.Real) or not math.isfinite(value):
                self.fail(value, key)
            value = float(value)
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            self.fail(value, key)
        if self.high is not None and (value >= self.high if self.open_high
                                      else value > self.high):
            self.fail(value, key)
        return value


@dataclass(frozen=True)
class Choice(Rule):
    """One of `values`."""

    values: tuple = ()
    optional: bool = False

    def describe(self) -> str:
        return "one of " + ", ".join(map(str, self.values)) + (
            " (or null)" if self.optional else "")

    def _check(self, value: Any, key: str) -> Any:
        # Type and value: `1` is not `true`, `true` is not `1`.
        if not any(type(value) is type(v) and value == v for v in self.values):
            self.fail(value, key)
        return value


@dataclass(frozen=True)
class Flag(Rule):
    """true or false (not 0/1 or "yes": a typo there should not flip a switch)."""

    optional: bool = False

    def describe(self) -> str:
        return "true or false"

    def _check(self, value: Any, key: str) -> Any:
        if not isinstance(value, bool):
            self.fail(value, key)
        return value


@dataclass(frozen=True)
class Text(Rule):
    """A non-empty string."""

    optional: bool = False

    def describe(self) -> str:
        return "a non-empty string"

    def _check(self, value: Any, key: str) -> Any:
        if not isinstance(value, str) or not value.strip():
            self.fail(value, key)
        return value


@dataclass(frozen=True)
class Table(Rule):
    """A mapping (its keys are checked elsewhere, e.g. against a loader's signature)."""

    optional: bool = False

    def describe(self) -> str:
        return "a mapping"

    def _check(self, value: Any, key: str) -> Any:
        if not isinstance(value, Mapping):
            self.fail(value, key)
        return dict(value)


@dataclass(frozen=True)
class ListOf(Rule):
    """A list whose items each pass `item`, with `length` items (exact) or at least
    `min_length`, optionally strictly increasing or free of duplicates."""

    item: Rule = Number()
    length: int | None = None
    min_length: int = 0
    increasing: bool = False
    unique: bool = False
    optional: bool = False

    def describe(self) -> str:
        size = (f"{self.length} " if self.length is not None
                else f"at least {self.min_length} " if self.min_length else "")
        order = "strictly increasing " if self.increasing else ""
        return f"a list of {size}{order}values, each {self.item.describe()}" + (
            " (or null)" if self.optional else "")

    def _check(self, value: Any, key: str) -> Any:
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
            self.fail(value, key)
        if (self.length is not None and len(value) != self.length) or \
                len(value) < self.min_length:
            self.fail(value, key)
        items = [self.item.check(v, f"{key}[{i}]") for i, v in enumerate(value)]
        if self.increasing and any(b <= a for a, b in zip(items, items[1:], strict=False)):
            self.fail(value, key)
        if self.unique and len(set(map(repr, items))) != len(items):
            self.fail(value, key)
        return items


@dataclass(frozen=True)
class AnyOf(Rule):
    """The first of `rules` that accepts the value (e.g. a list of names, or "auto")."""

    rules: tuple = ()
    optional: bool = False

    def describe(self) -> str:
        return " or ".join(r.describe() for r in self.rules)

    def _check(self, value: Any, key: str) -> Any:
        for rule in self.rules:
            try:
                return rule.check(value, key)
            except ValueError:
                continue
        self.fail(value, key)


_PATTERN = re.compile(r"[A-Za-z0-9_.*?/-]+")


@dataclass(frozen=True)
class Multipliers(Rule):
    """Layer-name patterns to finite factors >= 0, in order (`training.LayerLRMultiplier`):
    a mapping, or the command-line text `conv1,conv2_x=0.1` (patterns sharing a factor,
    comma-separated; several groups separated by `;`: `conv1=0;conv*_x=0.1`)."""

    optional: bool = False

    def describe(self) -> str:
        return ("layer patterns with a multiplier >= 0, as 'conv1,conv2_x=0.1' or a mapping "
                "{pattern: multiplier}") + (" (or null)" if self.optional else "")

    def _check(self, value: Any, key: str) -> Any:
        if isinstance(value, str):
            value = self._parse(value, key)
        if not isinstance(value, Mapping):
            self.fail(value, key)
        out = {}
        for pattern, factor in value.items():
            if not isinstance(pattern, str) or not _PATTERN.fullmatch(pattern):
                raise ValueError(f"{key}: {pattern!r} is not a layer pattern (letters, digits, "
                                 "_ . - / and the wildcards * ?)")
            out[pattern] = Number(float, low=0).check(factor, f"{key}[{pattern!r}]")
        return out

    def _parse(self, text: str, key: str) -> dict:
        out: dict = {}
        for group in filter(None, (g.strip() for g in text.split(";"))):
            names, eq, factor = group.rpartition("=")
            if not eq or not names.strip():
                raise ValueError(f"{key}: {group!r} is not PATTERNS=MULTIPLIER (e.g. "
                                 "'conv1,conv2_x=0.1')")
            try:
                number = float(factor)
            except ValueError:
                raise ValueError(f"{key}: multiplier {factor.strip()!r} in {group!r} is not a "
                                 "number") from None
            for name in names.split(","):
                out[name.strip()] = number
        if not out:
            self.fail(text, key)
        return out


def validate(values: Mapping[str, Any], rules: Mapping[str, Rule], where: str) -> dict:
    """`values` with every key that has a rule checked (and normalised); errors name
    `where.key`. Keys without a rule pass unchanged (their names are checked elsewhere)."""
    out = dict(values)
    for key, rule in rules.items():
        if key in out:
            out[key] = rule.check(out[key], f"{where}.{key}" if where else key)
    return out


def key(rule: Rule, default: Any = MISSING, factory: Any = MISSING) -> Any:
    """A dataclass field carrying its value rule (`rules_of` collects them)."""
    return field(default=default, default_factory=factory, metadata={"rule": rule})


def rules_of(cls) -> dict[str, Rule]:
    """`{field name: rule}` of a dataclass whose fields were declared with `key`."""
    return {f.name: f.metadata["rule"] for f in fields(cls) if "rule" in f.metadata}


def check_fields(obj: Any, where: str) -> None:
    """Check (and normalise, in place) every ruled field of the dataclass instance `obj`."""
    for name, value in validate(vars(obj), rules_of(type(obj)), where).items():
        setattr(obj, name, value)


def arg_type(rule: Rule, flag: str) -> Callable[[str], Any]:
    """An argparse `type=` that parses a flag's text by `rule` (int or float for `Number`) and
    refuses an out-of-range value with argparse's usual one-line error naming the flag."""

    def parse(text: str) -> Any:
        value: Any = text
        if isinstance(rule, Number):
            try:
                value = int(text) if rule.kind is int else float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{flag} must be {rule.describe()}, got {text!r}") from None
        try:
            return rule.check(value, flag)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = rule.describe()  # argparse names the type in its own messages
    return parse


def check_args(args: argparse.Namespace, rules: Mapping[str, Rule]) -> None:
    """Check parsed flags given on the command line (None: not given) by `rules`, keyed by
    argparse dest; a bad one exits with the CLIs' one line, `error: --flag must be ...`."""
    for dest, rule in rules.items():
        value = getattr(args, dest, None)
        if value is not None:
            try:
                rule.check(value, "--" + dest.replace("_", "-"))
            except ValueError as e:
                raise SystemExit(f"error: {e}") from None


POSITIVE_INT = Number(int, low=1)
NON_NEGATIVE_INT = Number(int, low=0)
LEARNING_RATE = Number(float, low=0, open_low=True)  # finite and > 0: -0.1 / nan / inf refused
FRACTION = Number(float, low=0, high=1)
PROBABILITY = FRACTION  # a score or IoU threshold: [0, 1]
SHARE = Number(float, low=0, high=1, open_low=True)  # a sampled fraction: (0, 1]
POSITIVE = Number(float, low=0, open_low=True)  # a size or scale: finite and > 0
NON_NEGATIVE = Number(float, low=0)  # a size where 0 means "off", a weight decay
LR_MULTIPLIERS = Multipliers()  # layer patterns -> learning-rate multipliers (fine-tuning)

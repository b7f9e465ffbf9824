"""Verdicts: the one place where aerobust says that one model is more robust than another.

Every comparative sentence or mark the package writes (a report's summary, ``compare``, leaderboard
ranks, ``reproduce`` findings, ``defend`` verdicts) is a :class:`Verdict` built by :func:`verdict`
from a paired test and the interval of the paired difference, never from two means:

- the paired difference is oriented so that a positive value means ``first`` is more robust
  (for a "lower is more robust" quantity the sign of the raw difference is flipped);
- ``p_holm`` is the paired test's p-value after Holm's correction over every comparison the
  caller's report makes (the caller owns the family, because only it knows what it compares);
- a model is called more robust only when ``p_holm < alpha`` AND the 95 % interval of the
  difference excludes 0; otherwise the verdict is "not established" and the sentence gives the
  difference with its interval;
- two models whose paired differences are all exactly 0 (the same model twice) are "identical" and
  never ranked, whatever a test would say;
- the clean fidelity of both models is part of the sentence, and "more robust at lower clean
  fidelity" is said so: robustness bought by ignoring the input is the failure this tool exists to show.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

ALPHA = 0.05
FIRST, SECOND, NOT_ESTABLISHED, IDENTICAL, UNTESTED = "first", "second", "not established", "identical", "untested"


@dataclass(frozen=True)
class Fidelity:
    """A model's clean fidelity as the sentence quotes it (e.g. MS-SSIM(x, x̃) = 0.77 over 100 images)."""

    name: str
    value: float


@dataclass(frozen=True)
class Verdict:
    """The outcome of one paired comparison between ``first`` and ``second`` on one quantity.

    ``difference``, ``low`` and ``high``: the mean paired difference and its 95 % interval, in the
    quantity's units, oriented so that > 0 means ``first`` is more robust. ``units``: what the
    interval resamples (e.g. "100 images" or "5 seeds x 100 images").
    """

    first: str
    second: str
    quantity: str
    difference: float
    low: float
    high: float
    p_holm: float
    units: str
    outcome: str
    fidelity_first: Fidelity | None = None
    fidelity_second: Fidelity | None = None

    @property
    def winner(self) -> str | None:
        return {FIRST: self.first, SECOND: self.second}.get(self.outcome)

    @property
    def loser(self) -> str | None:
        return {FIRST: self.second, SECOND: self.first}.get(self.outcome)

    def claim(self, claimed_more_robust: str) -> str:
        """"holds", "reversed" or "not established" for the claim that ``claimed_more_robust`` is more robust."""
        if self.winner is None:
            return "not established"
        return "holds" if self.winner == claimed_more_robust else "reversed"

    def evidence(self) -> str:
        """The numbers behind the verdict: difference [interval], adjusted p, units."""
        if self.outcome in (IDENTICAL, UNTESTED):
            return f"over {self.units}"
        return (f"difference {self.difference:+.3f} [{self.low:+.3f}, {self.high:+.3f}] ({self.first} minus "
                f"{self.second}, > 0: {self.first} more robust; 95 % interval over {self.units}), Holm-adjusted "
                f"p = {_p_text(self.p_holm)}")

    def fidelity_clause(self) -> str:
        a, b = self.fidelity_first, self.fidelity_second
        if a is None or b is None or not (math.isfinite(a.value) and math.isfinite(b.value)):
            return ""
        if self.winner is not None:
            win, lose = (a, b) if self.winner == self.first else (b, a)
            if win.value < lose.value:
                return (f"; it is more robust at LOWER clean fidelity ({a.name} {win.value:.3f} against "
                        f"{lose.value:.3f}), so part of this robustness may be insensitivity to the input")
            return f"; clean fidelity {a.name} {win.value:.3f} against {lose.value:.3f}"
        return f"; clean fidelity {a.name} {self.first} {a.value:.3f}, {self.second} {b.value:.3f}"

    def sentence(self) -> str:
        if self.outcome == IDENTICAL:
            return (f"{self.first} and {self.second} score identically on {self.quantity} (every paired difference "
                    f"is 0 {self.evidence()}): no ranking.")
        if self.outcome == UNTESTED:
            return f"{self.first} and {self.second} were not compared on {self.quantity} (no paired rows)."
        if self.winner is None:
            return (f"That {self.first} or {self.second} is more robust on {self.quantity} is not established: "
                    f"{self.evidence()}{self.fidelity_clause()}.")
        return (f"{self.winner} is more robust than {self.loser} on {self.quantity}: {self.evidence()}"
                f"{self.fidelity_clause()}.")


def _p_text(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def verdict(first: str, second: str, quantity: str, *, difference: float, low: float, high: float,
            p_holm: float, units: str, identical: bool = False, higher_is_more_robust: bool = True,
            fidelity_first: Fidelity | None = None, fidelity_second: Fidelity | None = None,
            alpha: float = ALPHA) -> Verdict:
    """The verdict on ``first`` against ``second`` from a paired test and its interval.

    ``difference``/``low``/``high`` are ``first - second`` in the quantity's own direction; with
    ``higher_is_more_robust=False`` they are negated (and the interval's ends swapped) so that the
    verdict's numbers read "> 0: first more robust".
    """
    if not higher_is_more_robust:
        difference, low, high = -difference, -high, -low
    if identical:
        outcome = IDENTICAL
    elif not all(math.isfinite(v) for v in (difference, low, high, p_holm)):
        outcome = UNTESTED
    elif p_holm < alpha and low > 0:
        outcome = FIRST
    elif p_holm < alpha and high < 0:
        outcome = SECOND
    else:
        outcome = NOT_ESTABLISHED
    return Verdict(first, second, quantity, float(difference), float(low), float(high), float(p_holm), units,
                   outcome, fidelity_first, fidelity_second)


def paired_verdict(row, quantity: str, *, higher_is_more_robust: bool, fidelities: dict | None = None,
                   alpha: float = ALPHA) -> Verdict:
    """The verdict of one row of :func:`aerobust.stats.paired_comparisons` (``difference`` = model_b - model_a).

    ``fidelities``: ``{model: Fidelity}`` for the fidelity clause. The row's ``p_holm`` must already be
    adjusted over the family of comparisons the caller reports.
    """
    fidelities = fidelities or {}
    first, second = row["model_a"], row["model_b"]
    units = row.get("units")
    if not isinstance(units, str) or not units:
        units = f"{int(row['images'])} images" if _finite(row.get("images")) else "no paired images"
    return verdict(first, second, quantity, difference=-_number(row.get("difference")),
                   low=-_number(row.get("ci_high")), high=-_number(row.get("ci_low")),
                   p_holm=_number(row.get("p_holm")), units=units, identical=bool(row.get("identical", False)),
                   higher_is_more_robust=higher_is_more_robust, fidelity_first=fidelities.get(first),
                   fidelity_second=fidelities.get(second), alpha=alpha)


def _number(value) -> float:
    return float(value) if _finite(value) else float("nan")


def _finite(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False

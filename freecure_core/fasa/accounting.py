"""Per-run FASA accounting: at which (model evaluation, layer) places FASA acted, against the places where it
should have, so a run can say whether FASA really ran and refuse when it silently did not.

A place is expected when the evaluation is inside the FASA window and the mask covers at least one token on that
layer's token grid. Pure Python; the guiders feed it and turn its verdict into the node's text and errors.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Below this share of the expected places, a run with a non-empty mask is refused rather than reported.
MIN_SHARE = 0.5


class FasaNotActing(RuntimeError):
    """FASA had a non-empty mask but acted at none (or too few) of the places it should have."""


@dataclass
class FasaAccount:
    """What FASA did in one sampling run. `coverage` maps each chosen layer's label to the share of its token grid
    inside the mask; `mode` is "replay" or "lockstep"."""

    mode: str
    coverage: dict[str, float]
    evals: int = 0
    evals_in_window: int = 0
    calls: int = 0
    hits: set = field(default_factory=set)
    _current: int = -1
    _in_window: bool = False

    @property
    def active_layers(self) -> list[str]:
        """Chosen layers where the mask covers at least one token."""
        return [label for label, share in self.coverage.items() if share > 0]

    def begin_eval(self, in_window: bool) -> None:
        """Start the next model evaluation (in or out of the FASA window)."""
        self.evals += 1
        self._current = self.evals - 1
        self._in_window = bool(in_window)
        if self._in_window:
            self.evals_in_window += 1

    def hit(self, layer: str) -> None:
        """FASA changed the rows of one attention call at `layer` during the current evaluation."""
        self.calls += 1
        self.hits.add((self._current, layer))

    def expected(self) -> int:
        """(evaluation, layer) places where FASA should act."""
        return self.evals_in_window * len(self.active_layers)

    def hit_in_current(self) -> int:
        """Places of the current evaluation where FASA acted."""
        return sum(1 for e, _ in self.hits if e == self._current)

    def layers_hit(self) -> list[str]:
        """Chosen layers where FASA acted at least once, in the chosen order."""
        got = {layer for _, layer in self.hits}
        return [label for label in self.coverage if label in got]

    def first_eval_problem(self) -> str | None:
        """After an evaluation: why FASA evidently is not acting (the first in-window evaluation reached no active
        layer), else None. Caches may skip later evaluations; the first one always runs the model."""
        if self._in_window and self.evals_in_window == 1 and self.active_layers and self.hit_in_current() == 0:
            return (f"FASA reached none of its {len(self.active_layers)} layers in the first model evaluation of its "
                    f"window")
        return None

    def final_problem(self) -> str | None:
        """After the run: why FASA acted at too few places (under MIN_SHARE of those expected), else None."""
        expected = self.expected()
        if expected and len(self.hits) < MIN_SHARE * expected:
            return f"FASA acted at {len(self.hits)} of {expected} (step, layer) places"
        return None

    def summary(self) -> dict:
        """The account as plain values (for the node text, the log and tests)."""
        expected = self.expected()
        return {"mode": self.mode, "fasa_calls": self.calls, "fasa_places": len(self.hits),
                "fasa_places_expected": expected, "evals": self.evals, "evals_in_window": self.evals_in_window,
                "layers_hit": self.layers_hit(), "layers_active": self.active_layers,
                "mask_coverage": dict(self.coverage)}


def describe(summary: dict, seconds: float | None = None) -> str:
    """One short paragraph for a node's UI text: mode, layers hit, places acted vs expected, mask coverage, time."""
    cov = summary["mask_coverage"]
    shares = sorted(set(round(100 * v, 1) for v in cov.values()))
    cov_text = (f"{shares[0]}%" if len(shares) == 1 else f"{shares[0]}-{shares[-1]}%") if shares else "n/a"
    expected = summary["fasa_places_expected"]
    acted = summary["fasa_places"]
    if not summary["layers_active"]:
        verdict = "FASA did not run: the mask is empty on every chosen layer"
    elif acted == expected:
        verdict = "FASA ran at every expected place"
    else:
        verdict = f"FASA ran at {acted} of {expected} expected places"
    line = (f"{verdict}. mode {summary['mode']}; layers hit {len(summary['layers_hit'])}/{len(cov)}; "
            f"(step, layer) places {acted}/{expected}; attention calls {summary['fasa_calls']}; "
            f"mask coverage per layer grid {cov_text}")
    if seconds is not None:
        line += f"; {seconds:.1f} s"
    return line

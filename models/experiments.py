"""A/B experiments: declared arms, deterministic assignment, outcome attribution, report.

An experiments file (YAML) declares experiments; the first ``active`` one applies. Each
arm is a model (``hybrid`` or any component of ``models/registry.py``: ``content``,
``itemitem``, ``mf``, ``popularity``...) and optional hybrid weight overrides (the
registry's weight names, ``w_content``...), with a traffic share. A lead's arm is a hash of the
experiment's salt and the lead id, so every worker, and every restart, agrees.

Attribution is per lead: the lead remembers its last few recommendation lists (id, time,
experiment, arm, and for the newest five the listings). ``recommendation_shown`` and
``recommendation_clicked`` name their list; a save, booking request, offer or conversion
on a listing of a list shown within the attribution window is credited to the most
recent such list. The same functions run in the worker (metrics) and in ``leadstream
experiments report`` (which replays the topics), so they agree.

>>> exp = Experiment.model_validate({"name": "e1", "salt": "s", "arms": [
...     {"name": "control", "share": 0.5}, {"name": "content", "share": 0.5,
...                                          "model": "content"}]})
>>> arms = [exp.arm_for(f"L{i}").name for i in range(1000)]
>>> exp.arm_for("L7").name == exp.arm_for("L7").name, 450 < arms.count("control") < 550
(True, True)
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from leadstream.models import registry
from leadstream.models.suite import MODELS

MAX_LOGGED = 5  # recommendation lists whose listings a lead remembers (save attribution)
MAX_LOGGED_IDS = 16  # lists whose id and arm it remembers (impressions and clicks)
KINDS = ("recommendations", "impressions", "clicks", "saves", "bookings", "conversions")
_CREDITED = {"property_saved": "saves", "booking_requested": "bookings",
             "offer_made": "bookings", "outcome_recorded": "conversions"}


class Arm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    share: float = Field(gt=0, le=1)
    model: str = "hybrid"
    params: dict[str, float] = Field(default_factory=dict,
                                     description="hybrid weight overrides, e.g. w_content")

    @model_validator(mode="after")
    def _known(self):
        if self.model not in MODELS:
            raise ValueError(f"arm {self.name!r}: unknown model {self.model!r}")
        unknown = set(self.params) - set(registry.WEIGHTS)
        if unknown:
            raise ValueError(f"arm {self.name!r}: unknown params {sorted(unknown)} "
                             f"(hybrid weights: {', '.join(registry.WEIGHTS)})")
        return self


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    salt: str = ""
    active: bool = True
    attribution_window_seconds: float = 7 * 86_400.0
    arms: list[Arm] = Field(min_length=2)

    @model_validator(mode="after")
    def _shares(self):
        total = sum(a.share for a in self.arms)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"experiment {self.name!r}: arm shares add up to {total}, not 1")
        if len({a.name for a in self.arms}) != len(self.arms):
            raise ValueError(f"experiment {self.name!r}: arm names repeat")
        return self

    def bucket(self, lead_id: str) -> float:
        """The lead's point in [0, 1) for this experiment (stable across processes)."""
        h = hashlib.blake2b(f"{self.salt or self.name}:{lead_id}".encode(), digest_size=8)
        return int.from_bytes(h.digest(), "big") / 2**64

    def arm_for(self, lead_id: str) -> Arm:
        x, acc = self.bucket(lead_id), 0.0
        for arm in self.arms:
            acc += arm.share
            if x < acc:
                return arm
        return self.arms[-1]


class ExperimentsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    experiments: list[Experiment] = Field(default_factory=list)

    def active(self) -> Experiment | None:
        return next((e for e in self.experiments if e.active), None)


def load_experiments(path: str | Path | None) -> Experiment | None:
    """The active experiment of a YAML file (None without a file or an active one)."""
    if not path:
        return None
    return ExperimentsFile.model_validate(yaml.safe_load(Path(path).read_text()) or {}).active()


# ---- attribution (per lead) -------------------------------------------------------------
def log_recommendation(rec_log: list, rec_id: str, ts: float, experiment: str | None,
                       arm: str | None, items: list[str]) -> None:
    """Remember a published list in the lead's ``rec_log`` (bounded).

    The newest ``MAX_LOGGED`` lists keep their listings; older ones, up to
    ``MAX_LOGGED_IDS``, only their id and arm, so a click on a list that newer lists
    followed (a lead still scrolling an older one) is still credited.

    >>> log = []
    >>> for i in range(20):
    ...     log_recommendation(log, f"r{i}", float(i), "e", "a", ["P1"])
    >>> len(log), log[0][0], log[0][4], log[-1][4]
    (16, 'r4', [], ['P1'])
    """
    rec_log.append([rec_id, ts, experiment, arm, items, []])
    del rec_log[:-MAX_LOGGED_IDS]
    if len(rec_log) > MAX_LOGGED:
        rec_log[-MAX_LOGGED - 1][4] = []


def attribute(rec_log: list, event, window: float) -> list[tuple[str, str, str]]:
    """(experiment, arm, kind) credits for one applied event of the lead.

    A save or booking also credits ``saves_lists`` / ``bookings_lists`` the first time
    its list gets one (rates count lists, not events)."""
    et = event.event_type
    ts = event.timestamp.timestamp()
    if et in ("recommendation_shown", "recommendation_clicked"):
        rid = event.payload.recommendation_id
        for r in reversed(rec_log):
            if r[0] == rid and r[2] is not None:
                kind = "impressions" if et == "recommendation_shown" else "clicks"
                return [(r[2], r[3], kind)]
        return []
    kind = _CREDITED.get(et)
    pid = event.property_id
    if kind is None or pid is None:
        return []
    if et == "outcome_recorded" and event.payload.outcome != "converted":
        return []
    for r in reversed(rec_log):
        if r[2] is not None and pid in r[4] and 0 <= ts - r[1] <= window:
            out = [(r[2], r[3], kind)]
            if kind in ("saves", "bookings") and kind not in r[5]:
                r[5].append(kind)
                out.append((r[2], r[3], f"{kind}_lists"))
            return out
    return []


def replay_counts(items, window: float) -> dict[str, dict[str, int]]:
    """Per-arm counts from time-ordered ``("rec", dict)`` / ``("event", event)`` items."""
    logs: dict[str, list] = {}
    counts: dict[str, dict[str, int]] = {}
    for kind, obj in items:
        if kind == "rec":
            if obj.get("experiment") is None:
                continue
            log_recommendation(logs.setdefault(obj["lead_id"], []), obj["recommendation_id"],
                               _ts(obj["event_time"]), obj["experiment"], obj["arm"],
                               [it["property_id"] for it in obj["items"]])
            c = counts.setdefault(obj["arm"], {})
            c["recommendations"] = c.get("recommendations", 0) + 1
        else:
            for _exp, arm, what in attribute(logs.setdefault(obj.lead_id, []), obj, window):
                c = counts.setdefault(arm, {})
                c[what] = c.get(what, 0) + 1
    return counts


def _ts(value) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp() if isinstance(value, str) else float(value)


# ---- the report ---------------------------------------------------------------------------
def wilson(k: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a proportion.

    >>> [round(x, 3) for x in wilson(20, 100)]
    [0.133, 0.289]
    """
    if n <= 0:
        return (0.0, 0.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(c - h, 0.0), min(c + h, 1.0))


def two_proportion_p(k1: float, n1: float, k2: float, n2: float) -> float:
    """Two-sided p-value of a two-proportion z-test (1.0 when undefined).

    >>> round(two_proportion_p(50, 1000, 80, 1000), 4)
    0.0065
    """
    if min(n1, n2) <= 0:
        return 1.0
    p = (k1 + k2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = (k1 / n1 - k2 / n2) / se
    return math.erfc(abs(z) / math.sqrt(2))


def report(counts: dict[str, dict[str, float]], experiment: Experiment,
           alpha: float = 0.05) -> dict:
    """Per-arm rates with 95 % intervals, each arm against the first (control).

    ``counts[arm][kind]``; rates: click-through = clicks / impressions, save rate and
    booking rate = lists with an attributed save (booking) / lists published, where a
    list counts once however many saves it got (``saves_lists``, ``bookings_lists``)."""
    arms = [a.name for a in experiment.arms]
    control = arms[0]
    out = {"experiment": experiment.name, "control": control, "alpha": alpha, "arms": {}}
    rates = {"click_through": ("clicks", "impressions"),
             "save_rate": ("saves_lists", "recommendations"),
             "booking_rate": ("bookings_lists", "recommendations")}
    for arm in arms:
        c = counts.get(arm, {})
        row = {k: c.get(k, 0) for k in (*KINDS, "saves_lists", "bookings_lists")}
        for name, (num, den) in rates.items():
            k, n = c.get(num, 0), c.get(den, 0)
            lo, hi = wilson(k, n)
            entry = {"value": round(k / n, 5) if n else 0.0, "ci95": [round(lo, 5), round(hi, 5)]}
            if arm != control:
                cc = counts.get(control, {})
                p = two_proportion_p(k, n, cc.get(num, 0), cc.get(den, 0))
                entry["p_value"] = round(p, 6)
                entry["significant"] = p < alpha
            row[name] = entry
        out["arms"][arm] = row
    return out

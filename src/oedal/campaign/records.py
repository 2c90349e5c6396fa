"""The records an iteration keeps beside its stores (docs/file-formats.md), typed, each read and written in
one place, atomically:

* :class:`Status` (``status.json``) — the state entering the iteration: sizes, labels spent and failed so
  far, whether the campaign has stopped and why; written by the split (iteration 0) and by the merge;
* :class:`Request` (``request.json``) — what the iteration sends to the oracle (the selected ids and,
  with a validation redraw, the fresh draw) and the stop decision taken after its evaluation;
* :class:`ExploreCounts` (``explore.json``) — what the iteration's walkers did: clean, with candidates,
  stopped, waiting; frames judged; whether exploration has converged.

And the campaign's own record, ``campaign.json`` (:func:`record_campaign`): every setting and the plan.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from oedal.errors import InputError
from oedal.files import atomic_path

R = TypeVar("R", bound="Record")


def read_json(path: str | Path) -> dict:
    """A JSON object from ``path``; InputError naming the file when it is missing or not JSON."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a JSON object")
    return data


def write_json(path: str | Path, data: dict, *, sort_keys: bool = True) -> None:
    """``data`` as indented JSON (keys sorted unless told), written atomically (folders made)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=sort_keys) + "\n")


class Record:
    """A record file: its fields as a dataclass. A field ``more`` (where a record has one) keeps the keys
    it does not name, so a newer file's keys are carried along, not dropped."""

    SORT_KEYS = True  # key order of the file: sorted, or the fields' order

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)  # type: ignore[call-overload]
        more = data.pop("more", {})
        return {**data, **more}

    @classmethod
    def from_dict(cls: type[R], data: dict, where: str = "record") -> R:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        known = {k: v for k, v in data.items() if k in names and k != "more"}
        if "more" in names:
            known["more"] = {k: v for k, v in data.items() if k not in names}
        try:
            return cls(**known)
        except TypeError as err:
            raise InputError(f"{where}: not a {cls.__name__} record ({err})") from None

    @classmethod
    def read(cls: type[R], path: str | Path) -> R:
        return cls.from_dict(read_json(path), str(path))

    def write(self, path: str | Path) -> None:
        write_json(path, self.to_dict(), sort_keys=self.SORT_KEYS)


@dataclass
class Status(Record):
    """``status.json``: the state entering an iteration."""

    iteration: int
    stopped: bool
    reason: str | None
    n_train: int
    n_valid: int
    n_pool: int
    labels_spent: int  # labels paid for so far, the initial training and validation structures included
    labels_failed: int = 0  # of those, the ones the oracle failed on
    more: dict[str, Any] = field(default_factory=dict)  # e.g. ``explore``: the counts of the walkers that made the pool

    @classmethod
    def initial(cls, n_train: int, n_valid: int, n_pool: int) -> "Status":
        """Iteration 0: the initial training and validation structures are the labels spent."""
        return cls(0, False, None, n_train, n_valid, n_pool, n_train + n_valid, 0)


@dataclass
class Request(Record):
    """``request.json``: what an iteration sends to the oracle and the stop decision taken after it."""

    stop: bool
    reason: str | None  # why the campaign stops after this iteration (None: it goes on)
    selected_ids: list[int]  # the selected batch, in picking order
    valid_ids: list[int]  # a redrawn validation set (empty: kept)
    n_informative: int | None  # pool structures with I > 1 (None: not counted)
    n_shards: int

    @property
    def requested(self) -> list[int]:
        return self.selected_ids + self.valid_ids


@dataclass
class ExploreCounts(Record):
    """``explore.json``: what one iteration's walkers did (oedal.campaign.explore.walker.summary), in the
    order the walkers' summary gives it."""

    SORT_KEYS = False

    walkers: int
    clean: int  # ran their full length without a trigger (no candidate, not stopped)
    with_candidates: int
    stopped: int
    waiting: int  # the temperature ramp has not reached them yet
    accurate_frames: int
    candidate_frames: int
    clean_share: float
    stop_reasons: list[str]
    converged: bool = False  # clean_share ≥ converged_at
    converged_at: float = 1.0
    candidates: int | None = None  # frames in the iteration's pool (None: not counted)


def record_campaign(config: dict, out: str | Path) -> dict:
    """Write the resolved campaign settings with their plan to ``out`` (campaign.json): ``campaign`` (every
    setting, defaults filled in), ``batches`` (the planned batch size of each selection round) and
    ``last_iteration``; so that a report or status made mid-run knows the settings and the plan."""
    from oedal.campaign.plan import plan_batches, validate_campaign

    settings = validate_campaign(config, str(out))
    batches = plan_batches(settings)
    record = {"campaign": settings.model_dump(mode="json"), "batches": batches, "last_iteration": len(batches)}
    write_json(out, record)
    return record

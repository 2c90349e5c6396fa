"""The label cache (DESIGN §10): every oracle result, stored once under (structure hash, level of theory),
looked up first by every labeling job, and read with the suspicion of any input.

* :mod:`.schema` — the SQLite file: tables, safe opening by any number of processes, errors in one line;
* :mod:`.entries` — a level, a label, its geometry, and the checks every entry passes on its way out;
* :mod:`.label_cache` — :class:`LabelCache`: lookup, claim, store, quarantine;
* :mod:`.transfer` — export to extxyz, refill from labeled stores, check every entry.
"""

from oedal.oracles.cache.entries import Entry, Geometry, Label, Level, level_of
from oedal.oracles.cache.label_cache import LabelCache
from oedal.oracles.cache.schema import JOURNALS, Journal
from oedal.oracles.cache.transfer import add_stores, check_cache, export_labels

__all__ = ["Entry", "Geometry", "JOURNALS", "Journal", "Label", "LabelCache", "Level", "add_stores", "check_cache",
           "export_labels", "level_of"]

"""Oracles: ab initio (or replayed) labels for selected structures, and the shard labeling job.

* :func:`get_oracle` builds the oracle an :class:`~oedal.settings.OracleSettings` names;
  ``Oracle.label(atoms) -> (energy eV, forces (n, 3) eV/Å)`` raises on failure.
* :func:`label_store` labels one shard: unlabeled store in, labeled.h5 and failed.h5 out.
"""

from oedal.oracles.base import ASEOracle, Oracle, OracleFailure, get_oracle
from oedal.oracles.labeling import LabelReport, checkpoint_path, label_store

__all__ = ["ASEOracle", "LabelReport", "Oracle", "OracleFailure", "checkpoint_path", "get_oracle", "label_store"]

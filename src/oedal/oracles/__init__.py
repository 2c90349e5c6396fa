"""Oracles: ab initio (or replayed) labels for selected structures, and the shard labeling job.

* :func:`get_oracle` builds the oracle an oracle settings object names (:data:`OracleSettings`,
  a union discriminated by ``kind``; the registry is :data:`ORACLES`);
  ``Oracle.label(atoms) -> (energy eV, forces (n, 3) eV/Å or None: energy only)`` raises on failure.
* :func:`label_store` labels one shard: unlabeled store in, labeled.h5 and failed.h5 out, through the
  label cache (:class:`LabelCache`: every result stored once under (content hash, level of theory)).
"""

from oedal.oracles.base import ASEOracle, Oracle, OracleFailure
from oedal.oracles.cache import LabelCache, export_labels, level_of
from oedal.oracles.labeling import LabelReport, checkpoint_path, label_store
from oedal.oracles.registry import ORACLES, OracleSettings, get_oracle, oracle_settings

__all__ = ["ASEOracle", "LabelCache", "LabelReport", "ORACLES", "Oracle", "OracleFailure", "OracleSettings",
           "checkpoint_path", "export_labels", "get_oracle", "label_store", "level_of", "oracle_settings"]

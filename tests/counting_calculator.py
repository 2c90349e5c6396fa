"""A test oracle (``oracle.kind: ase``, ``calculator: "counting_calculator:counting_emt"``): ASE's EMT
that appends ``pid id`` to a log file after every finished calculation, so that tests count the oracle
calls of every process (killed ones too); with ``wait_for`` it starts no calculation before that file
exists. Importable when tests/ is on PYTHONPATH."""

from __future__ import annotations

import os
import time

from ase.calculators.emt import EMT


class CountingEMT(EMT):
    def __init__(self, log: str, delay: float = 0.0, fail: bool = False, wait_for: str = "") -> None:
        super().__init__()
        self.log, self.delay, self.fail, self.wait_for = log, delay, fail, wait_for

    def calculate(self, atoms=None, properties=("energy",), system_changes=("positions",)):
        while self.wait_for and not os.path.exists(self.wait_for):
            time.sleep(0.01)
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("this calculator always fails")
        super().calculate(atoms, properties, system_changes)
        with open(self.log, "a") as fh:
            fh.write(f"{os.getpid()} {self.atoms.info.get('id')}\n")


def counting_emt(log: str, delay: float = 0.0, fail: bool = False, wait_for: str = "") -> CountingEMT:
    return CountingEMT(log, delay, fail, wait_for)


def calls(log) -> list[tuple[int, int]]:
    """(pid, id) of every finished calculation in ``log``."""
    if not os.path.exists(log):
        return []
    with open(log) as fh:
        return [tuple(int(x) for x in line.split()) for line in fh if line.strip()]

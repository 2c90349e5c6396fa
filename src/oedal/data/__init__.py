"""Data layer: ragged structures, the HDF5 store, importers, named data sets, validation (Å, eV, eV/Å)."""

from oedal.data.datasets import DATASETS, load_dataset, resolve_dataset
from oedal.data.importers import export_file, import_file
from oedal.data.store import StoreReader, read_store, write_store
from oedal.data.structures import Structures
from oedal.data.validate import validate_structures

__all__ = [
    "DATASETS", "Structures", "StoreReader", "export_file", "import_file", "load_dataset",
    "read_store", "resolve_dataset", "validate_structures", "write_store",
]

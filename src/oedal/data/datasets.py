"""Named data sets: resolved from a local data folder, else downloaded (sha256-checked) to a cache.

Search order for a named file: the ``data_dir`` argument, then ``$OEDAL_DATA_DIR``, then the cache
(``$OEDAL_CACHE_DIR`` or ~/.cache/oedal), then a download from its public origin (or from
``base_url`` / ``$OEDAL_DATA_URL`` + file name). QM9 comes from the qm9pack package.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from oedal.data.importers import import_file
from oedal.files import atomic_path
from oedal.data.structures import Structures
from oedal.errors import InputError

log = logging.getLogger(__name__)

ENV_DATA_DIR = "OEDAL_DATA_DIR"
ENV_CACHE_DIR = "OEDAL_CACHE_DIR"
ENV_DATA_URL = "OEDAL_DATA_URL"
ETHANOL_URL = "https://github.com/viktorzaverkin/ethanol_datasets_git/raw/82651a9ceaecbb6bc7fea318cb833b1d010732a4/"


@dataclass(frozen=True)
class DatasetInfo:
    """One named data set: file name, folder inside a data dir, origin, checksum, import format."""

    name: str
    filename: str | None
    subdir: str | None
    base_url: str | None
    sha256: str | None
    fmt: str
    note: str = ""


DATASETS: dict[str, DatasetInfo] = {
    "ethanol_1000K": DatasetInfo(
        "ethanol_1000K", "ethanol_1000K.npz", "gmnn_ethanol", ETHANOL_URL,
        "92798619adde55363528a213dc2f0776137640d79bb007db247019e6bdb300d9", "gmnn-npz",
    ),
    "ethanol_500K": DatasetInfo(
        "ethanol_500K", "ethanol_500K.npz", "gmnn_ethanol", ETHANOL_URL,
        "8825037a0440a308b235e3f8546b4e1a7d074fa4ee6977db8dfe4b48adbbea23", "gmnn-npz",
    ),
    "wbe": DatasetInfo(
        "wbe", "WBe_PRB2019_JSON.tar.gz", "wbe", None,
        "24fe23647fca3a36434c6da034f179c808e97d72a6b0510e9d3f2c16f8355f27", "wbe",
        note="there is no public tarball: pack FitSNAP's examples/WBe_PRB2019/JSON/ folder (commit "
        "1a9b0507fa2ba292a6497ec363707944c1cb89cd) with `tar czf WBe_PRB2019_JSON.tar.gz "
        "examples/WBe_PRB2019/JSON` and put it in $OEDAL_DATA_DIR/wbe/ (any packing of those files "
        "imports the same; the sha256 is that of the reference packing)",
    ),
    "qm9": DatasetInfo("qm9", None, None, None, None, "qm9", note="from the qm9pack package"),
}


def cache_dir() -> Path:
    """$OEDAL_CACHE_DIR, else ~/.cache/oedal."""
    return Path(os.environ.get(ENV_CACHE_DIR) or Path.home() / ".cache" / "oedal")


def sha256_of(path: Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, sha256: str | None, timeout: float = 60.0) -> Path:
    """Fetch ``url`` into a temporary file beside ``dest``; rename only when its sha256 matches.

    A mismatch or a broken transfer removes the temporary file and raises (nothing is left behind).
    """
    h = hashlib.sha256()
    log.info("downloading %s", url)
    with atomic_path(dest, suffix=".part") as tmp:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
        if sha256 is not None and h.hexdigest() != sha256:
            raise InputError(f"{url}: downloaded file has sha256 {h.hexdigest()}, expected {sha256}; refused")
    return dest


def _local_candidates(info: DatasetInfo, data_dir: str | Path | None) -> list[Path]:
    dirs = [Path(d) for d in (data_dir, os.environ.get(ENV_DATA_DIR)) if d]
    out = []
    for d in dirs:
        if info.subdir:
            out.append(d / info.subdir / info.filename)  # type: ignore[operator]
        out.append(d / info.filename)  # type: ignore[operator]
    return out


def resolve_dataset(
    name: str, data_dir: str | Path | None = None, *, base_url: str | None = None, download_missing: bool = True
) -> Path:
    """Path of the file behind a named data set (not for qm9, which lives in a package)."""
    if name not in DATASETS:
        raise InputError(f"{name}: unknown data set (known: {', '.join(DATASETS)})")
    info = DATASETS[name]
    if info.filename is None:
        raise InputError(f"{name}: has no data file ({info.note})")
    for path in _local_candidates(info, data_dir):
        if path.is_file():
            log.debug("%s found at %s", name, path)
            return path
    cached = cache_dir() / info.filename
    if cached.is_file() and (info.sha256 is None or sha256_of(cached) == info.sha256):
        return cached
    base = base_url or os.environ.get(ENV_DATA_URL) or info.base_url
    where = ", ".join(str(p) for p in _local_candidates(info, data_dir)) or f"(no data dir; set {ENV_DATA_DIR})"
    if base is None or not download_missing:
        raise FileNotFoundError(f"{name}: {info.filename} not found in {where} nor in {cache_dir()}; {info.note}")
    url = base.rstrip("/") + "/" + info.filename
    try:
        return download(url, cached, info.sha256)
    except (OSError, http.client.HTTPException) as err:  # URLError, HTTPError: no network, refused, cut off
        reason = " ".join(str(getattr(err, "reason", err)).split())
        raise FileNotFoundError(f"{name}: {info.filename} not found in {where} nor in {cache_dir()}, and the "
                                f"download from {url} failed ({reason}); put the file in a folder and pass "
                                f"--data-dir FOLDER (or set ${ENV_DATA_DIR})") from None


def load_dataset(name_or_path: str | Path, data_dir: str | Path | None = None, **checks) -> Structures:
    """Structures of a named data set (ethanol_1000K, ethanol_500K, qm9, wbe) or of any importable path.

    ``checks`` go to :func:`oedal.data.importers.import_file` (limit, min_distance, known_numbers, ...).
    """
    name = str(name_or_path)
    if name in DATASETS:
        info = DATASETS[name]
        if info.fmt == "qm9":
            return import_file("qm9", "qm9", **checks)
        return import_file(resolve_dataset(name, data_dir), info.fmt, **checks)
    return import_file(name_or_path, "auto", **checks)

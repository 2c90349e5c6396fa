"""Named data sets: local data folder, environment variable, sha256-checked download to a cache."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from oedal.cli import main
from oedal.data import DATASETS, load_dataset, read_store, resolve_dataset, write_store
from oedal.data import datasets as ds
from oedal.errors import InputError


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An http.server on 127.0.0.1 serving a folder (base URL, folder)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", root
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No data dir or URL from the environment; an empty cache under tmp_path."""
    monkeypatch.delenv(ds.ENV_DATA_DIR, raising=False)
    monkeypatch.delenv(ds.ENV_DATA_URL, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv(ds.ENV_CACHE_DIR, str(cache))
    return cache


def test_registry_checksums_match_shared_files(shared_data: Path) -> None:
    for name in ("ethanol_1000K", "ethanol_500K", "wbe"):
        info = DATASETS[name]
        assert ds.sha256_of(shared_data / info.subdir / info.filename) == info.sha256, name


def test_resolve_from_argument_and_environment(shared_data: Path, no_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = shared_data / "gmnn_ethanol" / "ethanol_500K.npz"
    assert resolve_dataset("ethanol_500K", shared_data) == expected
    monkeypatch.setenv(ds.ENV_DATA_DIR, str(shared_data))
    assert resolve_dataset("ethanol_500K") == expected
    s = load_dataset("ethanol_500K", limit=10)
    assert len(s) == 10 and s.has_forces


def test_wbe_without_data_explains_packing(no_env: Path) -> None:
    with pytest.raises(FileNotFoundError, match="tar czf"):
        resolve_dataset("wbe")
    with pytest.raises(InputError, match="unknown data set"):
        resolve_dataset("nope")


def test_download_good_file(shared_data: Path, no_env: Path, server: tuple[str, Path]) -> None:
    base, root = server
    (root / "ethanol_1000K.npz").write_bytes((shared_data / "gmnn_ethanol" / "ethanol_1000K.npz").read_bytes())
    path = resolve_dataset("ethanol_1000K", base_url=base)
    assert path == no_env / "ethanol_1000K.npz" and ds.sha256_of(path) == DATASETS["ethanol_1000K"].sha256
    assert sorted(p.name for p in no_env.iterdir()) == ["ethanol_1000K.npz"]
    (root / "ethanol_1000K.npz").unlink()
    assert resolve_dataset("ethanol_1000K", base_url=base) == path  # served from the cache now


def test_download_corrupt_file_is_refused(no_env: Path, server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    base, root = server
    (root / "ethanol_500K.npz").write_bytes(b"not the data set")
    monkeypatch.setenv(ds.ENV_DATA_URL, base)
    with pytest.raises(InputError, match="sha256"):
        resolve_dataset("ethanol_500K")
    assert not no_env.exists() or list(no_env.iterdir()) == []
    with pytest.raises(Exception):  # 404: nothing left behind either
        ds.download(base + "missing.npz", no_env / "missing.npz", None)
    assert list(no_env.iterdir()) == []


def test_a_failed_download_is_one_line_naming_where_it_looked(no_env: Path, server: tuple[str, Path], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    base, _ = server  # serves nothing: 404
    with pytest.raises(FileNotFoundError, match=r"ethanol_500K.npz not found in .*missing dir.* download .* failed"):
        resolve_dataset("ethanol_500K", tmp_path / "missing dir", base_url=base)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv(ds.ENV_DATA_URL, base)
    try:
        argv = ["import", "ethanol_500K", "--data-dir", str(tmp_path / "x; y"), "--out", str(tmp_path / "o.h5")]
        assert main(argv) == 2
    finally:
        monkeypatch.undo()
    ours = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("127.0.0.1")]  # the server's
    assert len(ours) == 1 and ours[0].startswith("oedal import: error: ethanol_500K:") and "x; y" in ours[0], ours


def test_download_without_checksum(tmp_path: Path, server: tuple[str, Path]) -> None:
    base, root = server
    (root / "f.bin").write_bytes(b"abc")
    out = ds.download(base + "f.bin", tmp_path / "dl" / "f.bin", hashlib.sha256(b"abc").hexdigest())
    assert out.read_bytes() == b"abc"


def test_load_dataset_by_path(tmp_path: Path, ethanol_structures) -> None:
    write_store(tmp_path / "e.h5", ethanol_structures.subset(range(7)))
    s = load_dataset(tmp_path / "e.h5")
    np.testing.assert_array_equal(s.positions, ethanol_structures.positions[:63])


def test_cli_named_import(tmp_path: Path, shared_data: Path, no_env: Path) -> None:
    out = tmp_path / "w.h5"
    assert main(["import", "wbe", "--data-dir", str(shared_data), "--out", str(out), "--limit", "5"]) == 0
    w = read_store(out)
    assert len(w) == 5 and w.pbc.all()
    assert main(["import", "qm9", "--out", str(tmp_path / "q.h5"), "--limit", "3"]) == 0
    assert read_store(tmp_path / "q.h5").n_atoms.tolist() == [5, 4, 3]


def test_import_without_network_ends_in_one_line_with_the_way_out(tmp_path: Path, no_env: Path, monkeypatch,
                                                                  capsys) -> None:
    """No local file and no network (a refused connection): exit 2, one error line naming --data-dir."""
    monkeypatch.setenv(ds.ENV_DATA_URL, "http://127.0.0.1:9/")  # the discard port: nothing listens
    assert main(["import", "ethanol_1000K", "--out", str(tmp_path / "e.h5")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "--data-dir" in err[0] and "ethanol_1000K.npz" in err[0], err
    assert not (tmp_path / "e.h5").exists() and not list(no_env.glob("*"))


@pytest.mark.parametrize("fmt", ["wbe", "gmnn-npz", "rmd17-npz"])
def test_a_file_of_another_format_ends_in_one_line_naming_the_formats(tmp_path: Path, fmt: str, capsys) -> None:
    wrong = tmp_path / "WBe.tar.gz"
    wrong.write_text("not what the format expects\n")
    assert main(["import", str(wrong), "--format", fmt, "--out", str(tmp_path / "w.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot be read as {fmt}" in err[0] and "gmnn-npz, rmd17-npz, ase" in err[0], err

"""Safe extraction: members must stay inside the target, links too, no devices, a size limit,
and a stamp written only after a complete extraction."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest
from test_data_helpers import zip_bytes

from stfcat.data import UnsafeArchiveError
from stfcat.data.extract import STAMP, is_extracted, safe_extract


def _tar(path, members):
    """members: list of (TarInfo kwargs, data or None)."""
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            ti = tarfile.TarInfo(info.pop("name"))
            for k, v in info.items():
                setattr(ti, k, v)
            if data is not None:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(ti)
    return path


def _nothing_written(tmp_path, target):
    assert not target.exists()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.partial")]
    assert not list(tmp_path.rglob("escaped*"))


def test_zip_extracts_with_stamp(tmp_path):
    arc = tmp_path / "a.zip"
    arc.write_bytes(zip_bytes({"top/a.txt": b"a", "top/sub/b.txt": b"bb"}))
    out = safe_extract(arc, tmp_path / "out")
    assert (out / "top/sub/b.txt").read_bytes() == b"bb" and is_extracted(out)
    (out / "top/a.txt").write_bytes(b"changed")
    safe_extract(arc, out)  # stamped: nothing redone
    assert (out / "top/a.txt").read_bytes() == b"changed"
    safe_extract(arc, out, force=True)
    assert (out / "top/a.txt").read_bytes() == b"a"


def test_half_finished_extraction_is_redone(tmp_path):
    arc = tmp_path / "a.zip"
    arc.write_bytes(zip_bytes({"a.txt": b"a", "b.txt": b"b"}))
    target = tmp_path / "out"
    target.mkdir()
    (target / "a.txt").write_bytes(b"partial")  # an interrupted run: no stamp
    safe_extract(arc, target)
    assert (
        (target / "a.txt").read_bytes() == b"a"
        and (target / "b.txt").is_file()
        and (target / STAMP).is_file()
    )


def test_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    arc = tmp_path / "a.zip"
    arc.write_bytes(zip_bytes({"a.txt": b"a" * 10, "b.txt": b"b" * 10}))
    orig_open = open

    def boom(path, mode="r", *a, **k):
        if "w" in mode and str(path).endswith("b.txt"):
            raise OSError("disk full")
        return orig_open(path, mode, *a, **k)

    monkeypatch.setattr("builtins.open", boom)
    with pytest.raises(OSError, match="disk full"):
        safe_extract(arc, tmp_path / "out")
    monkeypatch.undo()
    _nothing_written(tmp_path, tmp_path / "out")


@pytest.mark.parametrize(
    "name", ["../escaped.txt", "a/../../escaped.txt", "/tmp/escaped.txt", "C:/escaped.txt", "..\\escaped.txt"]
)
def test_zip_path_traversal_refused(tmp_path, name):
    arc = tmp_path / "bad.zip"
    arc.write_bytes(zip_bytes({"ok.txt": b"ok", name: b"evil"}))
    with pytest.raises(UnsafeArchiveError, match="refused"):
        safe_extract(arc, tmp_path / "sub" / "out")
    _nothing_written(tmp_path, tmp_path / "sub" / "out")


def test_zip_outward_symlink_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "../../etc")
    arc = tmp_path / "l.zip"
    arc.write_bytes(buf.getvalue())
    with pytest.raises(UnsafeArchiveError, match="link to '../../etc'"):
        safe_extract(arc, tmp_path / "out")
    _nothing_written(tmp_path, tmp_path / "out")


@pytest.mark.parametrize(
    "kind,link",
    [(tarfile.SYMTYPE, "/etc/passwd"), (tarfile.SYMTYPE, "../../escaped"), (tarfile.LNKTYPE, "../escaped")],
)
def test_tar_outward_links_refused(tmp_path, kind, link):
    arc = _tar(
        tmp_path / "t.tar.gz",
        [({"name": "ok.txt"}, b"ok"), ({"name": "d/l", "type": kind, "linkname": link}, None)],
    )
    with pytest.raises(UnsafeArchiveError, match="outside the target"):
        safe_extract(arc, tmp_path / "out")
    _nothing_written(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_tar_device_files_refused(tmp_path, kind):
    arc = _tar(tmp_path / "t.tar.gz", [({"name": "dev", "type": kind}, None)])
    with pytest.raises(UnsafeArchiveError, match="device file"):
        safe_extract(arc, tmp_path / "out")
    _nothing_written(tmp_path, tmp_path / "out")


def test_tar_inward_link_is_materialised(tmp_path):
    arc = _tar(
        tmp_path / "t.tar.gz",
        [
            ({"name": "d/real.txt"}, b"data"),
            ({"name": "d/alias.txt", "type": tarfile.SYMTYPE, "linkname": "real.txt"}, None),
        ],
    )
    out = safe_extract(arc, tmp_path / "out")
    alias = out / "d" / "alias.txt"
    assert alias.read_bytes() == b"data" and not alias.is_symlink()


def test_size_limit(tmp_path):
    arc = tmp_path / "big.zip"
    arc.write_bytes(zip_bytes({"a.bin": b"\0" * 5000, "b.bin": b"\0" * 5000}))
    with pytest.raises(UnsafeArchiveError, match="over the limit of 8000 bytes"):
        safe_extract(arc, tmp_path / "out", max_bytes=8000)
    _nothing_written(tmp_path, tmp_path / "out")
    assert safe_extract(arc, tmp_path / "out", max_bytes=20000).joinpath("b.bin").stat().st_size == 5000


def test_size_limit_counts_written_bytes(tmp_path, monkeypatch):
    # an archive that under-declares its sizes is stopped by the byte counter
    import stfcat.data.extract as ex

    arc = tmp_path / "liar.zip"
    arc.write_bytes(zip_bytes({"a.bin": b"\1" * 9000}))
    monkeypatch.setattr(ex, "check_members", lambda members, archive, max_bytes: None)
    with pytest.raises(UnsafeArchiveError, match="exceeds the limit"):
        safe_extract(arc, tmp_path / "out", max_bytes=4000)
    _nothing_written(tmp_path, tmp_path / "out")


def test_not_an_archive(tmp_path):
    p = tmp_path / "x.zip"
    p.write_bytes(b"plain text")
    with pytest.raises(UnsafeArchiveError, match="not a zip or tar"):
        safe_extract(p, tmp_path / "out")

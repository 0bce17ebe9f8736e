"""Archives given as data_dir: read like a folder, and refused whole when a member would land
outside the folder they are unpacked in, or the archive is corrupt."""

from __future__ import annotations

import io
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest

from helpers import Store
from neuroflow.data.prepared import prepare
from neuroflow.data.sources import load_source
from neuroflow.errors import DataError
from neuroflow.settings import PrepareConfig

# --- archives ------------------------------------------------------------------------------


def add_file(tar: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_special(tar: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    tar.addfile(info)


def make_tar(path: Path, idx_folder: Path, inside: str = "", extra=None) -> Path:
    """A tar (gzip-compressed when `path` says so) of the IDX files, under `inside`, plus
    whatever `extra(tar)` adds."""
    mode = "w:gz" if path.name.endswith((".tar.gz", ".tgz")) else "w"
    with tarfile.open(path, mode) as tar:
        for file in sorted(idx_folder.iterdir()):
            tar.add(file, arcname=f"{inside}{file.name}")
        if extra:
            extra(tar)
    return path


def make_zip(path: Path, idx_folder: Path, inside: str = "", extra=None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zip_file:
        for file in sorted(idx_folder.iterdir()):
            zip_file.write(file, f"{inside}{file.name}")
        if extra:
            extra(zip_file)
    return path


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch) -> Path:
    """The temporary folder archives are unpacked in, so a test can see what is left there."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.mark.parametrize("suffix", [".zip", ".tar", ".tar.gz", ".tgz"])
@pytest.mark.parametrize("inside", ["", "mnist/"], ids=["top", "subfolder"])
def test_an_archive_of_idx_files_is_read_like_a_folder(
    tmp_path, idx_folder, scratch, suffix, inside
):
    make = make_zip if suffix == ".zip" else make_tar
    archive = make(tmp_path / f"digits{suffix}", idx_folder, inside)
    source = load_source("idx", str(archive))
    by_origin = {p.origin: p for p in source.parts}
    assert set(by_origin) == {"train-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"}
    assert by_origin["t10k-images-idx3-ubyte.gz"].official_test
    assert len(by_origin["train-images-idx3-ubyte"].labels) == 300
    assert source.uri == archive.resolve().as_uri()
    unpacked = Path(source.unpacked.name)
    assert unpacked.parent == scratch and unpacked.is_dir()
    del source, by_origin
    assert not unpacked.exists()  # the unpacked copy goes with the last reference to the source


def test_preprocess_prepares_a_zipped_folder_made_on_a_mac(tmp_path, idx_folder, scratch):
    def mac_metadata(zip_file):
        zip_file.writestr("__MACOSX/mnist/._train-images-idx3-ubyte", b"\x00\x05\x16\x07")
        zip_file.writestr("mnist/._train-labels-idx1-ubyte", b"\x00\x05\x16\x07")

    archive = make_zip(tmp_path / "digits.zip", idx_folder, "mnist/", mac_metadata)
    config = PrepareConfig(dataset="idx", data_dir=str(archive))
    meta = prepare(load_source("idx", config.data_dir), tmp_path / "prepared", config)
    assert meta["source"] == archive.resolve().as_uri()
    assert meta["official_test"] and meta["splits"]["test"]["count"] == 100
    assert meta["splits"]["train"]["count"] + meta["splits"]["val"]["count"] == 300


def escapes(tmp_path: Path) -> dict[str, Path]:
    """Where the bad members below would land if they were unpacked: one level above the
    unpacked folder is the scratch folder."""
    return {"up": tmp_path / "scratch" / "evil", "absolute": tmp_path / "abs-evil"}


BAD_TAR_MEMBERS = {
    "../evil": lambda tar, tmp: add_file(tar, "../evil"),
    "mnist/../../evil": lambda tar, tmp: add_file(tar, "mnist/../../evil"),
    "absolute path": lambda tar, tmp: add_file(tar, str(tmp / "abs-evil")),
    "symlink to /etc": lambda tar, tmp: add_special(tar, "etc", tarfile.SYMTYPE, "/etc"),
    "symlink up": lambda tar, tmp: add_special(tar, "up", tarfile.SYMTYPE, "../../abs-evil"),
    "hardlink to /etc/passwd": lambda tar, tmp: add_special(
        tar, "passwd", tarfile.LNKTYPE, "/etc/passwd"
    ),
    "device": lambda tar, tmp: add_special(tar, "null", tarfile.CHRTYPE),
}


@pytest.mark.parametrize("bad", BAD_TAR_MEMBERS)
def test_a_tar_with_one_unsafe_member_is_refused_whole(tmp_path, idx_folder, scratch, bad):
    archive = make_tar(
        tmp_path / "bad.tar.gz", idx_folder, extra=lambda tar: BAD_TAR_MEMBERS[bad](tar, tmp_path)
    )
    with tarfile.open(archive) as tar:
        name = tar.getmembers()[-1].name
    with pytest.raises(DataError) as refused:
        load_source("idx", str(archive))
    message = str(refused.value)
    assert message.startswith(f"archive {archive.resolve()}: member {name!r} ")
    assert "expected relative paths" in message and "\n" not in message
    assert list(scratch.iterdir()) == []  # nothing unpacked, the temporary folder removed
    assert not any(path.exists() for path in escapes(tmp_path).values())


BAD_ZIP_MEMBERS = {
    "../evil": lambda zip_file, tmp: zip_file.writestr("../evil", b"x"),
    "..\\evil": lambda zip_file, tmp: zip_file.writestr("..\\evil", b"x"),
    "absolute path": lambda zip_file, tmp: zip_file.writestr(str(tmp / "abs-evil"), b"x"),
    "symlink": lambda zip_file, tmp: zip_file.writestr(symlink_info("etc"), "/etc"),
}


def symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize("bad", BAD_ZIP_MEMBERS)
def test_a_zip_with_one_unsafe_member_is_refused_whole(tmp_path, idx_folder, scratch, bad):
    archive = make_zip(
        tmp_path / "bad.zip", idx_folder, extra=lambda z: BAD_ZIP_MEMBERS[bad](z, tmp_path)
    )
    with zipfile.ZipFile(archive) as zip_file:
        name = zip_file.infolist()[-1].filename
    with pytest.raises(DataError) as refused:
        load_source("idx", str(archive))
    message = str(refused.value)
    assert message.startswith(f"archive {archive.resolve()}: member {name!r} ")
    assert "expected relative paths" in message and "\n" not in message
    assert list(scratch.iterdir()) == []
    assert not any(path.exists() for path in escapes(tmp_path).values())


def truncated(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


CORRUPT = {
    "garbage.zip": lambda tmp, idx: (tmp / "garbage.zip").write_bytes(b"not a zip" * 100),
    "garbage.tgz": lambda tmp, idx: (tmp / "garbage.tgz").write_bytes(b"not a tar" * 100),
    "truncated.zip": lambda tmp, idx: truncated(make_zip(tmp / "truncated.zip", idx)),
    "truncated.tar.gz": lambda tmp, idx: truncated(make_tar(tmp / "truncated.tar.gz", idx)),
}


@pytest.mark.parametrize("name", CORRUPT)
def test_a_corrupt_archive_gets_one_line(tmp_path, idx_folder, scratch, name):
    CORRUPT[name](tmp_path, idx_folder)
    archive = (tmp_path / name).resolve()
    with pytest.raises(DataError, match=f"^archive {re.escape(str(archive))} cannot be unpacked"):
        load_source("idx", str(archive))
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_an_archive_bigger_than_the_free_disk_is_refused_before_writing(
    tmp_path, idx_folder, scratch, monkeypatch, suffix
):
    zeros = b"\0" * 2**25  # 32 MiB that compress to a few dozen KiB
    make = make_zip if suffix == ".zip" else make_tar
    add = (
        (lambda z: z.writestr("mnist/zeros", zeros))
        if suffix == ".zip"
        else (lambda tar: add_file(tar, "mnist/zeros", zeros))
    )
    archive = make((tmp_path / f"bomb{suffix}").resolve(), idx_folder, "mnist/", extra=add)
    assert archive.stat().st_size < 2**21
    disk = shutil.disk_usage(scratch)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: disk._replace(free=2**24))  # 16 MiB
    with pytest.raises(DataError, match=r"unpacks to 32\.\d MiB, more than the 16\.0 MiB free"):
        load_source("idx", str(archive))
    assert list(scratch.iterdir()) == []


def test_an_archive_with_idx_files_in_two_folders_is_ambiguous(tmp_path, idx_folder, scratch):
    archive = make_tar(
        tmp_path / "two.tar",
        idx_folder,
        "a/",
        extra=lambda tar: [tar.add(f, f"b/{f.name}") for f in sorted(idx_folder.iterdir())],
    )
    with pytest.raises(DataError, match="holds IDX files in a, b; expected one folder"):
        load_source("idx", str(archive))


def test_an_archive_without_idx_files_names_the_archive(tmp_path, scratch):
    archive = (tmp_path / "notes.zip").resolve()
    with zipfile.ZipFile(archive, "w") as zip_file:
        zip_file.writestr("notes.txt", "no data here")
    with pytest.raises(DataError, match=f"^archive {re.escape(str(archive))} holds no IDX pairs"):
        load_source("idx", str(archive))


# --- end to end ----------------------------------------------------------------------------


# --- end to end ----------------------------------------------------------------------------


@pytest.mark.slow
def test_preprocess_through_mlflow_run_reads_a_good_archive_and_refuses_a_bad_one(
    tmp_path, idx_folder
):
    store_folder, scratch = tmp_path / "store", tmp_path / "scratch"
    store_folder.mkdir()
    scratch.mkdir()
    store, env = Store(store_folder), {"TMPDIR": str(scratch)}

    good = make_tar(tmp_path / "digits.tar.gz", idx_folder, "mnist/")
    result = store.run("preprocess", env=env, dataset="idx", data_dir=good)
    assert result.returncode == 0, result.stderr
    run = store.get(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_count"] == 100  # the archive's official test split

    bad = make_tar(tmp_path / "bad.tar", idx_folder, extra=lambda tar: add_file(tar, "../evil"))
    result = store.run("preprocess", env=env, dataset="idx", data_dir=bad)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = result.error_lines()
    assert line.startswith(f"preprocess: error: archive {bad.resolve()}: member '../evil' ")
    assert store.get(result.run_id).info.status == "FAILED"
    assert not (scratch / "evil").exists()  # where ../evil would have landed
    assert list(scratch.glob("neuroflow-idx-*")) == []  # both unpacked copies removed

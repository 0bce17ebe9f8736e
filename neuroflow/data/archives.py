"""Archives of data files (.zip, .tar, .tar.gz, .tgz), unpacked only when every member is safe.

Every member is checked before anything is written: its name, and a link's target, must be a
relative path without '..' components, and it must be a file, a folder or such a link. Then no
member can land outside the target folder, even through a chain of links, because every link
already unpacked points below its own folder. One bad member refuses the whole archive. Tar
archives are also unpacked with tarfile's "data" filter, which checks each member again
against the folder as it stands on disk. An archive that would unpack to more than the target's
free disk space (an archive bomb, or just too big) is refused before anything is written; the
sizes come from the members' headers, which both formats hold the unpacked data to.
"""

from __future__ import annotations

import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from neuroflow.errors import DataError

SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
EXPECTED = "relative paths without '..' to files, folders or links inside the archive"


def is_archive(path: Path) -> bool:
    """Whether `path` is an existing file named like an archive this module unpacks."""
    return path.is_file() and path.name.lower().endswith(SUFFIXES)


def extract(archive: Path, target: Path) -> None:
    """Unpack `archive` into the folder `target`, or raise a one-line DataError naming the
    archive and, for an unsafe member, the member."""
    kind = "zip" if archive.name.lower().endswith(".zip") else "tar"
    try:
        if kind == "zip":
            _extract_zip(archive, target)
        else:
            _extract_tar(archive, target)
    except tarfile.FilterError as error:  # the data filter caught what the checks let through
        raise DataError(
            f"archive {archive}: refused a member ({error}); expected {EXPECTED}"
        ) from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(
            f"archive {archive} cannot be unpacked ({detail}); expected an intact {kind} archive"
        ) from None


def _extract_tar(archive: Path, target: Path) -> None:
    with tarfile.open(archive) as tar:  # compression detected from the content
        members = [m for m in tar.getmembers() if not _is_mac_metadata(m.name)]
        for member in members:
            _check_name(archive, member.name)
            if member.issym() or member.islnk():
                _check_link(archive, member.name, member.linkname)
            elif not (member.isfile() or member.isdir()):
                _refuse(archive, member.name, "is a device, pipe or other special file")
        _check_space(archive, sum(m.size for m in members if m.isfile()), target)
        tar.extractall(target, members=members, filter="data")


def _extract_zip(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as zip_file:
        members = [i for i in zip_file.infolist() if not _is_mac_metadata(i.filename)]
        for info in members:
            _check_name(archive, info.filename)
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when no unix file type is recorded
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                _refuse(archive, info.filename, "is a link or special file")
        _check_space(archive, sum(i.file_size for i in members), target)
        zip_file.extractall(target, members=members)


def _check_space(archive: Path, unpacked: int, target: Path) -> None:
    free = shutil.disk_usage(target).free
    if unpacked > free:
        raise DataError(
            f"archive {archive} unpacks to {_size(unpacked)}, more than the {_size(free)} free "
            f"in {target}; expected an archive that fits on disk"
        )


def _size(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def _check_name(archive: Path, name: str) -> None:
    if _is_absolute(name):
        _refuse(archive, name, "has an absolute path")
    if ".." in _parts(name):
        _refuse(archive, name, "climbs out of the archive with '..'")


def _check_link(archive: Path, name: str, link: str) -> None:
    if _is_absolute(link) or ".." in _parts(link):
        _refuse(archive, name, f"links to {link!r}, outside its own folder")


def _is_absolute(name: str) -> bool:
    return name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) is not None


def _parts(name: str) -> list[str]:
    return re.split(r"[/\\]", name)


def _is_mac_metadata(name: str) -> bool:
    """macOS archivers add __MACOSX/ folders and ._<name> twins; they hold no data."""
    path = PurePosixPath(name.replace("\\", "/"))
    return "__MACOSX" in path.parts or path.name.startswith("._")


def _refuse(archive: Path, name: str, problem: str) -> None:
    raise DataError(f"archive {archive}: member {name!r} {problem}; expected {EXPECTED}")

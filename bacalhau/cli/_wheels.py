"""`run python -r requirements.txt`: pure-Python wheels resolved on the client into the context.

The guest is CPython 3.12 compiled to WASI: it can import pure-Python code only. pip resolves the
requirements for that target (`pip download --only-binary :all: --platform any --python-version
3.12 --implementation py --abi none`), which can only choose wheels tagged for any platform; each
wheel is then checked for compiled code and unpacked into `site-packages/` of the staged context,
which the executor puts on `sys.path` after `/app`. pip reads its usual configuration: a
requirements file may say `--no-index` and `--find-links DIR` to use a local folder of wheels.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

from bacalhau.errors import UsageError

SITE_PACKAGES = "site-packages"  # in the context: /app/site-packages in the guest
GUEST_PYTHON = "3.12"
_COMPILED = (".so", ".pyd", ".dll", ".dylib", ".a", ".o")
_NO_MATCH = re.compile(r"No matching distribution found for ([^\s;]+)")
_WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


def pip_download(requirements: Path, dest: Path) -> list[Path]:
    """Download the pure-Python wheels `requirements` needs (with their dependencies) into
    `dest`; the wheel files. Raises UsageError naming a package that has no such wheel."""
    if not requirements.is_file():
        raise UsageError(f"-r {requirements}: no such file")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--no-input",
        "--only-binary",
        ":all:",
        "--platform",
        "any",
        "--python-version",
        GUEST_PYTHON,
        "--implementation",
        "py",
        "--abi",
        "none",
        "--dest",
        str(dest),
        "-r",
        str(requirements),
    ]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UsageError(f"-r {requirements}: cannot run pip: {e}") from None
    if res.returncode != 0:
        out = res.stderr + res.stdout
        m = _NO_MATCH.search(out)
        if m is not None:
            raise UsageError(
                f"-r {requirements}: {m.group(1)} has no pure-Python wheel (py3-none-any); "
                "packages with compiled code cannot run in Python jobs",
                hint="drop it, or find a pure-Python alternative",
            )
        if "No module named pip" in out:
            raise UsageError("-r needs pip in the Python that runs bacalhauctl")
        last = [line for line in out.splitlines() if line.strip()]
        raise UsageError(
            f"-r {requirements}: pip could not resolve it: {last[-1].strip() if last else '?'}"
        )
    return sorted(dest.glob("*.whl"))


def unpack(wheels: list[Path], target: Path) -> None:
    """Unpack pure-Python `wheels` into `target` (a site-packages folder). Raises UsageError
    naming a wheel that holds compiled code, is not a wheel, or has a path leaving `target`."""
    for wheel in wheels:
        m = _WHEEL_NAME.match(wheel.name)
        name = m.group("name") if m else wheel.name
        if m is None or not wheel.name.endswith("-none-any.whl"):
            raise UsageError(
                f"{name} has compiled code ({wheel.name}); Python jobs run pure Python only",
                hint="drop it, or find a pure-Python alternative",
            )
        try:
            with zipfile.ZipFile(wheel) as zf:
                members = zf.infolist()
                for info in members:
                    compiled = PurePosixPath(info.filename).suffix in _COMPILED
                    if compiled or ".so." in info.filename:
                        raise UsageError(
                            f"{name} has compiled code ({info.filename} in {wheel.name}); "
                            "Python jobs run pure Python only",
                            hint="drop it, or find a pure-Python alternative",
                        )
                for info in members:
                    rel = _destination(info.filename)
                    if rel is None or info.is_dir():
                        continue
                    out = target.joinpath(*rel.parts)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(out, "wb") as dst:
                        while chunk := src.read(1 << 20):
                            dst.write(chunk)
        except (zipfile.BadZipFile, OSError) as e:
            raise UsageError(f"cannot unpack {wheel.name}: {e}") from None


def _destination(member: str) -> PurePosixPath | None:
    """Where a wheel member goes below site-packages (None: not installed, e.g. scripts).
    Raises UsageError for an absolute path or one with '..'."""
    p = PurePosixPath(member)
    if p.is_absolute() or ".." in p.parts or "\\" in member or not p.parts:
        raise UsageError(f"refusing wheel member {member!r}: it leaves the package folder")
    if p.parts[0].endswith(".data"):
        if len(p.parts) > 2 and p.parts[1] in ("purelib", "platlib"):
            return PurePosixPath(*p.parts[2:])
        return None  # scripts, headers, data: nothing a job imports
    return p


def size_of(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            total += os.lstat(os.path.join(root, name)).st_size
    return total

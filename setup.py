"""Build: compiles bacalhau/_fast with Cython and generates protobuf/gRPC stubs from proto/.

Switches (environment):
  BACALHAU_SKIP_CYTHON=1     build no extension; the pure-Python twins are used.
  BACALHAU_REQUIRE_CYTHON=1  fail the build if the extension cannot be compiled.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import ClassVar

from setuptools import Command, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTO_DIR = ROOT / "proto"
PB_PACKAGE = ROOT / "bacalhau" / "_pb"


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def generate_protos() -> None:
    """Generate bacalhau/_pb/** from proto/** (messages, and gRPC stubs for services)."""
    from grpc_tools import protoc  # build requirement

    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    if not protos:
        return
    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed on " + " ".join(protos))
        if PB_PACKAGE.exists():
            shutil.rmtree(PB_PACKAGE)
        shutil.copytree(tmp, PB_PACKAGE)
        PB_PACKAGE.chmod(0o755)  # copytree copies the temp dir's 0700
    # protoc writes imports relative to proto/ (``from bacalhau.v1 import x_pb2``); the
    # generated tree lives under bacalhau._pb, so point those imports there.
    top = sorted({p.split("/", 1)[0] for p in protos})
    pattern = re.compile(r"^(from|import) (" + "|".join(map(re.escape, top)) + r")([. ])", re.M)
    for path in PB_PACKAGE.rglob("*.py*"):
        text = path.read_text()
        fixed = pattern.sub(r"\1 bacalhau._pb.\2\3", text)
        if fixed != text:
            path.write_text(fixed)
    for d in [PB_PACKAGE, *(p for p in PB_PACKAGE.rglob("*") if p.is_dir())]:
        (d / "__init__.py").touch()


class BuildProtos(Command):
    description = "generate protobuf and gRPC stubs from proto/ into bacalhau/_pb"
    user_options: ClassVar[list[tuple[str, str | None, str]]] = []

    def initialize_options(self) -> None:
        pass

    def finalize_options(self) -> None:
        pass

    def run(self) -> None:
        generate_protos()


class BuildPy(build_py):
    def run(self) -> None:
        generate_protos()
        super().run()


class BuildExt(build_ext):
    def run(self) -> None:
        generate_protos()
        try:
            super().run()
        except Exception as exc:
            if _flag("BACALHAU_REQUIRE_CYTHON"):
                raise
            print(f"warning: compiling bacalhau._fast failed ({exc}); using pure Python")

    def build_extension(self, ext):  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:
            if _flag("BACALHAU_REQUIRE_CYTHON"):
                raise
            print(f"warning: compiling {ext.name} failed ({exc}); using pure Python")


def extensions() -> list:  # type: ignore[type-arg]
    if _flag("BACALHAU_SKIP_CYTHON"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        if _flag("BACALHAU_REQUIRE_CYTHON"):
            raise
        return []
    return cythonize(
        ["bacalhau/_fast/*.pyx"],
        compiler_directives={"language_level": "3"},
        quiet=True,
    )


setup(
    ext_modules=extensions(),
    cmdclass={"build_protos": BuildProtos, "build_py": BuildPy, "build_ext": BuildExt},
)

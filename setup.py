"""Build: compile the Cython hot path in _fastpath/ into gateway._fastpath.

The source tree keeps three folders (gateway/, _fastpath/, plugins/) that are installed as one
import namespace, so nothing generic like `plugins` lands in site-packages.
"""

from __future__ import annotations

import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
FASTPATH = HERE / "_fastpath"

# .pyx modules, plus pure-Python-mode modules (.py with an augmenting .pxd) compiled the same way.
sources = sorted(FASTPATH.glob("*.pyx")) + sorted(
    p for p in FASTPATH.glob("*.py") if p.name != "__init__.py" and p.with_suffix(".pxd").exists()
)


def cython_include_root() -> str:
    """A folder where `gateway/_fastpath` resolves to `_fastpath/`.

    Extensions are compiled under their installed names (gateway._fastpath.X), so relative
    cimports between them look for gateway/_fastpath/*.pxd; this tree makes those paths exist
    without moving the sources.
    """
    root = HERE / "build" / "cython-include"
    package = root / "gateway"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.pxd").touch()
    link = package / "_fastpath"
    if not link.exists():
        link.symlink_to(FASTPATH.resolve(), target_is_directory=True)
    return str(root)


# LAMBDAGATE_BUILD_ONLY=parser,router compiles just those modules (quicker edit-compile loops).
only = {name for name in os.environ.get("LAMBDAGATE_BUILD_ONLY", "").split(",") if name}
if only:
    sources = [src for src in sources if src.stem in only]

extensions = [
    Extension(
        f"gateway._fastpath.{src.stem}",
        [str(src.relative_to(HERE))],
        extra_compile_args=["-O3"] if os.name == "posix" else [],
    )
    for src in sources
]

setup(
    packages=["gateway", "gateway._fastpath", "gateway.plugins"],
    package_dir={"gateway": "gateway", "gateway._fastpath": "_fastpath", "gateway.plugins": "plugins"},
    package_data={"gateway": ["py.typed"], "gateway._fastpath": ["*.pxd", "*.pyi", "py.typed"]},
    ext_modules=cythonize(
        extensions,
        language_level=3,
        include_path=[cython_include_root()],
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
    ),
    zip_safe=False,
)

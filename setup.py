"""Build wsnest's compiled core (the Cython module ``wsnest.core._frames_c``).

A build from source needs Cython (a build requirement, so pip installs it)
and a C compiler. When the compiled core cannot be built, the build FAILS
with a message saying how to get a compiler: it never silently produces a
platform wheel that runs the much slower pure-Python core (pip would cache
that wheel and reuse it).

``WSNEST_NO_EXTENSIONS=1`` at build time opts out: no compiler is needed and
the result is a pure ``py3-none-any`` wheel, which runs the pure-Python core.
``WSNEST_REQUIRE_EXTENSIONS=1`` is still accepted; it asks for the default.

The generated ``_frames_c.c`` is not shipped in the sdist: an sdist build
always runs Cython on ``_frames_c.pyx``.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_ext import build_ext
from setuptools.errors import SetupError


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


NO_EXTENSIONS = _flag("WSNEST_NO_EXTENSIONS")

if NO_EXTENSIONS and _flag("WSNEST_REQUIRE_EXTENSIONS"):
    sys.exit("WSNEST_NO_EXTENSIONS and WSNEST_REQUIRE_EXTENSIONS are both set")

HOW_TO_FIX = """\
wsnest: the compiled core could not be built: {cause}

Building wsnest from source needs a C compiler and the Python headers:
  Debian/Ubuntu:  apt install gcc python3-dev
  Fedora/RHEL:    dnf install gcc python3-devel
  Alpine:         apk add gcc musl-dev python3-dev
  macOS:          xcode-select --install
  Windows:        Microsoft C++ Build Tools (https://visualstudio.microsoft.com/visual-cpp-build-tools/)
Or build the pure-Python core instead (slower, no compiler needed; the result
is a py3-none-any wheel; --no-cache-dir keeps it out of pip's cache, where it
would stand in for later builds of this version):
  WSNEST_NO_EXTENSIONS=1 pip install --no-cache-dir --no-binary wsnest wsnest
"""


def _fail(exc: BaseException) -> SetupError:
    # setuptools prints it as the last lines of the build output ("error: ..."),
    # which is what pip shows when the build fails.
    return SetupError(HOW_TO_FIX.format(cause=f"{type(exc).__name__}: {exc}"))


class CoreBuildExt(build_ext):
    """build_ext whose failure explains how to get a compiler or opt out."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            raise _fail(exc) from exc


class CoreBdistWheel(bdist_wheel):
    """bdist_wheel that tags the wheel by what it holds: a wheel with the
    compiled core is platform specific, a WSNEST_NO_EXTENSIONS wheel is
    ``py3-none-any``."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = NO_EXTENSIONS


def _extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    core = "src/wsnest/core"
    compile_args = [] if sys.platform == "win32" else ["-O3"]
    # _kernels.h (the C kernels the .pyx includes) is a build-time input only:
    # `depends` rebuilds on its change; MANIFEST.in ships it in the sdist; the
    # wheel carries just the compiled module.
    ext = Extension(
        "wsnest.core._frames_c",
        [f"{core}/_frames_c.pyx"],
        include_dirs=[core],
        depends=[f"{core}/_kernels.h"],
        extra_compile_args=compile_args,
    )
    try:
        from Cython.Build import cythonize

        return cythonize(
            [ext],
            language_level=3,
            compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
        )
    except Exception as exc:  # Cython missing (a build without isolation) or a Cython error
        raise _fail(exc) from exc


setup(ext_modules=_extensions(), cmdclass={"build_ext": CoreBuildExt, "bdist_wheel": CoreBdistWheel})

"""Build the optional compiled core.

The Cython extension is optional: if it cannot be built the package still
installs and runs on the pure-Python twin, after a loud warning.
``WSNEST_NO_EXTENSIONS=1`` skips it; ``WSNEST_REQUIRE_EXTENSIONS=1`` turns a
failed build into an error (CI and wheel builds set it).
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


NO_EXTENSIONS = _flag("WSNEST_NO_EXTENSIONS")
REQUIRE_EXTENSIONS = _flag("WSNEST_REQUIRE_EXTENSIONS")

if NO_EXTENSIONS and REQUIRE_EXTENSIONS:
    sys.exit("WSNEST_NO_EXTENSIONS and WSNEST_REQUIRE_EXTENSIONS are both set")


def _warn(exc: BaseException) -> None:
    bar = "*" * 72
    sys.stderr.write(
        f"\n{bar}\nwsnest: the compiled core could not be built ({exc!r}).\n"
        "wsnest will run on its pure-Python core, which is much slower.\n"
        f"Set WSNEST_REQUIRE_EXTENSIONS=1 to make this an error.\n{bar}\n\n"
    )


class OptionalBuildExt(build_ext):
    """build_ext that falls back to the pure core instead of failing."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            if REQUIRE_EXTENSIONS:
                raise
            _warn(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            if REQUIRE_EXTENSIONS:
                raise
            _warn(exc)


def _extensions() -> list:
    if NO_EXTENSIONS:
        return []
    core = "src/wsnest/core"
    compile_args = [] if sys.platform == "win32" else ["-O3"]
    # _kernels.h (the C kernels the .pyx includes) is a build-time input only:
    # `depends` rebuilds on its change and ships it in the sdist; the wheel
    # carries just the compiled module.
    ext = Extension(
        "wsnest.core._frames_c",
        [f"{core}/_frames_c.pyx"],
        include_dirs=[core],
        depends=[f"{core}/_kernels.h"],
        extra_compile_args=compile_args,
    )
    try:
        from Cython.Build import cythonize
    except ImportError as exc:
        if REQUIRE_EXTENSIONS:
            raise
        _warn(exc)
        return []
    try:
        return cythonize(
            [ext],
            language_level=3,
            compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
        )
    except Exception as exc:  # Cython errors: fall back like a failed compile
        if REQUIRE_EXTENSIONS:
            raise
        _warn(exc)
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})

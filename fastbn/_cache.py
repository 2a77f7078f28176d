"""Where fastbn's compiled CPU kernels live: a per-user cache, never the package.

Numba's ``cache=True`` writes machine code beside the source
(``fastbn/cpu/__pycache__``).  pip does not know those files, so
``pip uninstall fastbn`` leaves the folder behind, and a later editable install
is shadowed by it as a namespace package.  Instead, fastbn keeps its kernels in

* ``$NUMBA_CACHE_DIR/fastbn/<key>/`` when ``NUMBA_CACHE_DIR`` is set, else
* the per-user cache directory, ``~/.cache/fastbn/<key>/`` on Linux
  (``$XDG_CACHE_HOME`` is honoured), ``~/Library/Caches/fastbn`` on macOS,
  ``%LOCALAPPDATA%\\fastbn\\Cache`` on Windows,

with one subfolder per package folder (``cpu/``).  ``<key>`` holds fastbn's
version, the Python and Numba versions and a hash of the kernel sources
(``fastbn/cpu/`` and ``fastbn/config.py``) and of the import name, so kernels
compiled by another fastbn version, or from sources that have changed since,
or by a copy of the sources imported under another name, are never loaded:
Numba itself checks only the file that defines a kernel, not the helpers
other files inline into it.  The install directory is never written, so it
may be read-only, and two installs of the same sources share their kernels.

:class:`FastbnLocator` is the Numba cache locator that does this.  It claims
only files inside this package, so Numba places every other library's cache
exactly as before.  fastbn's kernels (made by :mod:`fastbn.cpu._jit`) use it
alone, through :func:`enable`.  If neither directory is writable, Numba
saves into a private temporary folder removed at exit: every process
compiles again, one :class:`RuntimeWarning` says so, and nothing is written
into the package.  Numba's own locator list is left as it is (importing
fastbn changes no Numba setting): every ``cache=True`` kernel in fastbn goes
through :func:`fastbn.cpu._jit.jit`.

Concurrent compiles: Numba numbers a function's data files 1, 2, ... in the
order signatures are saved, so two processes saving different signatures at
once can both pick ``.1.nbc`` and leave the index pointing at the other's
machine code.  fastbn's kernels name each data file after a hash of its index
key instead, so an index entry can only ever point at its own code, and
update a function's index under a file lock (``flock``), so processes saving
different signatures at once keep each other's entries (``fastbn warmup``
compiles in parallel processes).  Where locks are unavailable a lost index
entry costs one recompile, never a wrong kernel.

``fastbn cache`` shows the directory, ``fastbn cache --clear`` empties it.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import os
import re
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numba
from numba.core import caching
from numba.core import config as numba_config
from numba.misc.appdirs import AppDirs

#: The fastbn package directory (resolved), the only tree the locator claims.
PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__))

#: Sources whose change makes every cached kernel stale (paths relative to
#: the package): the kernels, the helpers they inline and the configuration.
KERNEL_SOURCES = ("cpu", "config.py")


def _read_version() -> str:
    """fastbn's ``__version__``, read from the source (the package may still be importing)."""
    try:
        text = Path(PACKAGE_DIR, "__init__.py").read_text(encoding="utf-8")
    except OSError:
        return "unknown"
    match = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, re.MULTILINE)
    return match.group(1) if match else "unknown"


@functools.cache
def cache_key() -> str:
    """The folder name of this fastbn's kernels: versions plus a hash of the kernel sources
    and of the package's import name.  (A compiled kernel records the module it came
    from and imports it on loading: a copy of these sources imported under another
    name must not share the folder.)"""
    digest = hashlib.sha256()
    digest.update(__name__.rpartition(".")[0].encode())
    digest.update(b"\0")
    for name in KERNEL_SOURCES:
        path = Path(PACKAGE_DIR, name)
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(file.relative_to(PACKAGE_DIR).as_posix().encode())
            digest.update(b"\0")
            digest.update(file.read_bytes())
            digest.update(b"\0")
    py = f"py{sys.version_info[0]}{sys.version_info[1]}"
    return f"{_read_version()}-{py}-numba{numba.__version__}-{digest.hexdigest()[:12]}"


def user_root() -> str:
    """The per-user cache directory for fastbn (``~/.cache/fastbn`` on Linux)."""
    return AppDirs(appname="fastbn", appauthor=False).user_cache_dir


def candidate_roots() -> list[str]:
    """Where fastbn's kernels may go, in order of preference."""
    roots = []
    if numba_config.CACHE_DIR:
        roots.append(os.path.join(numba_config.CACHE_DIR, "fastbn"))
    roots.append(user_root())
    return roots


@functools.cache
def _package_subdir(directory: str) -> str | None:
    """``directory`` relative to the package (``"cpu"``, ``"."``), or None if outside it."""
    real = os.path.realpath(directory)
    if real != PACKAGE_DIR and not real.startswith(PACKAGE_DIR + os.sep):
        return None
    return os.path.relpath(real, PACKAGE_DIR)


def owns(py_file: str) -> bool:
    """Whether ``py_file`` is one of fastbn's own source files."""
    return _package_subdir(os.path.dirname(os.path.abspath(py_file))) is not None


def _writable(path: str) -> bool:
    """Create ``path`` if needed and check a file can be written there (as Numba does)."""
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


class FastbnLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """Numba cache locator for fastbn's own files: ``<root>/<cache_key()>/<subfolder>``.

    ``from_function`` returns None for any file outside the fastbn package,
    so Numba's own locators handle those, and None when no root is writable.
    """


    def __init__(self, py_func, py_file, root):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        sub = _package_subdir(os.path.dirname(os.path.abspath(py_file)))
        parts = [root, cache_key()] + ([] if sub in (None, ".") else [sub])
        self._cache_path = os.path.join(*parts)

    def get_cache_path(self):
        return self._cache_path

    @classmethod
    def from_function(cls, py_func, py_file):
        if not os.path.exists(py_file) or not owns(py_file):
            return None
        for root in (*candidate_roots(), _scratch_root):
            if callable(root):  # nothing writable: a folder this process alone uses
                root = root()
                if root is None:
                    return None
            self = cls(py_func, py_file, root)
            try:
                self.ensure_cache_path()
            except OSError:
                continue
            return self
        return None


_scratch: str | None = None


def _scratch_root() -> str | None:
    """A private temporary folder, removed at exit, for when no cache directory is writable.

    Numba must save each compiled kernel somewhere; this keeps it out of the
    package (and keeps the import from failing) while caching nothing across
    processes.  Created, and warned about, once per process.
    """
    global _scratch
    if _scratch is None:
        try:
            _scratch = tempfile.mkdtemp(prefix="fastbn-uncached-")
        except OSError:
            _scratch = ""
        else:
            atexit.register(shutil.rmtree, _scratch, True)
            warnings.warn(
                f"fastbn: no writable cache directory (tried {', '.join(candidate_roots())}): "
                "compiled kernels are kept for this process only, so every process compiles "
                "the kernels it uses again. Set NUMBA_CACHE_DIR to a writable directory.",
                RuntimeWarning, stacklevel=2)
    return _scratch or None


class _IndexDataCacheFile(caching.IndexDataCacheFile):
    """Numba's index and data files, with data files named by a hash of their key.

    Writes the data before the index entry that points at it, and never lets
    two keys share a data file, so processes saving at once cannot cross them.
    """

    def __init__(self, cache_path, filename_base, source_stamp):
        super().__init__(cache_path, filename_base, source_stamp)
        self._filename_base = filename_base

    def data_name(self, key) -> str:
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
        return f"{self._filename_base}.{digest}.nbc"

    def save(self, key, data):
        name = self.data_name(key)
        self._save_data(name, data)
        with _locked(self._index_path + ".lock"):
            # read-modify-write of the index under a lock: processes saving other
            # signatures of this kernel at the same moment keep each other's entries
            overloads = self._load_index()
            if overloads.get(key) != name:
                overloads[key] = name
                self._save_index(overloads)


@contextlib.contextmanager
def _locked(path: str):
    """An exclusive advisory lock on ``path`` (POSIX ``flock``), held for the block.

    Where locking is unavailable (Windows, a file system without locks) the
    block runs unlocked: a lost index entry then costs a recompile, never a
    wrong kernel (the data files are named by their key).
    """
    try:
        import fcntl

        handle = open(path, "a+b")  # noqa: SIM115  (closed in finally)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        handle.close()  # releases the lock


class _CacheImpl(caching.CompileResultCacheImpl):
    # Only fastbn's locator: a kernel is cached there or not at all, never
    # in the package directory.
    _locator_classes = [FastbnLocator]


class FunctionCache(caching.FunctionCache):
    """Numba's per-function cache with :class:`FastbnLocator` and hash-named data files."""

    _impl_class = _CacheImpl

    def __init__(self, py_func):
        super().__init__(py_func)
        self._cache_file = _IndexDataCacheFile(
            cache_path=self._cache_path, filename_base=self._impl.filename_base,
            source_stamp=self._impl.locator.get_source_stamp())


def enable(dispatcher) -> None:
    """Turn on fastbn's cache for a Numba dispatcher (the ``cache=True`` of fastbn's kernels).

    Never fails: should no locator apply (only possible with a user's own
    ``NUMBA_CACHE_LOCATOR_CLASSES``), the kernel stays uncached, with a warning.
    """
    if not hasattr(dispatcher, "enable_caching"):  # NUMBA_DISABLE_JIT: a plain function
        return
    try:
        dispatcher._cache = FunctionCache(dispatcher.py_func)
    except RuntimeError as exc:
        warnings.warn(f"fastbn: {exc}; the kernel is not cached", RuntimeWarning, stacklevel=2)


# -- `fastbn cache` -----------------------------------------------------------------------


@dataclass
class Usage:
    """Files and bytes under one directory."""

    path: str
    files: int = 0
    bytes: int = 0

    @classmethod
    def of(cls, path: str, pattern: str = "*") -> Usage:
        usage = cls(path)
        if os.path.isdir(path):
            for file in Path(path).rglob(pattern):
                if file.is_file():
                    usage.files += 1
                    usage.bytes += file.stat().st_size
        return usage


def active_root() -> str | None:
    """The root fastbn's kernels are cached under in this process (created), or None."""
    for root in candidate_roots():
        if _writable(os.path.join(root, cache_key())):
            return root
    return None


def _legacy_files() -> list[Path]:
    """Kernels an older fastbn cached beside the package (``__pycache__/*.nbi``, ``*.nbc``)."""
    return sorted(f for pattern in ("*.nbi", "*.nbc")
                  for f in Path(PACKAGE_DIR).rglob(f"__pycache__/{pattern}"))


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def report() -> str:
    """What ``fastbn cache`` prints: where the kernels are, how many files, how big."""
    root = active_root()
    lines = []
    if numba_config.CACHE_LOCATOR_CLASSES:
        lines.append("NUMBA_CACHE_LOCATOR_CLASSES is set: Numba places the kernels as it "
                     "names, and the paths below may be unused.")
    if root is None:
        lines.append("fastbn: no writable cache directory (tried "
                     f"{', '.join(candidate_roots())}); kernels are compiled in every "
                     "process. Set NUMBA_CACHE_DIR to a writable directory.")
    else:
        current = Usage.of(os.path.join(root, cache_key()))
        total = Usage.of(root)
        source = "per-user cache"
        if numba_config.CACHE_DIR and root == candidate_roots()[0]:
            source = "under NUMBA_CACHE_DIR"
        lines.append(f"fastbn compiled kernels ({source}): {current.path}")
        lines.append(f"  {current.files} files, {_mb(current.bytes)}")
        other_files = total.files - current.files
        if other_files:
            lines.append(f"  other fastbn versions or sources under {root}: "
                         f"{other_files} files, {_mb(total.bytes - current.bytes)}")
    legacy = _legacy_files()
    if legacy:
        size = sum(f.stat().st_size for f in legacy)
        lines.append(f"  kernels an older fastbn left beside the package ({PACKAGE_DIR}): "
                     f"{len(legacy)} files, {_mb(size)}")
    lines.append("`fastbn cache --clear` removes them all; `fastbn warmup` compiles "
                 "every kernel again.")
    return "\n".join(lines)


def clear() -> str:
    """Remove every fastbn kernel: all versions under each root, and legacy in-package files."""
    removed = Usage("")
    for root in candidate_roots():
        if os.path.basename(root.rstrip(os.sep)) != "fastbn" or not os.path.isdir(root):
            continue
        usage = Usage.of(root)
        shutil.rmtree(root, ignore_errors=True)
        removed.files += usage.files - Usage.of(root).files
        removed.bytes += usage.bytes - Usage.of(root).bytes
    for file in _legacy_files():
        try:
            size = file.stat().st_size
            file.unlink()
        except OSError:
            continue
        removed.files += 1
        removed.bytes += size
    return f"fastbn: removed {removed.files} files ({_mb(removed.bytes)}) of compiled kernels"

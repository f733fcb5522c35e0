"""Reading pickles that may not be trusted: array data only, nothing executed.

The official MANO model and RHD's annotations are Python 2 pickles. ``pickle.load`` on them would
run whatever callable the file names; :func:`load` instead admits an explicit list of globals that
only build data (numpy arrays and dtypes, scipy.sparse matrices, chumpy ``Ch`` containers, sets)
and refuses anything else before it runs, with an error naming the file and the global. chumpy
and sparse objects come back as small placeholders; :func:`to_array` turns them into ndarrays.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for something other than array data; nothing from it was executed."""


class _PickledState:
    """Stands in for a chumpy or scipy.sparse object: keeps the pickled state, runs nothing."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"unexpected state of type {type(state).__name__}")
        self.state = state


class _ChumpyCh(_PickledState):
    kind = "chumpy"


class _SparseState(_PickledState):
    kind = "sparse"
    fmt = "csc"


class _CsrState(_SparseState):
    fmt = "csr"


def _safe_reconstructor(cls, base, state):
    """``copy_reg._reconstructor`` restricted to our placeholder classes."""
    if not (isinstance(cls, type) and issubclass(cls, _PickledState)) or base is not object \
            or state is not None:
        raise UnsafePickleError(f"refusing copy_reg._reconstructor({cls!r}, {base!r})")
    return cls.__new__(cls)


def _safe_codecs_encode(text, encoding="utf-8"):
    """Python 3 protocol-2 pickles store bytes as ``_codecs.encode(str, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"refusing _codecs.encode(..., {encoding!r})")
    return text.encode("latin1")


def _numpy_core():
    try:
        from numpy._core import multiarray  # numpy ≥ 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


ALLOWED = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("copy_reg", "_reconstructor"): lambda: _safe_reconstructor,
    ("copyreg", "_reconstructor"): lambda: _safe_reconstructor,
    ("_codecs", "encode"): lambda: _safe_codecs_encode,
    ("__builtin__", "object"): lambda: object,
    ("builtins", "object"): lambda: object,
    ("__builtin__", "set"): lambda: set,
    ("builtins", "set"): lambda: set,
}
def _numpy_frombuffer():
    try:
        from numpy._core.numeric import _frombuffer  # numpy ≥ 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.numeric import _frombuffer
    return _frombuffer


for _mod in ("numpy.core.numeric", "numpy._core.numeric"):  # arrays pickled with protocol 5
    ALLOWED[(_mod, "_frombuffer")] = _numpy_frombuffer
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    ALLOWED[(_mod, "_reconstruct")] = lambda: _numpy_core()._reconstruct
    ALLOWED[(_mod, "scalar")] = lambda: _numpy_core().scalar
for _mod in ("scipy.sparse.csc", "scipy.sparse._csc"):
    ALLOWED[(_mod, "csc_matrix")] = lambda: _SparseState
for _mod in ("scipy.sparse.csr", "scipy.sparse._csr"):
    ALLOWED[(_mod, "csr_matrix")] = lambda: _CsrState
ALLOWED[("chumpy.ch", "Ch")] = lambda: _ChumpyCh


class _Unpickler(pickle.Unpickler):
    """Admits only the globals in :data:`ALLOWED`."""

    def __init__(self, file, source: str, what: str):
        super().__init__(file, encoding="latin1")
        self.source, self.what = source, what

    def find_class(self, module, name):
        factory = ALLOWED.get((module, name))
        if factory is None:
            raise UnsafePickleError(
                f"{self.source}: refusing to load '{module}.{name}': {self.what} holds only numpy "
                "and scipy.sparse arrays, chumpy containers and plain Python data, so this file "
                "is not one or has been tampered with. Nothing from it was executed.")
        return factory()


def to_array(value, key: str, source: str) -> np.ndarray:
    """Turn a placeholder (chumpy / sparse) or an ndarray into a dense float/int ndarray."""
    if isinstance(value, _ChumpyCh):
        if "x" not in value.state:
            raise ValueError(f"{source}: key {key!r} is a chumpy object without data ('x')")
        value = value.state["x"]
    elif isinstance(value, _SparseState):
        import scipy.sparse as sp

        st = value.state
        shape = st.get("_shape", st.get("shape"))
        cls = sp.csc_matrix if value.fmt == "csc" else sp.csr_matrix
        try:
            value = cls((st["data"], st["indices"], st["indptr"]), shape=shape).toarray()
        except KeyError as err:
            raise ValueError(f"{source}: key {key!r}: sparse matrix without {err}") from None
    return np.asarray(value)


def load(path, what: str = "this file") -> object:
    """Unpickle ``path`` (latin-1 for Python 2 strings) admitting only :data:`ALLOWED` globals.

    Raises:
        UnsafePickleError: the file names any other global (nothing was executed).
        ValueError: the file is not a readable pickle (message names the file).
    """
    path = Path(path)
    try:
        return _Unpickler(io.BytesIO(path.read_bytes()), str(path), what).load()
    except UnsafePickleError as err:
        if str(path) in str(err):
            raise
        raise UnsafePickleError(f"{path}: {err}. Nothing from it was executed.") from None
    except Exception as err:  # truncated / not a pickle at all
        raise ValueError(f"{path}: not a readable pickle of {what} ({type(err).__name__}: {err})") \
            from None

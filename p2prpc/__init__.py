"""p2prpc: remote procedure calls for heavy GPU- and storage-intensive functions
across machines that cannot all reach each other.

Public API (see README.md): create_p2p_client_app, p2p_progress_hook,
p2p_save / p2p_load / p2p_load_path (checkpoints, inside a function),
call_identifier, read_function, and the exceptions of p2prpc.errors.
"""
from . import errors

try:
    from . import _core
except ImportError:
    # Run from the repository root, Python imports this source folder rather
    # than the installed package, and the engine is here only once `make
    # install` has put it here: say so, not "partially initialized module".
    import importlib.util as _util

    if _util.find_spec(__name__ + "._core") is not None:
        raise  # the engine is here but did not load: its own error says why
    raise ImportError(
        "p2prpc's engine, the C extension p2prpc._core, is not built in %s: Python imported "
        "p2prpc from that folder (a source checkout comes first on sys.path when you run from "
        "its root). Run `make install` in the repository (it builds the engine and puts a copy "
        "there), or install p2prpc with `pip install .` and run from another directory."
        % __path__[0], name=__name__ + "._core") from None

from ._child import p2p_load, p2p_load_path, p2p_progress_hook, p2p_save
from ._client import create_p2p_client_app
from ._identity import call_identifier
from ._spec import read_function
from .errors import *  # noqa: F401,F403

__version__ = _core.__version__  # csrc/version.h, as the engine was built

__all__ = [
    "create_p2p_client_app",
    "p2p_progress_hook",
    "p2p_save",
    "p2p_load",
    "p2p_load_path",
    "call_identifier",
    "read_function",
    "errors",
    "__version__",
] + list(errors.__all__)

"""p2prpc: remote procedure calls for heavy GPU- and storage-intensive functions
across machines that cannot all reach each other.

Public API (see README.md): create_p2p_client_app, p2p_progress_hook,
p2p_save / p2p_load / p2p_load_path (checkpoints, inside a function),
call_identifier, read_function, and the exceptions of p2prpc.errors.
"""
from . import errors
from ._child import p2p_load, p2p_load_path, p2p_progress_hook, p2p_save
from ._client import create_p2p_client_app
from ._identity import call_identifier
from ._spec import read_function
from .errors import *  # noqa: F401,F403

__version__ = "0.1.0"

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

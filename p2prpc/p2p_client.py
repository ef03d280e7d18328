"""The seed's client module, kept so that its programs run unchanged:

    from p2prpc.p2p_client import create_p2p_client_app, p2p_progress_hook

and, inside functions, the seed's checkpoints: p2p_save, p2p_load (plus
p2p_load_path for large files).
"""
from ._child import p2p_load, p2p_load_path, p2p_progress_hook, p2p_save
from ._client import create_p2p_client_app

__all__ = ["create_p2p_client_app", "p2p_progress_hook", "p2p_save", "p2p_load",
           "p2p_load_path"]

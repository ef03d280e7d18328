"""The seed's client module, kept so that its programs run unchanged:

    from p2prpc.p2p_client import create_p2p_client_app, p2p_progress_hook
"""
from ._child import p2p_progress_hook
from ._client import create_p2p_client_app

__all__ = ["create_p2p_client_app", "p2p_progress_hook"]

# The seed's client/clientapp.py, unchanged but for the discovery and cache paths,
# which `make demo` points at its run directory through the environment.
from p2prpc.p2p_client import create_p2p_client_app
from function import p2prpc_analyze_large_file
import os
import os.path as osp
import logging

logger = logging.getLogger(__name__)

discovery = os.environ.get("P2PRPC_DEMO_DISCOVERY", "discovery.txt")
cache = os.environ.get("P2PRPC_DEMO_CACHE",
                       osp.join(osp.abspath(osp.dirname(__file__)), 'clientdb'))

client_app = create_p2p_client_app(discovery, password="super secret password", cache_path=cache)

p2prpc_analyze_large_file = client_app.register_p2p_func()(p2prpc_analyze_large_file)

res = p2prpc_analyze_large_file(video_handle=open(__file__, 'rb'), arg2=160)

print(res.get())

client_app.background_server.shutdown()

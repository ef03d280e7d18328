# The README's client, the seed's code unchanged. From the repository root:
# python examples/clientapp.py (discovery.txt and clientdb/ are those of the folder
# it runs in; `make demo` runs it in ./demo-run).
from p2prpc.p2p_client import create_p2p_client_app
from function import p2prpc_analyze_large_file

client_app = create_p2p_client_app("discovery.txt", password="super secret password",
                                   cache_path="clientdb")
p2prpc_analyze_large_file = client_app.register_p2p_func()(p2prpc_analyze_large_file)

res = p2prpc_analyze_large_file(video_handle=open(__file__, 'rb'), arg2=160)
print(res.get())          # {'results_file1': <file>, 'results_file2': <file>, 'res_var': 1600}
client_app.background_server.shutdown()

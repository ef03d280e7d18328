# The seed's function.py, with the progress-hook variant of its README: the
# loop is shortened to a few quick steps (0.05 s each, not 1 s).
import io
from p2prpc.p2p_client import p2p_progress_hook
import time


def p2prpc_analyze_large_file(video_handle: io.IOBase, arg2: int) -> {"results_file1": io.IOBase,
                                                               "results_file2": io.IOBase,
                                                               "res_var": int}:
    video_handle.close()
    for i in range(10):
        p2p_progress_hook(i, 10)
        time.sleep(0.05)
    return {"results_file1": open(video_handle.name, 'rb'),
            "results_file2": open(__file__, 'rb'),
            "res_var": 10 * arg2}

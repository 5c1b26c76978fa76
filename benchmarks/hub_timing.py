"""Cold and warm ``from_pretrained`` timings from a loopback server (the fixture checkpoint plays the official file).

Run from the repository root: ``python -m benchmarks.hub_timing``. Cold = download + git-blob SHA-1 check + conversion
to safetensors + load; warm = load from the cache.
"""
import hashlib
import lzma
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import torch

torch.set_num_threads(1)
from helpers import URL_PATH, LoopbackServer, fixture_entry, write_manifest

tmp = Path(tempfile.mkdtemp())
data = lzma.open(ROOT / "tests" / "fixtures" / "v3_authors_format.pt.xz").read()
sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
os.environ["DCASENET_HUB_MANIFEST"] = str(write_manifest(tmp / "m.json", {"fixture-v3": fixture_entry(sha1)}))
import dcasenet_hub
from dcasenet_hub.hub import registry

registry.param_count("v3")  # import torch/models once, outside the timings
from dcasenet_hub import build_model; build_model("v3")
cold, warm = [], []
with LoopbackServer({URL_PATH: data}) as srv:
    os.environ["DCASENET_HUB_MIRROR"] = srv.url
    for i in range(3):
        os.environ["DCASENET_HUB_CACHE"] = str(tmp / f"cache{i}")
        t = time.perf_counter(); dcasenet_hub.from_pretrained("fixture-v3"); cold.append(time.perf_counter() - t)
        for _ in range(3):
            t = time.perf_counter(); dcasenet_hub.from_pretrained("fixture-v3"); warm.append(time.perf_counter() - t)
    gets = len(srv.gets(URL_PATH))
print(f"size {len(data)/1e6:.1f} MB; GETs {gets} (3 cold loads)")
print("cold s:", [round(x, 2) for x in cold], "median", round(statistics.median(cold), 2))
print("warm s:", [round(x, 3) for x in warm], "median", round(statistics.median(warm), 3))

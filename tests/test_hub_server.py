"""The loopback HTTP server of tests/helpers.py: its own checks (the hub tests rely on these behaviours)."""

from __future__ import annotations

import urllib.request

from helpers import LoopbackServer


def test_server_serves_ranges_and_cuts() -> None:
    data = bytes(range(256)) * 1000
    with LoopbackServer({"/f": data}) as srv:
        assert urllib.request.urlopen(srv.url + "/f").read() == data
        req = urllib.request.Request(srv.url + "/f", headers={"Range": "bytes=1000-"})
        resp = urllib.request.urlopen(req)
        assert resp.status == 206 and resp.read() == data[1000:]
        srv.cut_after = 5000
        resp = urllib.request.urlopen(srv.url + "/f")
        try:
            got = resp.read()
        except Exception as exc:  # http.client.IncompleteRead
            got = exc.partial  # type: ignore[attr-defined]
        assert len(got) == 5000
        assert [r["range"] for r in srv.gets("/f")] == [None, "bytes=1000-", None]

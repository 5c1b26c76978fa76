"""Dataset downloads against a loopback HTTP server: MD5 checks, resume, split-zip join, safe extraction, CLI."""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import re
import stat
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import closed_port, serve_in_background

from dcasenet_hub import cli
from dcasenet_hub.train import data_download as dd

FIXTURES = Path(__file__).parent / "fixtures"
_spec = importlib.util.spec_from_file_location("make_split_zip", FIXTURES / "make_split_zip.py")
make_split_zip = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_split_zip)


class _Server:
    """Serves files of ``root`` at ``/<relative path>``; supports ``Range: bytes=N-``; can cut a transfer once."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[tuple[str, str | None]] = []
        self.cut_once: set[str] = set()
        self.honour_range = True
        self.range_shift = 0  # > 0: a broken server whose 206 answers start this many bytes early
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                path = server.root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                if rng and server.honour_range:
                    start = max(0, int(rng.split("=")[1].split("-")[0]) - server.range_shift)
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in server.cut_once:
                    server.cut_once.discard(self.path)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        serve_in_background(self.httpd)
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    with _Server(root) as s:
        yield s


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _serve(server: _Server, rel: str, data: bytes) -> str:
    path = server.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"{server.url}/{rel}"


PAYLOAD = np.random.default_rng(5).bytes(300_000)


# --- single files -----------------------------------------------------------------------------------------------------


def test_download_with_matching_md5(server, tmp_path):
    url = _serve(server, "rec/a.bin", PAYLOAD)
    out = dd.download_file(url, tmp_path / "dl" / "a.bin", md5=_md5(PAYLOAD), size=len(PAYLOAD), progress=False)
    assert out.read_bytes() == PAYLOAD
    assert not (tmp_path / "dl" / "a.bin.part").exists()
    n = len(server.requests)
    dd.download_file(url, out, md5=_md5(PAYLOAD), progress=False)  # verified file: no new request
    assert len(server.requests) == n


def test_md5_mismatch_deletes_and_names_both_sums(server, tmp_path):
    url = _serve(server, "rec/a.bin", PAYLOAD)
    wrong = "0" * 32
    with pytest.raises(dd.DownloadError, match=f"expected {wrong}, got {_md5(PAYLOAD)}"):
        dd.download_file(url, tmp_path / "a.bin", md5=wrong, progress=False)
    assert not (tmp_path / "a.bin").exists() and not (tmp_path / "a.bin.part").exists()


def test_response_larger_than_the_published_size_is_refused_before_it_is_written(server, tmp_path):
    url = _serve(server, "rec/a.bin", PAYLOAD)
    with pytest.raises(dd.DownloadError, match=f"announces {len(PAYLOAD)} bytes, more than the 1000 bytes"):
        dd.download_file(url, tmp_path / "a.bin", size=1000, progress=False)
    assert not (tmp_path / "a.bin").exists() and not (tmp_path / "a.bin.part").exists()


def test_resume_after_cut_connection(server, tmp_path):
    url = _serve(server, "rec/a.bin", PAYLOAD)
    server.cut_once.add("/rec/a.bin")
    out = dd.download_file(url, tmp_path / "a.bin", md5=_md5(PAYLOAD), progress=False)
    assert out.read_bytes() == PAYLOAD
    assert server.requests[0] == ("/rec/a.bin", None)
    assert server.requests[1] == ("/rec/a.bin", f"bytes={len(PAYLOAD) // 2}-")  # resumed, not restarted
    assert len(server.requests) == 2


def test_resume_existing_partial_file_and_fallback_without_range(server, tmp_path):
    url = _serve(server, "rec/a.bin", PAYLOAD)
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:1000])
    out = dd.download_file(url, tmp_path / "a.bin", md5=_md5(PAYLOAD), progress=False)
    assert out.read_bytes() == PAYLOAD and server.requests[-1][1] == "bytes=1000-"
    # a server that ignores Range (200 with the whole file): the download restarts and is still correct
    server.honour_range = False
    (tmp_path / "b.bin.part").write_bytes(PAYLOAD[:1000])
    out = dd.download_file(url, tmp_path / "b.bin", md5=_md5(PAYLOAD), progress=False)
    assert out.read_bytes() == PAYLOAD


def test_http_error_and_persistent_failure(server, tmp_path):
    with pytest.raises(dd.DownloadError, match="HTTP 404"):
        dd.download_file(f"{server.url}/rec/missing.bin", tmp_path / "m.bin", progress=False)
    url = _serve(server, "rec/a.bin", PAYLOAD)
    server.cut_once.add("/rec/a.bin")
    with pytest.raises(dd.DownloadError, match="partial file .* is kept"):
        dd.download_file(url, tmp_path / "a.bin", retries=0, progress=False)
    assert (tmp_path / "a.bin.part").stat().st_size == len(PAYLOAD) // 2


def test_shared_fetch_restarts_on_a_wrong_range_answer(server, tmp_path):
    """The one streaming loop of both downloaders: a 206 for other bytes than asked is not appended."""
    from dcasenet_hub.hub import fetch as _download

    url = _serve(server, "rec/a.bin", PAYLOAD)
    server.range_shift = 100
    part = tmp_path / "a.part"
    part.write_bytes(PAYLOAD[:5000])
    transfer = _download.Transfer()
    _download.fetch_into(url, part, transfer=transfer, timeout=10, progress=False)
    assert part.read_bytes() == PAYLOAD
    assert [r[1] for r in server.requests] == ["bytes=5000-", None]
    assert (transfer.start, transfer.received, transfer.total) == (0, len(PAYLOAD), len(PAYLOAD))
    # the dataset downloader through the same loop
    (tmp_path / "b.bin.part").write_bytes(PAYLOAD[:7000])
    assert dd.download_file(url, tmp_path / "b.bin", md5=_md5(PAYLOAD), progress=False).read_bytes() == PAYLOAD


def test_range_past_the_end_means_complete_for_data_and_suspect_for_weights(server, tmp_path):
    from dcasenet_hub.hub import fetch as _download

    url = _serve(server, "rec/a.bin", PAYLOAD)
    # dataset: a complete .part answered with 416 is verified and kept (one request, no body)
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD)
    assert dd.download_file(url, tmp_path / "a.bin", md5=_md5(PAYLOAD), progress=False).read_bytes() == PAYLOAD
    assert server.requests == [("/rec/a.bin", f"bytes={len(PAYLOAD)}-")]
    # weights: a partial file longer than the remote one is thrown away and fetched again, then hash-checked
    partial = tmp_path / "w.incomplete"
    partial.write_bytes(PAYLOAD + b"junk")
    _download.download(url, partial, digest=_download.git_blob_sha1_bytes(PAYLOAD), progress=False)
    assert partial.read_bytes() == PAYLOAD
    assert server.requests[1:] == [("/rec/a.bin", f"bytes={len(PAYLOAD) + 4}-"), ("/rec/a.bin", None)]


# --- split zip --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["plain", "zip64"])
def test_join_info_zip_split_archive(tmp_path, variant):
    parts = [FIXTURES / "split_zip" / variant / f"mic_dev.{ext}" for ext in ("z01", "z02", "zip")]
    # plain concatenation is not a valid archive: entries on later disks have disk-relative offsets
    cat = tmp_path / "cat.zip"
    cat.write_bytes(b"".join(p.read_bytes() for p in parts))
    # fails at open (Zip64: "multiple disks") or when reading (disk-relative offset)
    with pytest.raises(zipfile.BadZipFile), zipfile.ZipFile(cat) as z:
        z.read(make_split_zip.MEMBERS[1])
    joined = dd.join_split_zip(parts, tmp_path / "joined.zip", progress=False)
    with zipfile.ZipFile(joined) as z:
        assert z.testzip() is None
        for k, name in enumerate(make_split_zip.MEMBERS):
            assert z.read(name) == make_split_zip.split_zip_member(k)


# --- safe extraction --------------------------------------------------------------------------------------------------


def _zip_with(path: Path, name: str, *, symlink: bool = False) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("ok/inside.txt", "fine")
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, "/etc/passwd" if symlink else "payload")
    return path


@pytest.mark.parametrize("name,symlink", [
    ("../evil.txt", False), ("ok/../../evil.txt", False), ("/tmp/abs_evil.txt", False), ("C:/evil.txt", False),
    ("ok/link", True),
])
def test_safe_extract_rejects_escaping_members(tmp_path, name, symlink):
    archive = _zip_with(tmp_path / "bad.zip", name, symlink=symlink)
    dest = tmp_path / "dest"
    with pytest.raises(dd.UnsafeArchiveError, match="refusing to extract"):
        dd.safe_extract(archive, dest, progress=False)
    assert not any(dest.rglob("*"))  # nothing was written, not even the harmless member
    assert not (tmp_path / "evil.txt").exists()


def test_safe_extract_writes_members(tmp_path):
    archive = _zip_with(tmp_path / "good.zip", "ok/sub/data.bin")
    written = dd.safe_extract(archive, tmp_path / "dest", progress=False)
    assert sorted(p.relative_to(tmp_path / "dest").as_posix() for p in written) == ["ok/inside.txt", "ok/sub/data.bin"]
    assert (tmp_path / "dest" / "ok" / "sub" / "data.bin").read_text() == "payload"


def test_safe_extract_refuses_a_zip_bomb(tmp_path, monkeypatch):
    from dcasenet_hub.train import archives

    monkeypatch.setattr(archives, "MIN_EXTRACT_BOUND", 1 << 20)  # the floor scaled down, so the test stays small
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("ok/small.txt", "fine")
        z.writestr("zeros.bin", bytes(4 << 20))  # 4 MiB of zeros: a few KiB compressed
    assert archive.stat().st_size * archives.MAX_EXPANSION_RATIO < 4 << 20
    dest = tmp_path / "dest"
    with pytest.raises(dd.UnsafeArchiveError, match=r"expand to 4194308 bytes, more than the bound of 1048576"):
        dd.safe_extract(archive, dest, progress=False)
    assert not any(dest.rglob("*"))  # refused before anything was written
    # a documented way through for a genuine archive: an explicit bound
    written = dd.safe_extract(archive, dest, progress=False, max_bytes=5 << 20)
    assert (dest / "zeros.bin").stat().st_size == 4 << 20 and len(written) == 2


def _zip_members(path: Path, members: list[tuple[str, str | None]]) -> Path:
    """A zip with the given (name, text) members in order; text None makes a folder member."""
    with zipfile.ZipFile(path, "w") as z:
        for name, text in members:
            if text is None:
                z.writestr(zipfile.ZipInfo(name if name.endswith("/") else name + "/"), "")
            else:
                z.writestr(name, text)
    return path


@pytest.mark.filterwarnings("ignore:Duplicate name")  # zipfile warns when writing the duplicate on purpose
@pytest.mark.parametrize(("members", "why"), [
    ([("a", "file"), ("a/b", "under a folder of the file's name")], "which is also a file member"),
    ([("x/ok.txt", "fine"), (".", "the destination itself")], "names the destination folder"),
    ([("x/ok.txt", "first"), ("x/ok.txt", "second")], "have the same path"),
    ([("x/ok.txt", "fine"), ("d/", None), ("d", "file of the folder's name")], "is a file of the same path"),
])
def test_safe_extract_checks_every_member_before_it_writes_anything(tmp_path, members, why):
    """Before: a file then a member under a folder of its name raised a raw FileExistsError after the first was
    written; a member named '.' left a temporary file beside the destination; duplicates overwrote silently."""
    archive = _zip_members(tmp_path / "odd.zip", members)
    dest = tmp_path / "dest"
    with pytest.raises(dd.UnsafeArchiveError, match=why):
        dd.safe_extract(archive, dest, progress=False)
    assert not any(dest.rglob("*"))  # nothing was written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "odd.zip"]  # nor beside it


def test_safe_extract_refuses_members_that_clash_with_what_is_already_there(tmp_path):
    dest = tmp_path / "dest"
    (dest / "taken").mkdir(parents=True)
    (dest / "plain").write_text("a file")
    for members, why in (([("taken", "a file over a folder")], "is a folder"),
                         ([("plain/inner.txt", "under a file")], "which is a file here"),
                         ([("plain/", None)], "is a file here")):
        with pytest.raises(dd.UnsafeArchiveError, match=why):
            dd.safe_extract(_zip_members(tmp_path / "clash.zip", members), dest, progress=False)
    assert sorted(p.name for p in dest.iterdir()) == ["plain", "taken"] and not any((dest / "taken").iterdir())


def test_an_archive_cannot_touch_the_download_state(server, tmp_path, monkeypatch):
    """Before: a member downloads/<part>.extracted made `data download` report a part 'already extracted' that was
    never downloaded (FSDKaggle2019 has no published checksum, and mirrors are allowed)."""
    record = "998"
    evil = _zip_members(tmp_path / "meta.zip", [("meta/ok.csv", "1\n"), ("downloads/audio.extracted", "audio.zip\n")])
    _serve(server, f"{record}/meta.zip", evil.read_bytes())
    spec = dd.DatasetSpec(key="evil", title="evil", record=record,
                          parts={"meta": (dd.zip_archive("meta.zip"),), "audio": (dd.zip_archive("audio.zip"),)},
                          default_parts=("meta",))
    monkeypatch.setitem(dd.DATASETS, "evil", spec)
    monkeypatch.setenv(dd.MIRROR_ENV, server.url)
    dest = tmp_path / "data"
    with pytest.raises(dd.UnsafeArchiveError, match="holds the download's own state"):
        dd.download_dataset("evil", dest, parts=["meta"], progress=False)
    assert not (dest / "downloads" / "audio.extracted").exists() and not (dest / "meta").exists()


# --- whole dataset ----------------------------------------------------------------------------------------------------


@pytest.fixture()
def toy_dataset(server, monkeypatch, tmp_path):
    """A DatasetSpec served by the loopback server: one plain zip and one Info-ZIP split archive, md5s known."""
    record = "999"
    single = tmp_path / "metadata_dev.zip"
    with zipfile.ZipFile(single, "w") as z:
        z.writestr("metadata_dev/fold1_room1_mix001_ov1.csv", "0,1,0,10,0\n")
    files = {"metadata_dev.zip": single.read_bytes()}
    for ext in ("z01", "z02", "zip"):
        files[f"mic_dev.{ext}"] = (FIXTURES / "split_zip" / "plain" / f"mic_dev.{ext}").read_bytes()
    for name, data in files.items():
        _serve(server, f"{record}/{name}", data)
    spec = dd.DatasetSpec(
        key="toy", title="toy", record=record,
        parts={"metadata_dev": (dd.zip_archive("metadata_dev.zip", _md5(files["metadata_dev.zip"])),),
               "mic_dev": (dd.split_archive("mic_dev", [_md5(files[f"mic_dev.{e}"]) for e in ("z01", "z02", "zip")],
                                            3),)},
        default_parts=("mic_dev", "metadata_dev"),
    )
    monkeypatch.setitem(dd.DATASETS, "toy", spec)
    return spec


def test_download_dataset_via_mirror_joins_extracts_and_skips_on_rerun(server, toy_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv(dd.MIRROR_ENV, server.url)
    dest = tmp_path / "data"
    root = dd.download_dataset("toy", dest, progress=False)
    assert root == dest
    assert (dest / "metadata_dev" / "fold1_room1_mix001_ov1.csv").read_text() == "0,1,0,10,0\n"
    for k, name in enumerate(make_split_zip.MEMBERS):
        assert (dest / name).read_bytes() == make_split_zip.split_zip_member(k)
    assert sorted(p.name for p in (dest / "downloads").iterdir() if p.name != dd.LOCK_NAME) == [
        "metadata_dev.extracted", "mic_dev.extracted"]
    assert {p for p, _ in server.requests} == {"/999/metadata_dev.zip", "/999/mic_dev.z01", "/999/mic_dev.z02",
                                               "/999/mic_dev.zip"}
    n = len(server.requests)
    dd.download_dataset("toy", dest, progress=False)
    assert len(server.requests) == n  # finished archives are not fetched again


def test_concurrent_download_into_the_same_folder_waits_for_the_first(server, toy_dataset, tmp_path, monkeypatch):
    import time

    from filelock import FileLock

    monkeypatch.setenv(dd.MIRROR_ENV, server.url)
    dest = tmp_path / "data"
    (dest / "downloads").mkdir(parents=True)
    other_run = FileLock(str(dest / "downloads" / dd.LOCK_NAME))  # plays a first run still busy
    other_run.acquire()
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(dd.download_dataset("toy", dest, progress=False)), daemon=True)
    t.start()
    time.sleep(1.5)
    assert t.is_alive() and server.requests == []  # waiting: nothing fetched, nothing written
    other_run.release()
    t.join(30)
    assert result == [dest] and (dest / "metadata_dev" / "fold1_room1_mix001_ov1.csv").is_file()


def test_real_spec_checks_published_md5(server, tmp_path):
    # a served metadata_dev.zip that is not the real one must fail the published MD5 of record 4064792
    _serve(server, "4064792/metadata_dev.zip", b"not the real archive")
    with pytest.raises(dd.DownloadError, match="expected 979f5551e987ed247404b80a2f1c3db1"):
        dd.download_dataset("tau-nigens2020", tmp_path, parts=["metadata_dev"], mirror=server.url, progress=False)
    assert not (tmp_path / "downloads" / "metadata_dev.zip").exists()
    with pytest.raises(ValueError, match="unknown part"):
        dd.download_dataset("tau-nigens2020", tmp_path, parts=["stereo_dev"])


def test_specs_match_dcase_facts():
    asc = dd.DATASETS["tau2020-asc"]
    files = [f for part in asc.default_parts for a in asc.parts[part] for f in a.files]
    assert asc.record == "3819968" and len(files) == 18 and all(f.md5 and f.size for f in files)
    assert files[2].name.endswith("audio.1.zip") and files[2].md5 == "b1e85b8a908d3d6a6ab73268f385d5c8"
    assert files[-1].size == 436971777
    fsd = dd.DATASETS["fsdkaggle2019"]
    assert fsd.record == "3612637" and all(f.md5 is None for a in fsd.parts.values() for x in a for f in x.files)
    noisy = fsd.parts["audio_train_noisy"][0].files
    assert [f.name.rsplit(".", 1)[1] for f in noisy] == ["z01", "z02", "z03", "z04", "z05", "z06", "zip"]
    mic = dd.DATASETS["tau-nigens2020"].parts["mic_dev"][0].files
    assert [(f.name, f.md5) for f in mic] == [("mic_dev.z01", "3a2b0986d2a302498cd874d584d17689"),
                                               ("mic_dev.z02", "92f715cb74406d5556bce0fdf27f54e4"),
                                               ("mic_dev.zip", "9174daca52f393425120308ab5c14477")]


# --- CLI ----------------------------------------------------------------------------------------------------------------


def test_cli_download_and_error_exit_code(server, toy_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("dcasenet_hub.cli.data._DATASET_NAMES", ("toy", "tau-nigens2020"))
    rc = cli.main(["data", "download", "toy", "-o", str(tmp_path / "d"), "--mirror", server.url,
                   "-q", "--parts", "metadata_dev"])
    assert rc == 0 and (tmp_path / "d" / "metadata_dev" / "fold1_room1_mix001_ov1.csv").is_file()
    assert not (tmp_path / "d" / "mic_dev").exists()
    _serve(server, "4064792/metadata_dev.zip", b"corrupt")
    rc = cli.main(["data", "download", "tau-nigens2020", "-o", str(tmp_path / "e"), "--mirror", server.url,
                   "-q", "--parts", "metadata_dev"])
    assert rc == 3 and "MD5 mismatch" in capsys.readouterr().err  # the download code, as for weights


def test_cli_data_download_without_network_fails_fast_with_the_download_code(tmp_path, monkeypatch, capsys):
    """A DNS failure is not retried (it was 5 times, 62 s), exits 3 (not 2, usage) and claims no kept .part file."""
    import socket
    import time

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    t = time.perf_counter()
    rc = cli.main(["data", "download", "tau-nigens2020", "-o", str(tmp_path / "d"), "-q",
                   "--parts", "metadata_dev"])
    elapsed = time.perf_counter() - t
    err = capsys.readouterr().err
    assert rc == 3, err
    assert elapsed < 5, elapsed
    assert "cannot reach" in err and "Name or service not known" in err and ".part" not in err
    assert "nothing was written" in err and not list((tmp_path / "d" / "downloads").glob("*.part"))


@pytest.mark.parametrize("downloader", ["weights", "dataset"])
def test_both_downloaders_fail_the_same_way(downloader, server, tmp_path):
    """One loop: a wrong hash is ChecksumMismatchError (file deleted) and a host that refuses is OfflineError at once,
    for weights (git blob SHA-1) and datasets (MD5) alike."""
    import time

    from dcasenet_hub.errors import ChecksumMismatchError, OfflineError
    from dcasenet_hub.hub import fetch

    def get(url: str, dest: Path) -> Path:
        if downloader == "weights":
            return fetch.download(url, dest, digest="0" * 40, progress=False)
        return dd.download_file(url, dest, md5="0" * 32, progress=False)

    url = _serve(server, "rec/a.bin", PAYLOAD)
    with pytest.raises(ChecksumMismatchError, match="mismatch: expected 0000"):
        get(url, tmp_path / "a.bin")
    assert list(tmp_path.glob("a.bin*")) == []
    t = time.perf_counter()
    with pytest.raises(OfflineError, match="nothing was written"):
        get(f"http://127.0.0.1:{closed_port()}/rec/a.bin", tmp_path / "b.bin")
    assert time.perf_counter() - t < 5 and list(tmp_path.glob("b.bin*")) == []


def test_cli_make_mini(tmp_path, capsys):
    rc = cli.main(["data", "make-mini", "-o", str(tmp_path), "--tasks", "sed", "--sed-duration", "2",
                   "-q"])
    assert rc == 0
    assert f"--sed-root {tmp_path / 'tau-nigens2020'}" in capsys.readouterr().out
    assert len(list((tmp_path / "tau-nigens2020" / "metadata_dev").glob("*.csv"))) == 5
    rc = cli.main(["data", "make-mini", "-o", str(tmp_path / "two"), "--tasks", "sed", "--sed-duration", "2",
                   "--sed-classes", "2", "-q"])
    classes = {line.split(",")[1] for f in (tmp_path / "two" / "tau-nigens2020" / "metadata_dev").glob("*.csv")
               for line in f.read_text().splitlines()}
    assert rc == 0 and classes == {"0", "13"}


# --- free disk space -------------------------------------------------------------------------------------------------


def _disk_with(monkeypatch, free: int) -> None:
    import collections
    import shutil

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * free + 1, 9 * free + 1, free))


def test_download_on_a_full_disk_fails_before_the_first_request(server, tmp_path, monkeypatch):
    """Broken variant caught: no check (the download runs until the disk fills), or a check after fetching."""
    from dcasenet_hub._io import FREE_SPACE_MARGIN
    from dcasenet_hub.errors import DiskSpaceError

    url = _serve(server, "rec/a.bin", PAYLOAD)
    n = len(server.requests)
    _disk_with(monkeypatch, FREE_SPACE_MARGIN + len(PAYLOAD) - 1)
    with pytest.raises(DiskSpaceError, match=r"downloading a\.bin: needs .* free some space"):
        dd.download_file(url, tmp_path / "dl" / "a.bin", md5=_md5(PAYLOAD), size=len(PAYLOAD), progress=False)
    assert len(server.requests) == n and not (tmp_path / "dl" / "a.bin.part").exists()
    _disk_with(monkeypatch, FREE_SPACE_MARGIN + len(PAYLOAD))  # exactly enough: it downloads
    out = dd.download_file(url, tmp_path / "dl" / "a.bin", md5=_md5(PAYLOAD), size=len(PAYLOAD), progress=False)
    assert out.read_bytes() == PAYLOAD


def test_extract_counts_only_members_still_missing_against_free_space(tmp_path, monkeypatch):
    """Broken variants caught: no check before writing (a half-extracted tree on a full disk), or a check that
    counts members an interrupted run already extracted (a resume that needs no space refused)."""
    import zipfile

    from dcasenet_hub._io import FREE_SPACE_MARGIN
    from dcasenet_hub.errors import DiskSpaceError

    archive = tmp_path / "two.zip"
    big = np.random.default_rng(1).bytes(200_000)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("d/big.bin", big)
        zf.writestr("d/small.txt", "x" * 1000)
    _disk_with(monkeypatch, FREE_SPACE_MARGIN + 2 * len(big))  # needs big + small + the largest once more
    with pytest.raises(DiskSpaceError, match=r"extracting two\.zip"):
        dd.safe_extract(archive, tmp_path / "dest", progress=False)
    assert not (tmp_path / "dest" / "d").exists()
    (tmp_path / "dest" / "d").mkdir(parents=True)
    (tmp_path / "dest" / "d" / "big.bin").write_bytes(big)  # extracted by an interrupted earlier run
    written = dd.safe_extract(archive, tmp_path / "dest", progress=False)
    assert (tmp_path / "dest" / "d" / "small.txt").read_text() == "x" * 1000 and len(written) == 2


def test_cli_download_on_a_full_disk_is_one_line_with_the_fix(server, toy_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("dcasenet_hub.cli.data._DATASET_NAMES", ("toy", "tau-nigens2020"))
    _disk_with(monkeypatch, 1000)
    rc = cli.main(["data", "download", "toy", "-o", str(tmp_path / "d"), "--mirror", server.url,
                   "-q", "--parts", "metadata_dev"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1 and "Traceback" not in err[0]
    assert re.search(r"extracting metadata_dev\.zip: needs \d+ bytes in .* only 1,000 bytes is free", err[0])
    assert "free some space or choose a destination on another disk" in err[0]

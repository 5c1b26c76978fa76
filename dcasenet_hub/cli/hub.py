"""``dcasenet-hub list | download | cache | verify | convert | push``: the weights commands (dcasenet_hub.hub)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from dcasenet_hub.cli.vocabulary import add_output

_RAW = argparse.RawDescriptionHelpFormatter
_CACHE_DIR_HELP = ("one cache folder for all weights (default: official weights in $DCASENET_HUB_CACHE or "
                   "~/.cache/dcasenet_hub, Hugging Face repos in $HF_HUB_CACHE or ~/.cache/huggingface/hub)")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "list", help="list model ids of the weights manifest", formatter_class=_RAW,
        description="List the model ids with architecture, parameter count, source and whether they are cached.",
        epilog="example:\n  dcasenet-hub list\n  dcasenet-hub list --pretrained --cache-dir /data/hf-cache",
    )
    p.add_argument("--pretrained", action="store_true", help="only ids with published weights")
    p.add_argument("--cache-dir", help=_CACHE_DIR_HELP)
    p.set_defaults(func=_list)

    p = sub.add_parser(
        "download", help="download, verify and convert weights into the cache", formatter_class=_RAW,
        description="Fetch each id's weights (resumable, hash-checked), convert them once and print the cache folder.",
        epilog="example:\n  dcasenet-hub download dcasenet-v3 dcasenet-v3-finetune-sed\n"
               "  DCASENET_HUB_MIRROR=http://mirror.local:8000 dcasenet-hub download dcasenet-v3",
    )
    p.add_argument("ids", nargs="+", metavar="ID", help="manifest id (see `dcasenet-hub list`)")
    p.add_argument("--cache-dir", help=_CACHE_DIR_HELP)
    p.set_defaults(func=_download)

    p = sub.add_parser(
        "cache", help="show the cache folders and the converted models in them", formatter_class=_RAW,
        description="Print the package cache (converted official weights) and the Hugging Face cache, then one "
                    "line per cached model: id, size, snapshot folder. Entries in the old layout "
                    "(models--dcasenet-hub--<id> in the Hugging Face cache) are marked 'old layout'; they are moved "
                    "on first use.",
        epilog="example:\n  dcasenet-hub cache\n  DCASENET_HUB_CACHE=/data/dcasenet dcasenet-hub cache",
    )
    p.add_argument("--cache-dir", help=_CACHE_DIR_HELP)
    p.set_defaults(func=_cache)

    p = sub.add_parser(
        "verify", help="re-hash the cached weights", formatter_class=_RAW,
        description="Re-hash every cached dcasenet-hub file, in the package cache and in the Hugging Face cache, "
                    "against the hash in its name (and the manifest). Exit code 1 when a file is damaged.",
        epilog="example:\n  dcasenet-hub verify\n  dcasenet-hub verify --cache-dir /data/cache",
    )
    p.add_argument("--cache-dir", help=_CACHE_DIR_HELP)
    p.set_defaults(func=_verify)

    p = sub.add_parser(
        "convert", help="convert an authors' .pt checkpoint to config.json + model.safetensors", formatter_class=_RAW,
        description="Read an authors'-format checkpoint (torch.save(state_dict); weights_only=True), load it "
                    "strictly and write a model folder that from_pretrained() and `push` accept.",
        epilog="example:\n  dcasenet-hub convert weights/Joint/weights/best_ASC.pt --arch v3 -o dcasenet-v3-joint/",
    )
    p.add_argument("checkpoint", metavar="AUTHORS.pt")
    p.add_argument("--arch", default="v3", choices=("v1", "v2", "v3"), help="architecture (default v3)")
    add_output(p, required=True, metavar="DIR", help="output folder")
    p.add_argument("--tasks", nargs="*", choices=("scene", "tags", "events"),
                   help="heads the checkpoint was trained for (official files are recognised by hash)")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in the output folder")
    p.set_defaults(func=_convert)

    p = sub.add_parser(
        "push", help="upload a model folder to the Hugging Face Hub", formatter_class=_RAW,
        description="Load DIR strictly (config.json + model.safetensors), write a fresh model card and upload "
                    "config, weights and card to REPO_ID (created if needed). Needs a token (HF_TOKEN or --token).",
        epilog="example:\n  dcasenet-hub push dcasenet-v3-joint/ --repo-id my-org/dcasenet-v3 --private",
    )
    p.add_argument("folder", metavar="DIR")
    p.add_argument("--repo-id", required=True, help="Hugging Face repo id, org/name")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--token", help="Hugging Face token (default: HF_TOKEN or the saved login)")
    p.add_argument("--commit-message", default="Upload DcaseNet with dcasenet-hub")
    p.add_argument("--branch", help="target branch (default main)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    p.set_defaults(func=_push)


def _list(args: argparse.Namespace) -> int:
    from dcasenet_hub.hub.registry import list_models, model_info

    rows = [("ID", "ARCH", "PARAMS", "SOURCE", "CACHED")]
    for mid in list_models(pretrained=args.pretrained):
        info = model_info(mid, cache_dir=args.cache_dir)
        if not info.sources:
            source = "not published"
        else:
            source = ", ".join("huggingface" if s["type"] == "huggingface" else s.get("repo", s["type"])
                               for s in info.sources)
        if info.target != mid:
            source = f"= {info.target}"
        rows.append((mid, info.arch, f"{info.num_parameters / 1e6:.2f}M", source,
                     "yes" if info.cached else ("-" if not info.sources else "no")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _download(args: argparse.Namespace) -> int:
    from dcasenet_hub.cli.common import EXIT_MODEL
    from dcasenet_hub.errors import DownloadError, ModelError
    from dcasenet_hub.hub.api import download

    failed = 0
    for mid in args.ids:
        try:
            folder = download(mid, cache_dir=args.cache_dir, progress=False if args.quiet else None)
        except (ModelError, DownloadError) as exc:  # the others are still fetched
            print(f"dcasenet-hub download: error: {mid}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{mid}\t{folder}")
    return EXIT_MODEL if failed else 0


def _where(cache_dir: str | None) -> str:
    from dcasenet_hub.hub.cache import cache_dir_location, hf_cache_location

    cache, hf_cache = cache_dir_location(cache_dir), hf_cache_location(cache_dir)
    return str(cache) if cache == hf_cache else f"{cache} and {hf_cache}"


def _cache(args: argparse.Namespace) -> int:
    from dcasenet_hub.hub.cache import (
        cache_dir_location,
        cached_models,
        hf_cache_location,
    )

    print(f"package cache (official weights): {cache_dir_location(args.cache_dir)}")
    print(f"Hugging Face cache (repo ids):     {hf_cache_location(args.cache_dir)}")
    for m in cached_models(cache_dir=args.cache_dir):
        print(f"{m.model_id}\t{m.size / 1e6:.1f} MB\t{m.snapshot}" + ("\t(old layout)" if m.legacy else ""))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from dcasenet_hub.hub.cache import verify_cache

    checks = verify_cache(cache_dir=args.cache_dir)
    bad = [c for c in checks if not c.ok]
    for c in bad:
        print(f"DAMAGED {c.path}: expected {c.expected}, got {c.got}")
    print(f"{len(checks) - len(bad)} of {len(checks)} cached files OK in {_where(args.cache_dir)}")
    if bad:
        print("Delete the damaged model folders (models/<id> or models--...) and run `dcasenet-hub download` again.",
              file=sys.stderr)
    return 1 if bad else 0


def _convert(args: argparse.Namespace) -> int:
    from dcasenet_hub.hub.checkpoint import convert_checkpoint

    model = convert_checkpoint(args.checkpoint, args.output, arch=args.arch, trained_tasks=args.tasks,
                               overwrite=args.overwrite)
    if not args.quiet:
        print(f"wrote {args.output} (DcaseNet-{model.config.arch}, {model.num_parameters():,} parameters; "
              f"{model.config.provenance})")
    return 0


def _push(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dcasenet_hub.cli.common import EXIT_MODEL, load_model
    from dcasenet_hub.errors import HubAccessError
    from dcasenet_hub.hub.api import check_hub_access, push_to_hub

    if not Path(args.folder).is_dir():
        print(f"dcasenet-hub push: error: {args.folder} is not a folder (make one with `dcasenet-hub convert` or "
              "model.save_pretrained())", file=sys.stderr)
        return 2
    if not logging.getLogger().isEnabledFor(logging.DEBUG):  # one line per HTTP request is noise without -v
        for name in ("httpx", "httpx2", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
    model = load_model(args.folder, local_files_only=True)  # local and cheap: a wrong folder is said first
    try:  # then token and network: nothing is written before they are known to work
        check_hub_access(token=args.token)
    except HubAccessError as exc:
        print(f"dcasenet-hub push: error: {exc}", file=sys.stderr)
        return EXIT_MODEL
    try:
        url = push_to_hub(model, args.repo_id, commit_message=args.commit_message, private=args.private or None,
                          token=args.token, branch=args.branch, create_pr=args.create_pr)
    except HubAccessError as exc:  # the Hub could not be reached or refused the upload: one line naming the fix
        print(f"dcasenet-hub push: error: {exc}", file=sys.stderr)
        return EXIT_MODEL
    print(url)
    return 0

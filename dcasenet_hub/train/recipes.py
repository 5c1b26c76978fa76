"""Training recipes: one per row of the paper's Table 2, stored as JSON in ``dcasenet_hub/train/recipes``.

Task names in a recipe (``tasks`` and the keys of ``batch_size``, ``crop_seconds``, ``loss_weights``) may be the
package's (``scene``, ``tags``, ``events``) or the paper's (``asc``, ``tag``, ``sed``); they are stored as the
latter (:mod:`dcasenet_hub.train.tasks` says why).

Example:
    >>> from dcasenet_hub.train.recipes import load_recipe
    >>> r = load_recipe("v3-asc-tag-sed")
    >>> r.arch, r.tasks, r.batch_size["sed"], r.stages()[1][0]
    ('v3', ('asc', 'tag', 'sed'), 24, 'finetune-asc')
    >>> r.replace(batch_size={"scene": 8}).batch_size["asc"]
    8
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcasenet_hub.train.tasks import TASKS, keyed, task_key

RECIPE_DIR = Path(__file__).parent / "recipes"
_PER_TASK = ("batch_size", "crop_seconds", "loss_weights")


@dataclass(frozen=True)
class Recipe:
    """A training recipe: one row of the paper's Table 2 (stored as JSON in ``dcasenet_hub/train/recipes``).

    Attributes:
        name: Recipe id, e.g. ``"v3-asc-tag-sed"``.
        arch: ``"v1"``, ``"v2"`` or ``"v3"``.
        tasks: Trained tasks, subset of ``("asc", "tag", "sed")`` (``scene``, ``tags``, ``events`` accepted).
        finetune: Fine-tune every task alone from its best joint checkpoint after the joint stage.
        epochs: Epochs per stage (160).
        iterations_per_epoch: Iterations per epoch (500).
        batch_size: Global batch size per task (ASC 32, TAG 32, SED 24: the authors' ``train.sh``).
        crop_seconds: Training crop per task (5 s, 5 s, 30 s).
        mixup_alpha: Beta(alpha, alpha) of mixup, ``None`` = no mixup.
        mixup_from_epoch: First epoch index with mixup (6: the authors' ``epoch > 5``).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        amsgrad: Adam's AMSGrad variant.
        t0_epochs: Cosine restart period in epochs (T_0 = t0_epochs * iterations_per_epoch iterations).
        eta_min: Cosine schedule floor.
        loss_weights: Weight of each task's loss in the sum.
        sed_threshold: Event threshold of the SED evaluation.
        description: What the recipe is.
        paper: Table 2 numbers of this row (``joint`` and ``finetune`` dicts of ``asc_acc``, ``tag_lwlrap``,
            ``sed_f1``, ``sed_er``), for comparison.
    """

    name: str
    arch: str
    tasks: tuple[str, ...]
    finetune: bool = False
    epochs: int = 160
    iterations_per_epoch: int = 500
    batch_size: Mapping[str, int] = field(default_factory=lambda: {"asc": 32, "tag": 32, "sed": 24})
    crop_seconds: Mapping[str, float] = field(default_factory=lambda: {"asc": 5.0, "tag": 5.0, "sed": 30.0})
    mixup_alpha: float | None = 0.1
    mixup_from_epoch: int = 6
    lr: float = 1e-3
    weight_decay: float = 0.0
    amsgrad: bool = False
    t0_epochs: int = 80
    eta_min: float = 1e-6
    loss_weights: Mapping[str, float] = field(default_factory=lambda: {"asc": 1.0, "tag": 1.0, "sed": 1.0})
    sed_threshold: float = 0.3
    description: str = ""
    paper: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        given = [self.tasks] if isinstance(self.tasks, str) else list(self.tasks)
        try:
            tasks = tuple(task_key(t) for t in given)
        except ValueError as exc:
            raise ValueError(f"Recipe {self.name!r}: {exc}") from None
        if not tasks:
            raise ValueError(f"Recipe {self.name!r}: tasks must be a non-empty subset of {TASKS}, got {given}")
        object.__setattr__(self, "tasks", tuple(t for t in TASKS if t in tasks))
        if self.arch not in ("v1", "v2", "v3"):
            raise ValueError(f"Recipe {self.name!r}: unknown arch {self.arch!r} (v1, v2 or v3)")
        for name in _PER_TASK:
            try:
                d = keyed(getattr(self, name), name)
            except ValueError as exc:
                raise ValueError(f"Recipe {self.name!r}: {name}: {exc}") from None
            missing = [t for t in self.tasks if t not in d]
            if missing:
                raise ValueError(f"Recipe {self.name!r}: {name} lacks {missing}")
            object.__setattr__(self, name, d)
        if self.epochs < 1 or self.iterations_per_epoch < 1:
            raise ValueError(f"Recipe {self.name!r}: epochs and iterations_per_epoch must be >= 1")
        if any(int(self.batch_size[t]) < 1 for t in self.tasks):
            raise ValueError(f"Recipe {self.name!r}: batch sizes must be >= 1, got {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise ValueError(f"Recipe {self.name!r}: lr (--lr) must be a finite number >= 0, got {self.lr}")
        bad = {t: s for t, s in self.crop_seconds.items() if t in self.tasks and not (math.isfinite(s) and s > 0)}
        if bad:
            raise ValueError(f"Recipe {self.name!r}: crop_seconds (--crop TASK=S) must be seconds > 0, got {bad}")

    # -- serialisation ---------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The recipe as stored in JSON (task keys ``asc``, ``tag``, ``sed``)."""
        d = dataclasses.asdict(self)
        d["tasks"] = list(self.tasks)
        d["mixup"] = None if self.mixup_alpha is None else {"alpha": self.mixup_alpha,
                                                             "from_epoch": self.mixup_from_epoch}
        d["optimizer"] = {"name": "adam", "lr": self.lr, "weight_decay": self.weight_decay, "amsgrad": self.amsgrad}
        d["scheduler"] = {"name": "cosine_warm_restarts", "t0_epochs": self.t0_epochs, "eta_min": self.eta_min,
                          "step": "iteration"}
        for k in ("mixup_alpha", "mixup_from_epoch", "lr", "weight_decay", "amsgrad", "t0_epochs", "eta_min"):
            d.pop(k)
        order = ["name", "description", "arch", "tasks", "finetune", "epochs", "iterations_per_epoch", "batch_size",
                 "crop_seconds", "mixup", "optimizer", "scheduler", "loss_weights", "sed_threshold", "paper"]
        return {k: d[k] for k in order}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """A recipe from its JSON form (:meth:`to_dict`); task names in any accepted spelling."""
        d = dict(data)
        kw: dict[str, Any] = {}
        mixup = d.pop("mixup", {"alpha": 0.1, "from_epoch": 6})
        kw["mixup_alpha"] = None if not mixup else float(mixup.get("alpha", 0.1))
        if mixup:
            kw["mixup_from_epoch"] = int(mixup.get("from_epoch", 6))
        opt = d.pop("optimizer", {}) or {}
        if opt.get("name", "adam") != "adam":
            raise ValueError(f"Recipe {d.get('name')!r}: only the Adam optimizer is supported")
        for k in ("lr", "weight_decay", "amsgrad"):
            if k in opt:
                kw[k] = opt[k]
        sched = d.pop("scheduler", {}) or {}
        for k in ("t0_epochs", "eta_min"):
            if k in sched:
                kw[k] = sched[k]
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Recipe {d.get('name')!r}: unknown keys {unknown}")
        return cls(**d, **kw)

    def replace(self, **changes: Any) -> Recipe:
        """A copy with ``changes`` (per-task dicts are merged, e.g. ``batch_size={"scene": 8}`` or ``{"asc": 8}``)."""
        for name in _PER_TASK:
            if name in changes and changes[name] is not None:
                changes[name] = {**dict(getattr(self, name)), **keyed(changes[name], name)}
        return dataclasses.replace(self, **{k: v for k, v in changes.items()})

    def stages(self) -> list[tuple[str, tuple[str, ...], str | None]]:
        """``(stage name, tasks, task whose best joint checkpoint initialises it or None)`` in order."""
        first = "joint" if len(self.tasks) > 1 else "single"
        out: list[tuple[str, tuple[str, ...], str | None]] = [(first, self.tasks, None)]
        if self.finetune and len(self.tasks) > 1:
            out += [(f"finetune-{t}", (t,), t) for t in self.tasks]
        return out


def list_recipes() -> list[str]:
    """Names of the bundled recipes (one per row of the paper's Table 2)."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.json"))


def load_recipe(name_or_path: str | Path | Recipe) -> Recipe:
    """A bundled recipe by name (see :func:`list_recipes`) or a recipe JSON file.

    Raises:
        ValueError: unknown name or invalid file (the message lists the bundled recipes).
    """
    if isinstance(name_or_path, Recipe):
        return name_or_path
    p = Path(name_or_path)
    if not (p.suffix == ".json" and p.exists()):
        p = RECIPE_DIR / f"{name_or_path}.json"
    if not p.exists():
        raise ValueError(f"Unknown recipe {str(name_or_path)!r}. Bundled recipes: {', '.join(list_recipes())} "
                         "(or give a path to a recipe .json)")
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"Cannot read recipe {p}: {exc}") from exc
    return Recipe.from_dict(data)


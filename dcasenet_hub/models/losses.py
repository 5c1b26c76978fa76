"""The heads' training losses and the authors' mixup, shared by fine-tuning and training.

Example:
    >>> import numpy as np, torch
    >>> from dcasenet_hub.models.dcasenet import DcaseNetOutput
    >>> out = DcaseNetOutput(tag_logits=torch.zeros(2, 3))
    >>> round(float(head_loss("tags", out, torch.ones(2, 3))), 4)
    0.6931
    >>> lam, perm = draw_mixup(np.random.default_rng(0), 0.1, 4)
    >>> 0.0 <= lam <= 1.0 and sorted(perm.tolist()) == [0, 1, 2, 3]
    True
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dcasenet_hub.models.dcasenet import DcaseNetOutput

#: One mixup draw: the weight of the batch itself and the permutation it is mixed with.
Mix = tuple[float, torch.Tensor]


def logits_loss(task: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``"scene"``: cross-entropy (class indices or class probabilities); ``"tags"``/``"events"``: binary
    cross-entropy, both on logits."""
    if task == "scene":
        return F.cross_entropy(logits, target)
    if task in ("tags", "events"):
        return F.binary_cross_entropy_with_logits(logits, target)
    raise ValueError(f"Unknown task {task!r}; use scene, tags or events")


def head_loss(task: str, out: DcaseNetOutput, target: torch.Tensor) -> torch.Tensor:
    """The loss of one head of the network, in float32 (call it outside autocast: BCE on probabilities is not
    autocast-safe).

    Scene and tags: :func:`logits_loss`; events: binary cross-entropy on the probabilities the network gives, over
    the shorter of outputs and labels (a 30 s crop gives 296 outputs for 300 labels).
    """
    if task == "events":
        probs = out.event_probs.float()
        n = min(probs.shape[1], target.shape[1])
        return F.binary_cross_entropy(probs[:, :n], target[:, :n])
    if task == "scene":
        return logits_loss(task, out.scene_logits.float(), target)
    if task == "tags":
        return logits_loss(task, out.tag_logits.float(), target)
    raise ValueError(f"Unknown task {task!r}; use scene, tags or events")


def draw_mixup(rng: np.random.Generator, alpha: float, n: int, device: torch.device | str = "cpu") -> Mix:
    """One lambda ~ Beta(alpha, alpha) and one permutation of a batch of ``n`` (the authors' mixup, per batch)."""
    lam = float(rng.beta(alpha, alpha))
    return lam, torch.from_numpy(rng.permutation(n)).to(device)


def mix_inputs(x: torch.Tensor, mix: Mix) -> torch.Tensor:
    """``lam * x + (1 - lam) * x[perm]``."""
    lam, perm = mix
    return lam * x + (1.0 - lam) * x[perm]


def mixed_loss(task: str, out: DcaseNetOutput, target: torch.Tensor, mix: Mix | None) -> torch.Tensor:
    """:func:`head_loss` of mixed inputs: ``lam * loss(target) + (1 - lam) * loss(target[perm])``."""
    if mix is None:
        return head_loss(task, out, target)
    lam, perm = mix
    return lam * head_loss(task, out, target) + (1.0 - lam) * head_loss(task, out, target[perm])

"""Model surgery for fine-tuning: which head a task replaces, the blocks on its path, what to freeze, the new model.

Tasks here are the canonical head names (``"scene"``, ``"tags"``, ``"events"``, :data:`dcasenet_hub.config.TASKS`).

Example:
    >>> from dcasenet_hub import build_model
    >>> freeze_choices(build_model("v3"), "classification")
    ('all', 'none', 'conv_block1', 'conv_block2', 'conv_block3', 'conv_block4', 'layer_ASC', 'code_ASC')
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from dcasenet_hub.finetuning.options import finetune_task
from dcasenet_hub.inference.options import options_error

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from dcasenet_hub.inference.model import DcaseNet

logger = logging.getLogger(__name__)

#: task -> the validation metric that picks the best epoch (higher is better)
PRIMARY_METRIC = {"scene": "accuracy", "tags": "lwlrap", "events": "f1"}
#: task -> the config field holding the head's label names
LABEL_FIELD = {"scene": "scene_labels", "tags": "tag_labels", "events": "event_labels"}
#: Stages that feed only one head: training them leaves the other heads' outputs unchanged.
TASK_ONLY_STAGES = frozenset({"layer_ASC", "asc_block", "code_ASC", "layer_TAG"})


def head_of(model: Any, task: str) -> nn.Linear:
    """The Linear layer ``task``'s head is (``fc_ASC``, the tag MLP's last layer, ``event_fc``)."""
    if task == "scene":
        return model.fc_ASC
    if task == "tags":
        return model.layer_TAG[len(model.layer_TAG) - 1]
    return model.event_fc


def head_prefix(model: Any, task: str) -> str:
    """State-dict prefix of ``task``'s head."""
    return {"scene": "fc_ASC", "tags": f"layer_TAG.{len(model.layer_TAG) - 1}", "events": "event_fc"}[task]


def stages(model: DcaseNet, task: str) -> list[tuple[str, list[nn.Module]]]:
    """The blocks on ``task``'s path from the input to (not including) its head, in order."""
    m = model
    out: list[tuple[str, list[Any]]] = [("conv_block1", [m.conv_block1]), ("conv_block2", [m.conv_block2]),
                                         ("conv_block3", [m.conv_block3])]
    if m.config.arch == "v3":
        if task == "scene":
            return out + [("conv_block4", [m.conv_block4_2]), ("layer_ASC", [m.layer_ASC]),
                          ("code_ASC", [m.code_ASC])]
        out.append(("conv_block4", [m.conv_block4_1, m.conv_block4_2]))
        if task == "events":
            return out + [("gru", [m.gru_2])]  # event features are gru_2's output
        return out + [("gru", [m.gru_1, m.gru_2]), ("layer_TAG", list(m.layer_TAG)[:-1])]
    out.append(("conv_block4", [m.conv_block4]))
    if task == "scene":
        if m.config.arch == "v1":
            out.append(("gru", [m.gru]))
        return out + [("asc_block", [m.asc_block]), ("code_ASC", [m.code_ASC])]
    out.append(("gru", [m.gru]))
    if task == "tags":
        out.append(("layer_TAG", list(m.layer_TAG)[:-1]))
    return out


def freeze_choices(model: DcaseNet, task: str) -> tuple[str, ...]:
    """Valid ``freeze`` values for ``model`` and ``task``: ``"all"``, ``"none"`` and the block names in order.

    Args:
        model: A :class:`~dcasenet_hub.DcaseNet`.
        task: ``"classification"`` / ``"scene"``, ``"tagging"`` / ``"tags"`` or ``"detection"`` / ``"events"``.

    Example:
        >>> from dcasenet_hub import build_model
        >>> freeze_choices(build_model("v3"), "detection")
        ('all', 'none', 'conv_block1', 'conv_block2', 'conv_block3', 'conv_block4', 'gru')
    """
    task = finetune_task(task)
    return ("all", "none", *(name for name, _ in stages(model, task)))


def trainable_stages(model: DcaseNet, task: str, freeze: str) -> list[tuple[str, list[nn.Module]]]:
    """The stages after ``freeze`` (none for ``"all"``, every stage for ``"none"``).

    Raises:
        ValueError: ``freeze`` is not a block on the task's path (the message lists them).
    """
    all_stages = stages(model, task)
    names = [n for n, _ in all_stages]
    if freeze == "all":
        return []
    if freeze == "none":
        return all_stages
    if freeze not in names:
        raise options_error("freeze", freeze, f"is not a block of DcaseNet-{model.config.arch} on the {task} path; "
                            f"choose one of {', '.join(freeze_choices(model, task))}")
    return all_stages[names.index(freeze) + 1:]


def new_model(base: DcaseNet, task: str, labels: tuple[str, ...], head: str, seed: int) -> DcaseNet:
    """A DcaseNet with ``labels`` on ``task``'s head and every other weight copied from ``base``.

    ``head="reuse"`` starts the rows of labels ``base`` already has from its weights; the other rows (and every row
    for ``head="new"``) are Xavier-initialised with ``seed``.
    """
    import torch

    from dcasenet_hub.inference.model import DcaseNet

    task = finetune_task(task)
    field_name = LABEL_FIELD[task]
    config = base.config.replace(**{field_name: labels})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DcaseNet(config)
        fresh = head_of(model, task)
        torch.nn.init.xavier_uniform_(fresh.weight)
        torch.nn.init.zeros_(fresh.bias)
    prefix = head_prefix(model, task) + "."
    base_sd = base.state_dict()
    state = model.state_dict()
    for key in state:
        if not key.startswith(prefix):
            state[key] = base_sd[key].detach().clone()
    if head == "reuse":
        old_labels = getattr(base.config, field_name)
        old_w, old_b = base_sd[prefix + "weight"], base_sd[prefix + "bias"]
        reused = []
        for i, name in enumerate(labels):
            if name in old_labels:
                j = old_labels.index(name)
                state[prefix + "weight"][i] = old_w[j]
                state[prefix + "bias"][i] = old_b[j]
                reused.append(name)
        logger.info("Reused the base head's weights for %d of %d labels", len(reused), len(labels))
    model.load_state_dict_strict(state, source="fine-tuning copy")
    return model


class Standardised:
    """``head((x - mean) / std)``: the probe's head during training, before :func:`fold`."""

    def __init__(self, head: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.head, self.mean, self.std = head, mean, std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((x - self.mean) / self.std)


def fold(head: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Make ``head(x)`` equal ``old_head((x - mean) / std)`` (in place)."""
    import torch

    with torch.no_grad():
        head.weight.div_(std)
        head.bias.sub_(head.weight @ mean)


def unfold(head: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Inverse of :func:`fold`: express a head on raw inputs as a head on standardised inputs (in place)."""
    import torch

    with torch.no_grad():
        head.bias.add_(head.weight @ mean)
        head.weight.mul_(std)


__all__ = ["LABEL_FIELD", "PRIMARY_METRIC", "TASK_ONLY_STAGES", "Standardised", "fold", "freeze_choices",
           "head_of", "head_prefix", "new_model", "stages", "trainable_stages", "unfold"]

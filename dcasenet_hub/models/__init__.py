"""The network: DcaseNet v1/v2/v3 (:mod:`.dcasenet`), its blocks (:mod:`.blocks`) and the fast path (:mod:`.fast`).

Nothing here reads audio or files: the class users hold, :class:`dcasenet_hub.DcaseNet`, adds loading
(:mod:`dcasenet_hub.hub`) and audio in, results out (:mod:`dcasenet_hub.inference`).
"""

from dcasenet_hub.models.blocks import ConvBlock, SEBasicBlock, SELayer, strided_conv
from dcasenet_hub.models.dcasenet import DcaseNetModule, DcaseNetOutput, InferenceCopies, Runtime, build_network
from dcasenet_hub.models.fast import (
    FastOptions,
    FastRuntime,
    is_optimized,
    optimize_for_inference,
)

__all__ = [
    "ConvBlock",
    "DcaseNetModule",
    "DcaseNetOutput",
    "FastOptions",
    "FastRuntime",
    "InferenceCopies",
    "Runtime",
    "SEBasicBlock",
    "SELayer",
    "build_network",
    "is_optimized",
    "optimize_for_inference",
    "strided_conv",
]

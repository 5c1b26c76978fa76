"""Fine-tuning on your own labels.

=====================  ===========================================================================================
:mod:`.options`        :class:`FinetuneOptions` (every option of :func:`finetune`), task names
:mod:`.data`           :func:`read_dataset`: class folders, ``path,label(s)`` tables, strong labels
:mod:`.heads`          which head a task replaces, :func:`freeze_choices`, the new model
:mod:`.features`       windows, features and scores through the shared audio path (as ``predict``)
:mod:`.loop`           :func:`finetune`: linear probe or (partial) fine-tuning, validation, best epoch
:mod:`.record`         the record in the config, the model card section, ``metrics.jsonl``
=====================  ===========================================================================================

Example:
    >>> from dcasenet_hub.finetuning import FinetuneOptions
    >>> FinetuneOptions(freeze="conv_block3").resolved_epochs()
    15
"""

from dcasenet_hub.finetuning.data import Clip, Dataset, read_dataset
from dcasenet_hub.finetuning.heads import freeze_choices
from dcasenet_hub.finetuning.loop import finetune
from dcasenet_hub.finetuning.options import FinetuneOptions

__all__ = ["Clip", "Dataset", "FinetuneOptions", "finetune", "freeze_choices", "read_dataset"]

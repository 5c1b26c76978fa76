"""Fine-tuning on your own labels: reading datasets (:mod:`.data`) and the probe / fine-tune loop (:mod:`.loop`)."""

from dcasenet_hub.finetuning.data import Clip, Dataset, read_dataset
from dcasenet_hub.finetuning.loop import finetune, freeze_choices

__all__ = ["Clip", "Dataset", "finetune", "freeze_choices", "read_dataset"]

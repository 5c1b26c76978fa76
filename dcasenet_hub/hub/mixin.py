"""``from_pretrained`` / ``save_pretrained`` / ``push_to_hub`` for any model class with a ``config``.

As huggingface_hub's ``PyTorchModelHubMixin``: the hub code builds ``cls(config)`` for the class it is called on and
never names the model class; ``config.json`` + ``model.safetensors`` + the model card travel together.

Example:
    >>> from dcasenet_hub import DcaseNet
    >>> issubclass(DcaseNet, HubMixin)
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

_M = TypeVar("_M", bound="HubMixin")


class HubMixin:
    """Loading and saving for a model class whose instances have ``config`` and ``load_state_dict_strict``."""

    @classmethod
    def from_pretrained(cls: type[_M], name_or_path: str | Path, *, revision: str | None = None,
                        cache_dir: str | Path | None = None, device: str | Any | None = None,
                        dtype: str | Any | None = None, local_files_only: bool = False) -> _M:
        """Load a model by manifest id, local folder/file or Hugging Face repo id, as an instance of this class.

        The options are those of :func:`dcasenet_hub.hub.api.load_pretrained`, which says what each does.

        Example:
            >>> model = DcaseNet.from_pretrained("dcasenet-v3")  # doctest: +SKIP
        """
        from dcasenet_hub.hub.api import load_pretrained

        return load_pretrained(cls, name_or_path, revision=revision, cache_dir=cache_dir,  # type: ignore[return-value]
                               device=device, dtype=dtype, local_files_only=local_files_only)

    def save_pretrained(self, save_directory: str | Path, *, repo_id: str | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` + a ``README.md`` model card (atomically).

        See :func:`dcasenet_hub.hub.checkpoint.save_pretrained`. The folder loads back with :meth:`from_pretrained`.

        Example:
            >>> model.save_pretrained("my-dcasenet/")   # doctest: +SKIP
        """
        from dcasenet_hub.hub.checkpoint import save_pretrained

        return save_pretrained(self, save_directory, repo_id=repo_id)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Upload this model (config, safetensors, model card) to the Hugging Face Hub repo ``repo_id``.

        See :func:`dcasenet_hub.hub.api.push_to_hub` for the options (``commit_message``, ``private``, ``token``,
        ``branch``, ``create_pr``).

        Example:
            >>> model.push_to_hub("my-org/dcasenet-v3-finetuned")   # doctest: +SKIP
        """
        from dcasenet_hub.hub.api import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

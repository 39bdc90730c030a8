"""The registry of named DIFE models: short names -> where the weights come from.

There is one registry, [MODELS][dife.registry.MODELS]. Each [ModelEntry][dife.registry.ModelEntry] says where its
weights live:

* ``"package"``: a folder inside ``dife/weights/`` holding ``config.json`` and
  ``model.safetensors`` (shipped with the wheel);
* ``"hub"``: a Hugging Face Hub repository (repo id + revision);
* ``"random"``: a deterministic random initialisation (seed + config), useful
  for plumbing and tests only;
* ``"official"``: a hint only, the authors' released checkpoint, which must be
  downloaded by hand and converted (``dife convert-official PATH OUTDIR`` or
  ``DIFE.from_official(path)``).

This module imports no torch; models are built by [dife.hub.from_pretrained][dife.hub.from_pretrained].

Example:
    >>> import dife
    >>> dife.list_models()  # doctest: +SKIP
    ['dife-base', 'dife-base-v1', 'dife-base-v2', 'dife-official-human-dog', 'dife-official-human-dog-cat', 'dife-untrained']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dife.config import DIFEConfig
from dife.errors import ModelNotFoundError

__all__ = [
    "WEIGHTS_DIR",
    "ModelEntry",
    "MODELS",
    "list_models",
    "get_entry",
    "resolve",
    "default_model_name",
    "is_trained",
]

#: Folder of the weights shipped inside the package.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: Files that make a saved DIFE model folder.
MODEL_FILES = ("config.json", "model.safetensors")

Source = Literal["package", "hub", "random", "official"]

_AUTHORS_REPO = "https://github.com/kingsj0405/DIFE"


@dataclass(frozen=True)
class ModelEntry:
    """One named model.

    Attributes:
        name: Short name, e.g. ``"dife-base"``.
        description: One line for humans.
        source: ``"package"``, ``"hub"``, ``"random"`` or ``"official"``.
        trained: Whether the weights are trained (False for random init).
        path: ``package``: folder relative to [WEIGHTS_DIR][dife.registry.WEIGHTS_DIR].
        repo_id: ``hub``: Hugging Face repository id ``owner/name``.
        revision: ``hub``: branch, tag or commit (None = default branch).
        seed: ``random``: the ``torch.manual_seed`` used for initialisation.
        config: ``random``: keyword arguments of [DIFEConfig][dife.config.DIFEConfig].
        url: ``official``: where the authors' checkpoint can be downloaded.
        filename: ``official``: the authors' file name (``human+dog.pth``).
        domains: Species of the converters, in order.
    """

    name: str
    description: str
    source: Source
    trained: bool = True
    path: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    seed: int | None = None
    config: dict[str, Any] = field(default_factory=dict, hash=False)
    url: str | None = None
    filename: str | None = None
    domains: tuple[str, ...] = ()

    @property
    def local_dir(self) -> Path | None:
        """``package`` entries: the folder inside the package (may not exist)."""
        return WEIGHTS_DIR / self.path if self.source == "package" and self.path else None

    def is_available(self) -> bool:
        """Whether the entry can be loaded without downloading anything by hand."""
        if self.source == "package":
            d = self.local_dir
            return d is not None and all((d / f).is_file() for f in MODEL_FILES)
        return self.source in ("hub", "random")

    def make_config(self) -> DIFEConfig:
        """``random`` entries: the architecture to initialise."""
        return DIFEConfig(**self.config)

    def convert_hint(self) -> str:
        """``official`` entries: how to download and convert the checkpoint."""
        f = self.filename or "CHECKPOINT.pth"
        where = (
            f"from {self.url} (linked from {_AUTHORS_REPO})"
            if self.url
            else f"via the release / Google Drive links of {_AUTHORS_REPO}"
        )
        return (
            f"download the authors' checkpoint {f} {where}, then either run "
            f"`dife convert-official {f} OUTDIR` and load OUTDIR with DIFE.from_pretrained('OUTDIR'), "
            f"or load it directly with DIFE.from_official('{f}')"
        )


_UNTRAINED_NOTE = (
    "untrained: random initialisation (seed 0), for plumbing and tests only; its embeddings are meaningless"
)

MODELS: dict[str, ModelEntry] = {
    e.name: e
    for e in (
        ModelEntry(
            name="dife-base",
            description=(
                "The default (v3): a 0.49 M-parameter DIFE encoder trained by the dife project on real face photos "
                "of six species, with the eyes and nose of its training photos as a sparse signal (recipe dife_base; "
                "no converters; non-commercial research terms)"
            ),
            source="package",
            path="dife-base",
            domains=(),
        ),
        ModelEntry(
            name="dife-base-v2",
            description=(
                "The second default (v2, replaced by dife-base v3): a 0.49 M-parameter DIFE encoder, recipe "
                "dife_base v2 (EfficientNet-Lite0 and MobileNetV2 teachers, no keypoints, 2000 steps); "
                "non-commercial research terms"
            ),
            source="package",
            path="dife-base-v2",
            domains=(),
        ),
        ModelEntry(
            name="dife-base-v1",
            description=(
                "The first default (v1, replaced by dife-base v2): a 0.49 M-parameter DIFE encoder, recipe "
                "dife_base v1 (EfficientNet-Lite0 teacher only, 1500 steps); non-commercial research terms"
            ),
            source="package",
            path="dife-base-v1",
            domains=(),
        ),
        ModelEntry(
            name="dife-untrained",
            description=f"Paper architecture (13.17 M parameters, domains human and dog), {_UNTRAINED_NOTE}",
            source="random",
            trained=False,
            seed=0,
            config={
                "domains": ("human", "dog"),
                "extra": {"trained": False, "source": "random initialisation, torch.manual_seed(0)"},
            },
            domains=("human", "dog"),
        ),
        ModelEntry(
            name="dife-official-human-dog",
            description="The authors' released human+dog model (download and convert by hand)",
            source="official",
            url="https://drive.google.com/file/d/1tIb-kUNEOjPfVF7ltSFvvKgnGOIdz5MB/view",
            filename="human+dog.pth",
            domains=("human", "dog"),
        ),
        ModelEntry(
            name="dife-official-human-dog-cat",
            description="The authors' released human+dog+cat model (download and convert by hand)",
            source="official",
            filename="human+dog+cat.pth",
            domains=("human", "dog", "cat"),
        ),
    )
}


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(MODELS)


def get_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``.

    Raises:
        ModelNotFoundError: if ``name`` is not registered (lists the known names).
    """
    entry = MODELS.get(name) if isinstance(name, str) else None
    if entry is None:
        raise ModelNotFoundError(f"unknown model name {name!r}; registered models: {list_models()}")
    return entry


def resolve(name: str) -> ModelEntry:
    """The entry of ``name``, checked to be loadable now.

    Raises:
        ModelNotFoundError: for unknown names; for a ``package`` entry whose
            files are missing from this installation; for an
            ``official`` entry (says how to download and convert it).
    """
    entry = get_entry(name)
    if entry.source == "package" and not entry.is_available():
        raise ModelNotFoundError(
            f"model {name!r} is not available: its weights ({entry.local_dir}/config.json, model.safetensors) "
            f"are missing from this installation of dife (they ship inside the package: reinstall dife, "
            f"or build it with its package data). "
            f"Use 'dife-untrained' for plumbing, a model folder / hub repo of your own, or the authors' weights: "
            f"{get_entry('dife-official-human-dog').convert_hint()}"
        )
    if entry.source == "official":
        raise ModelNotFoundError(f"model {name!r} cannot be downloaded automatically: {entry.convert_hint()}")
    return entry


def default_model_name() -> str:
    """``"dife-base"`` if its weights are packaged, else ``"dife-untrained"``."""
    return "dife-base" if MODELS["dife-base"].is_available() else "dife-untrained"


def is_trained(name: str) -> bool:
    """Whether the registered model ``name`` has trained weights.

    Raises:
        ModelNotFoundError: if ``name`` is not registered.
    """
    return get_entry(name).trained

"""Training of DIFE: frozen teachers, losses, pseudo pairs and the trainer.

Kept import-light: submodules (``dife.train.teachers``...) are imported on use.
"""

from __future__ import annotations

__all__: list[str] = []

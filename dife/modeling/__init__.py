"""Network components of DIFE, one file each, composed in [dife.modeling.dife][dife.modeling.dife]."""

from dife.modeling.blocks import Bottleneck
from dife.modeling.converter import DomainConverter
from dife.modeling.dife import DIFE
from dife.modeling.hourglass import Hourglass, HourglassEncoder

__all__ = ["Bottleneck", "DomainConverter", "DIFE", "Hourglass", "HourglassEncoder"]

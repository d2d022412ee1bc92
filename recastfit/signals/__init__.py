"""Signal yield sources: every source produces :class:`PointYields` for the patch builder."""

from recastfit.signals.model import ChannelYields, PointYields
from recastfit.signals.yields_file import read_yields_file, write_yields_file

__all__ = ["ChannelYields", "PointYields", "read_yields_file", "write_yields_file"]

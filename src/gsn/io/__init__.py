"""Reading data into SpatialData and writing results back."""

from ._folder import read_folder
from ._write import add_elements, recover

__all__ = ["add_elements", "read_folder", "recover"]

"""Reading data into SpatialData and writing results back."""

from ._folder import read_folder
from ._write import add_elements

__all__ = ["add_elements", "read_folder"]

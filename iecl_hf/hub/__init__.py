"""Publishing: the model card and the upload of an output folder to the Hub."""

from .upload import push_output_folder

__all__ = ["push_output_folder"]

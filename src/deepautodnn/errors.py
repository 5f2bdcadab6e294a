"""The one base class of every error deepautodnn reports to a user.

Each subclass lives beside the code that raises it (`data.fashion_mnist.DataError`,
`data.preprocess.ImageError`, `config.ConfigError`, ...); those raised in several layers live here. Its message names the file or setting and the problem, so the
command line prints it as it is, without a traceback. Anything else escaping is a bug.
"""

from pathlib import Path


class DeepAutoDNNError(Exception):
    """A problem with the user's input, files or machine, explained in the message."""


class TrainingInterrupted(DeepAutoDNNError):
    """Ctrl-C or SIGTERM stopped training after saving its state; `train --resume` continues.

    Here rather than in training.state so that the command line can catch it without loading the trainer."""


class ModelFileError(DeepAutoDNNError, ValueError):
    """A model directory or file is missing or unusable. The message names the file."""


class WriteError(DeepAutoDNNError, OSError):
    """A file could not be written (full disk, no permission, ...); the earlier file is intact.

    Raised as WriteError(errno, strerror, path), like the OSError it replaces."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}; any earlier {Path(self.filename).name} is intact"

"""The one base class of every error deepautodnn reports to a user.

Each subclass lives beside the code that raises it (`data.DataError`, `preprocess.ImageError`,
`checkpoint.ModelFileError`, ...). Its message names the file or setting and the problem, so the
command line prints it as it is, without a traceback. Anything else escaping is a bug.
"""


class DeepAutoDNNError(Exception):
    """A problem with the user's input, files or machine, explained in the message."""

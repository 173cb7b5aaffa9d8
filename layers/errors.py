"""Errors a user can act on: the command-line tools print them as one line (no traceback) and exit.

Import-light on purpose (no Keras, no backend): the CLIs catch these before any slow import.
"""


class UserError(Exception):
    """A problem with the input, the run directory or the machine, stated with its fix.

    `exit_code` 2 is bad input (the argparse convention); 1 is a run that stopped (divergence, a full disk)."""

    exit_code = 2

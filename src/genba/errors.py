"""User-facing errors.

Every error a user can cause (bad dataset name, unreadable folder, wrong checkpoint) is a
`GenbaError` whose message is one line naming the problem and the fix. The CLI prints it
without a traceback and exits with status 2.
"""


class GenbaError(Exception):
    """An error caused by input the user controls; its message says how to fix it."""

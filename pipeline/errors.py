"""The one exception type for mistakes a user can fix (bad recipe, missing file, bad column mapping).

The CLI prints its message as one line on stderr and exits with status 2, without a traceback. Messages
name where the problem is first: `recipes/x.yaml: sft.learning_rate: expected float, got 'fast'`.
"""


class PipelineError(Exception):
    """A user-fixable error; its message is the whole one-line report."""

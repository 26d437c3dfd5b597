"""Launched on 2 ranks by test_main_failure.py: the main process fails a main-only action; every rank must
report the failure (none may wait at a barrier for it)."""

import sys

from pipeline.errors import PipelineError
from pipeline.runner import distributed_state, on_main_process


def fail():
    raise PipelineError("the Hub refused the upload")


state = distributed_state()
try:
    on_main_process(state, fail)
except PipelineError as e:
    print(f"rank {state.process_index}/{state.num_processes}: error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)
sys.exit(0)

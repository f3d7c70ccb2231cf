"""Measure one sweep point (:mod:`.point`): the face the executors use. Timers and pacing
in :mod:`.timing`, peak memory in :mod:`.memory`, accuracy in :mod:`.accuracy`, threads
in :mod:`.threads`."""
from .point import Refusal, base_row, error_text, run_point
from .threads import THREAD_VARIABLES
from .timing import WallTimer, calibrate_number, set_pacer

__all__ = ["Refusal", "THREAD_VARIABLES", "WallTimer", "base_row",
           "calibrate_number", "error_text", "run_point", "set_pacer"]

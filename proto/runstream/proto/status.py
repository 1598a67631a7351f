"""Run status names (``RunStatus`` in events.proto) and the two sets that say what "over" means.

Statuses travel and are stored as these names. A rank sends RUNNING (with RunStarted)
and one of :data:`ENDED` (RunFinished); the consumer alone writes CRASHED (heartbeats
stopped) and RUNNING again (they resumed). So a rank in :data:`ENDED` is over for good,
while CRASHED may still come back: :data:`ENDED_OR_CRASHED` is what has an end time.
"""

from __future__ import annotations

from runstream.proto.v1 import events_pb2

UNSPECIFIED: str = events_pb2.RunStatus.Name(events_pb2.RUN_STATUS_UNSPECIFIED)
RUNNING: str = events_pb2.RunStatus.Name(events_pb2.RUNNING)
FINISHED: str = events_pb2.RunStatus.Name(events_pb2.FINISHED)
FAILED: str = events_pb2.RunStatus.Name(events_pb2.FAILED)
KILLED: str = events_pb2.RunStatus.Name(events_pb2.KILLED)
CRASHED: str = events_pb2.RunStatus.Name(events_pb2.CRASHED)

#: The statuses a run sends to end (RunFinished): a rank in one of them is over for good.
ENDED = frozenset({FINISHED, FAILED, KILLED})
#: ENDED, or CRASHED (set by the consumer; RUNNING again if the rank's heartbeats resume):
#: the statuses that give a rank an end time.
ENDED_OR_CRASHED = ENDED | {CRASHED}

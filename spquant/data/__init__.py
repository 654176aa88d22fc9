"""spquant.data: event-camera readers, datasets, transforms, an event-camera emulator and MNIST."""

from spquant.data.events import EVENT_DTYPE, EventFileError, Recording, make_events, sort_events
from spquant.data.readers import *  # noqa: F401,F403
from spquant.data.readers import __all__ as _readers_all

__all__ = ["EVENT_DTYPE", "EventFileError", "Recording", "make_events", "sort_events", *_readers_all]
from spquant.data.detection import Gen1Detection, MovingDigits, collate_detection  # noqa: E402,F401  (detection data, issue 7)

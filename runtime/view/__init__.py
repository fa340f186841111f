"""Live view of a stream in a web browser (``usseg stream --view``): see :mod:`.server`."""

from .server import FrameSlot, LiveView, check_token, start_view

__all__ = ["FrameSlot", "LiveView", "check_token", "start_view"]

"""The pen front end's frame: its values in order, and the rows that need no arithmetic. Shared by the stream by
stream path (models.pen) and the walk over many streams (models.pen_many), which must write the same rows."""

from __future__ import annotations

# The frame's values, in order (dim = 11).
FEATURES = ("down", "dx", "dy", "path", "jump_x", "jump_y", "start", "end", "height", "dir_x", "dir_y")
UP = [0.0] * len(FEATURES)  # a pen-up frame (shared: rows are only read, into one tensor)
UP_END = [0.0] * 7 + [1.0] + [0.0] * 3  # the pen-up frame in which a stroke ended
DOWN = [1.0] + [0.0] * (len(FEATURES) - 1)  # a pen-down frame before any size is known

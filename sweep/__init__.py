"""The model family and its arithmetic, and the isoFLOP planner."""

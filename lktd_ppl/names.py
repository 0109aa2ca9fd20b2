"""Names the whole package shares, in one place (imports nothing heavy)."""

ACTION_NAMES: tuple[str, ...] = ("E", "N", "W", "S")  # the escape room's actions, in action order
LEVELS: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)  # nominal levels of the calibration curve

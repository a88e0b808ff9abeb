"""Pure scoring logic: the score formula, the trip state machine and the driver rolling window. No I/O."""

"""Pure inference logic: mount calibration, windows and features, episodes, speeding. No I/O here."""

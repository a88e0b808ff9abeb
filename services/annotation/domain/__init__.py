"""Pure annotation logic: label set, tasks and queues, consensus, annotator quality, agreement, passwords."""

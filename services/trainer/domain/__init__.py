"""Pure logic of the trainer (no I/O): labels, datasets, model, training, evaluation, gate, records."""

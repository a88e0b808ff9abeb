"""The camera service's adapters: SQL (the join and the analysis states), blobs and frames, the models, metrics."""

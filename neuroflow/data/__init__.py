"""Reading sources, splitting, and the prepared format every step after preprocess reads."""

"""What each step does, as library calls over the data, models, training and tracking rooms."""

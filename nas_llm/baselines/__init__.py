"""The methods the paper compares against: retraining-free pruning and standard NAS."""

"""Ray-free training: metrics and `run_fold`, the whole procedure for one fold."""

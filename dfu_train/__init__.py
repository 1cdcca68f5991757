"""dfu_train: hyperparameter sweeps for diabetic foot ulcer healing-phase classification."""

__version__ = "0.1.0"

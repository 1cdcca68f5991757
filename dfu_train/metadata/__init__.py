"""The metadata branch: an scikit-learn pipeline and a random forest, fitted inside each fold."""

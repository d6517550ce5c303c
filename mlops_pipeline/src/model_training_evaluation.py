"""Model training and evaluation: candidate models, summarize_classification,
build_model, comparison plots and the best-model artifact (DESIGN.md).

Not built yet: it trains on the features ft_engineering.py builds.
Importing this module does nothing.
"""

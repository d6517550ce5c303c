"""Scoring: one score function over validated scoring-input batches, the offline batch
scorer, the FastAPI ``/predict`` endpoint and the Ray Data path (DESIGN.md, "model_deploy").

Not built yet: it needs the model artifact that model_training_evaluation.py produces.
Importing this module does nothing.
"""

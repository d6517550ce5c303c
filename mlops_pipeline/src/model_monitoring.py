"""Monitoring: windowed SQL samples of the scored table compared with the model's
reference profile (KS, PSI, Jensen-Shannon, chi-squared per feature and window),
prediction drift and realized performance (DESIGN.md, "model_monitoring").

Not built yet: it needs the scored table that model_deploy.py writes.
Importing this module does nothing.
"""

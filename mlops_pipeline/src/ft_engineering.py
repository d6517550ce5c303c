"""Feature engineering: the Polars lazy pipeline from the raw warehouse table to the
train / validation / test sets, shared with serving (DESIGN.md, "ft_engineering").

Not built yet: it follows the data contract that comprension_eda.ipynb derives.
Importing this module does nothing.
"""

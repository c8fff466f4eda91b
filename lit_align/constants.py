"""Values shared by the data and model layers."""

IGNORE_INDEX = -100
"""Label of a token that carries no loss (prompt, system and user tokens, padding)."""

"""Model specs: layer specs (the source of truth), building torch modules from them, summaries, formats, the zoo."""

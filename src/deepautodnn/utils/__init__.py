"""Small tools every layer may use: atomic files and checksums, the machine and its runtime, optional extras, figures."""

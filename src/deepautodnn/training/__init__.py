"""Training: the one loop, the stages of Algorithm 1, crash-safe state, distributed runs, a whole run
end to end, and fitting the unknown-input detector at its end (which may call inference)."""

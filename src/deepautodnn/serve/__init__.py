"""The HTTP service and its page. Imports inference, models and data only: a serving process never
loads the trainer (checked by lint-imports and a test)."""

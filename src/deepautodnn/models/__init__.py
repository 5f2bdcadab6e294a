"""The networks (the hybrid and the Table IV comparators) and the model directory they are saved in.
Models know their config, never where images come from (no import of `deepautodnn.data`)."""

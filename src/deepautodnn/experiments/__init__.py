"""The paper's evaluation and beyond: Table IV baselines, ablations, benchmarks, the report and its
renderers. May import everything below cli."""

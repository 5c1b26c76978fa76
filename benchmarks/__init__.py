"""dcasenet-hub benchmarks (not installed with the package): ``python -m benchmarks.run --help``."""

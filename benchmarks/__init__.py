"""Side-by-side benchmarks of bayesmf against peer libraries (issue 8); run ``python -m benchmarks``."""

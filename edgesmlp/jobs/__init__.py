"""The jobs users run: quantize, bench, check, inspect. Each takes one typed request and returns an outcome."""

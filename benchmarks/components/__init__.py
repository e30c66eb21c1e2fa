"""statefulmcp components the benchmarks load (files, served by `statefulmcp serve`)."""

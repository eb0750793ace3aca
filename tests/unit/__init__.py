"""Fast in-process tests of the core, the runtime and the HTTP routes, against fakes of the two protocols."""

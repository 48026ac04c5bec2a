"""Independent oracles for the tests: the official OpenAPI, a second CDA validator."""

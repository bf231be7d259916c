"""The seeded demo data of every domain, generated here so that `make demo` and the tests need
no download."""

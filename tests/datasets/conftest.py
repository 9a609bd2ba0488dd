from tests.discovery.conftest import data_dir  # noqa: F401 - a fresh data directory per test, for the index

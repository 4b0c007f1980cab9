import pytest

from dev.stack import Service

# The real components (Redis, the dev IdP, the sample API, the BFF), shared by integration and
# browser tests and started once per run, on first use.
pytest_plugins = ["support.stack_fixtures", "support.tls_fixtures"]


def pytest_collection_modifyitems(config, items):
    """Whole-run checks (marked run_last) see every response the other tests produced."""
    items.sort(key=lambda item: item.get_closest_marker("run_last") is not None)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    """Where the services write their logs; at the end, nothing any test started keeps running."""
    yield tmp_path_factory.mktemp("services")
    Service.stop_all()

from tests.flows.conftest import flow_settings, prefect_server

__all__ = ["flow_settings", "prefect_server"]

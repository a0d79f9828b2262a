"""hospital-fl: the ServerApp (one experiment from the run config; results to `results-path`)."""

from pets_lite.fl import server_app as app

__all__ = ["app"]

"""hospital-fl: the hospital ClientApp (train on local images, evaluate on local validation)."""

from pets_lite.fl import client_app as app

__all__ = ["app"]

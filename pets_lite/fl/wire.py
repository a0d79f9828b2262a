"""What crosses the wire: a tap on a Flower ``Grid`` that measures every message as Flower
serialises it, and can keep a copy of what the hospitals sent.

A deployment sends each ``Message`` as Flower's protobuf (over gRPC); :class:`WireTap` counts that
serialised size for every message the server sends and every reply it receives, on any Grid (the
simulation engine's, the deployment's, :class:`pets_lite.fl.engine.InProcessGrid`). With
``keep=True`` it also keeps each reply, decoded back from its serialised form, so a test or a
chapter can look at exactly what the server was given: the weights of a plain FedAvg reply, or the
masked vector of a SecAgg+ reply (:func:`sent_vectors`).
"""

from __future__ import annotations

import numpy as np


def message_bytes(message) -> int:
    """Size in bytes of ``message`` serialised with Flower's protobuf schema."""
    from flwr.common.serde import message_to_proto

    return int(message_to_proto(message).ByteSize())


def wire_copy(message):
    """``message`` serialised and parsed back: what the other side of a wire receives (a copy
    that shares no object with the original)."""
    from flwr.common.serde import message_from_proto, message_to_proto

    return message_from_proto(message_to_proto(message))


class WireTap:
    """A Grid proxy: counts the serialised bytes of every message sent and received, and the
    exchanges (calls of ``send_and_receive``); with ``keep`` also keeps every reply (a copy, as
    it came over the wire), in ``replies`` as ``(exchange, message)``.

    Attributes other than ``send_and_receive`` are the wrapped grid's.
    """

    def __init__(self, grid, keep: bool = False):
        self.grid, self.keep = grid, keep
        self.bytes_sent = 0
        self.bytes_received = 0
        self.exchanges = 0
        self.replies: list[tuple[int, object]] = []

    def __getattr__(self, name):
        return getattr(self.grid, name)

    def send_and_receive(self, messages, *args, **kwargs):
        messages = list(messages)
        self.bytes_sent += sum(message_bytes(m) for m in messages)
        replies = list(self.grid.send_and_receive(messages, *args, **kwargs))
        self.exchanges += 1
        self.bytes_received += sum(message_bytes(m) for m in replies)
        if self.keep:
            self.replies += [(self.exchanges, wire_copy(m)) for m in replies]
        return replies

    def mark(self) -> tuple[int, int, int, int]:
        """A position in the traffic, for :meth:`since`."""
        return self.bytes_sent, self.bytes_received, self.exchanges, len(self.replies)

    def since(self, mark: tuple[int, int, int, int]) -> dict:
        """Bytes sent and received, exchanges and kept replies since ``mark``."""
        sent, received, exchanges, kept = mark
        return {"bytes_sent": self.bytes_sent - sent,
                "bytes_received": self.bytes_received - received,
                "exchanges": self.exchanges - exchanges, "replies": self.replies[kept:]}


def sent_vectors(message) -> list[np.ndarray]:
    """Every parameter vector a reply carries, flattened: the weights of each ``ArrayRecord``
    (plain FedAvg), and the masked vector a SecAgg+ client uploads (its config record's
    ``masked_params``, without the masked weight in front). Error replies carry none."""
    from flwr.common import bytes_to_ndarray
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

    if message.has_error():
        return []
    content = message.content
    out = []
    for record in content.array_records.values():
        if len(record):
            out.append(np.concatenate([a.numpy().ravel() for a in record.values()]))
    configs = content.config_records.get(RECORD_KEY_CONFIGS)
    if configs is not None and Key.MASKED_PARAMETERS in configs:
        # the first array is the client's (masked) weight, the rest its masked parameters
        arrays = [bytes_to_ndarray(b) for b in configs[Key.MASKED_PARAMETERS]][1:]
        out.append(np.concatenate([a.ravel() for a in arrays]))
    return [v.astype(np.float64) for v in out]


def update_correlation(vector: np.ndarray, start: np.ndarray, update: np.ndarray) -> float:
    """How much of ``update`` (a hospital's new weights minus ``start``, the global weights it
    started from) a vector on the wire reveals: the Pearson correlation of ``update`` with what
    is left of ``vector`` once its best affine fit on ``start`` is removed.

    A plain FedAvg reply (``start + update``) gives 1; a quantised copy of it, about 1; a SecAgg+
    masked vector, uniform noise modulo a large number, about 0 (within a few ``1/sqrt(size)``).
    """
    v, s, u = (np.asarray(a, np.float64).ravel() for a in (vector, start, update))
    if not len(v) == len(s) == len(u):
        raise ValueError(f"sizes differ: vector {len(v)}, start {len(s)}, update {len(u)}")
    design = np.stack([np.ones_like(s), s], axis=1)
    coef, *_ = np.linalg.lstsq(design, v, rcond=None)
    rest = v - design @ coef
    if rest.std() == 0 or u.std() == 0:
        return 0.0
    return float(np.corrcoef(rest, u)[0, 1])

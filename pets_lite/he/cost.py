"""One round trip, measured: keys, encryption, evaluation, decryption, seconds and bytes."""

from __future__ import annotations

import numpy as np

from .client import HEClient, Message
from .model import HEConvNet
from .params import CKKSParams
from .server import HEServer


def run_path(model: HEConvNet, images, packing: str = "batched", params: CKKSParams | None = None,
             progress: bool = True) -> dict:
    """Client keygen -> public context -> encrypt -> server evaluate -> decrypt, timed and sized.

    Returns ``{"logits", "seconds": {keygen, encrypt, evaluate, decrypt, total}, "bytes":
    {public_context, query, result}, "n_images", "packing", "galois_keys", "params"}``.
    """
    client = HEClient(packing, params, image_size=model.image_size, patch=model.patch)
    public = client.public_context()
    server = HEServer(public, model)
    query = client.encrypt(images)
    result = server.evaluate(query, progress=progress)
    return summarise(client, server, public, query, result, client.decrypt(result))


def summarise(client: HEClient, server: HEServer, public: Message, query: Message,
              result: Message, logits: np.ndarray) -> dict:
    """The record :func:`run_path` returns, from a round trip the caller ran step by step."""
    seconds = {"keygen": client.timings["keygen"], "encrypt": client.timings["encrypt"],
               "evaluate": server.timings["evaluate"] + server.timings["load_context"],
               "decrypt": client.timings["decrypt"]}
    seconds["total"] = float(sum(seconds.values()))
    return {"logits": logits, "seconds": seconds, "n_images": int(len(logits)),
            "packing": client.packing, "galois_keys": bool(server.context.has_galois_keys()),
            "params": client.params,
            "bytes": {"public_context": public.nbytes, "query": query.nbytes,
                      "result": result.nbytes}}


def cost_row(run: dict) -> dict:
    """One row of the cost table: seconds per stage and per image, MiB on the wire."""
    n, s, b = run["n_images"], run["seconds"], run["bytes"]
    mib = 2.0**20
    return {"path": run["packing"], "images": n, "keygen s": s["keygen"], "encrypt s": s["encrypt"],
            "evaluate s": s["evaluate"], "decrypt s": s["decrypt"],
            "s / image (enc+eval+dec)": (s["encrypt"] + s["evaluate"] + s["decrypt"]) / n,
            "public context MiB": b["public_context"] / mib, "query MiB": b["query"] / mib,
            "query MiB / image": b["query"] / mib / n, "result MiB": b["result"] / mib,
            "Galois keys": run["galois_keys"]}

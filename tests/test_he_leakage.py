"""pets_lite.he.leakage: a decryption handed back gives the server the hospital's secret key (CKKS
is not IND-CPA^D secure), and with it every image it was sent; flooding the released values
stops this exact attack. A tiny model on 8 x 8 images keeps a full batch to seconds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("tenseal")

from pets_lite import he  # noqa: E402

SIZE, PATCH = 8, 4


@pytest.fixture(scope="module")
def full_batch():
    """The hospital's keys, the server, a full batch (N/2 images) and its decrypted scores."""
    torch.manual_seed(0)
    model = he.HEConvNet(channels=2, hidden=3, patch=PATCH, image_size=SIZE).eval()
    client = he.HEClient("batched", image_size=SIZE, patch=PATCH)
    server = he.HEServer(client.public_context(), model)
    images = torch.rand(client.params.slots, 1, SIZE, SIZE,
                        generator=torch.Generator().manual_seed(1))
    query = client.encrypt(images)
    result = server.evaluate(query, progress=False)
    return {"client": client, "server": server, "images": images, "query": query,
            "result": result, "scores": client.decrypt(result)}


def test_the_decrypted_scores_give_the_server_the_secret_key(full_batch):
    b = full_batch
    recovered = he.recover_secret_key(b["server"].context, b["result"], b["scores"])
    assert recovered.solved_pairs == recovered.n // 2
    assert he.key_agreement(recovered, b["client"]) == 1.0
    # ... and with it the server reads the images of the query, alone
    stolen = he.stolen_images(recovered, b["server"].context, b["query"], SIZE, 5)
    assert np.abs(stolen - b["images"][:5, 0].numpy()).max() < 1e-3


def test_the_key_is_not_in_the_ciphertexts_alone(full_batch):
    b = full_batch
    # the same attack with values that are not the decryption (here: the true logits, without
    # the noise) recovers nothing: the noise in the decryption is what carries the key
    with torch.no_grad():
        exact = b["server"].model(b["images"]).numpy()
    wrong = he.recover_secret_key(b["server"].context, b["result"], exact)
    assert he.key_agreement(wrong, b["client"]) < 0.01


def test_flooding_the_released_values_defeats_this_attack(full_batch):
    b = full_batch
    flooded = he.flood(b["scores"], 2.0**-10)
    assert 0 < np.abs(flooded - b["scores"]).max() <= 2.0**-10
    assert not np.array_equal(he.flood(b["scores"], 2.0**-10), flooded)  # fresh noise each time
    recovered = he.recover_secret_key(b["server"].context, b["result"], flooded)
    assert he.key_agreement(recovered, b["client"]) < 0.01
    with pytest.raises(ValueError, match="width must be positive"):
        he.flood(b["scores"], 0.0)


def test_the_attack_needs_a_full_batch_and_a_result(full_batch):
    b = full_batch
    with pytest.raises(he.HEError, match="all 4096 slots"):
        he.recover_secret_key(b["server"].context, b["result"], b["scores"][:100])
    with pytest.raises(he.HEError, match="'result' message"):
        he.recover_secret_key(b["server"].context, b["query"], b["scores"])
    with pytest.raises(he.HEError, match="batched query"):
        he.stolen_images(None, b["server"].context, b["result"], SIZE, 1)

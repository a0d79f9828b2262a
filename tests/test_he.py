"""pets_lite.he: key separation, agreement with plaintext on both packings, every error path.

A tiny model on 8 x 8 images keeps each encrypted round trip to a second or two.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("tenseal")
import tenseal as ts  # noqa: E402

from pets_lite import he  # noqa: E402

SIZE, PATCH = 8, 4


@pytest.fixture(scope="module")
def model() -> he.HEConvNet:
    torch.manual_seed(0)
    return he.HEConvNet(channels=2, hidden=3, patch=PATCH, image_size=SIZE).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(6, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def batched():
    client = he.HEClient("batched", image_size=SIZE, patch=PATCH)
    return client, client.public_context()


def test_params_defaults_meet_the_128_bit_table():
    p = he.BATCHED_PARAMS
    assert (p.poly_modulus_degree, p.depth, p.total_bits, p.slots) == (8192, 5, 217, 4096)
    assert p.total_bits <= he.HE_STANDARD_128[8192] == 218
    assert he.TUTORIAL_PARAMS.total_bits == 218 and he.TUTORIAL_PARAMS.depth == 6
    assert p.describe()["128-bit secure"] is True and p.headroom == 64


@pytest.mark.parametrize("kwargs, words", [
    ({"coeff_mod_bit_sizes": (40, 30, 30, 30, 30, 30, 40)}, "128-bit"),
    ({"poly_modulus_degree": 3000}, "poly_modulus_degree"),
    ({"coeff_mod_bit_sizes": (31, 26, 30, 31), "scale_bits": 26}, "scale_bits"),
    ({"coeff_mod_bit_sizes": (26, 26, 31), "scale_bits": 26}, "first prime"),
    ({"coeff_mod_bit_sizes": (31, 31)}, "at least 3"),
])
def test_bad_params_are_refused(kwargs, words):
    with pytest.raises(he.ParameterError, match=words):
        he.CKKSParams(**kwargs)


def test_key_separation(batched, model, images):
    client, public = batched
    assert client.context.is_private() and client.context.has_secret_key()
    loaded = ts.context_from(public.blobs[0])
    assert not loaded.is_private() and not loaded.has_secret_key()
    assert not loaded.has_galois_keys()  # the batched packing never rotates
    server = he.HEServer(public, model)
    assert not server.context.is_private()
    query = client.encrypt(images[:2])
    with pytest.raises(he.SecretKeyError, match="cannot decrypt"):
        server.try_decrypt(query)
    with pytest.raises(ValueError):
        ts.ckks_vector_from(server.context, query.blobs[0]).decrypt()


def test_private_context_is_refused_by_the_server(model):
    client = he.HEClient("batched", image_size=SIZE, patch=PATCH)
    private = client.context.serialize(save_secret_key=True)
    leak = he.Message("public_context", "batched", he.fingerprint(private), [private],
                      client.public_context().meta)
    with pytest.raises(he.SecretKeyError, match="secret key"):
        he.HEServer(leak, model)


def test_batched_matches_plaintext(batched, model, images):
    client, public = batched
    server = he.HEServer(public, model)
    result = server.evaluate(client.encrypt(images), progress=False)
    logits = client.decrypt(result)
    with torch.no_grad():
        ref = model(images).numpy()
    assert logits.shape == ref.shape
    assert np.abs(logits - ref).max() < 1e-2
    assert (logits.argmax(1) == ref.argmax(1)).all()
    assert result.nbytes > 0 and len(result.blobs) == 2


def test_tutorial_matches_plaintext():
    # TenSEAL's tutorial path at 28 px (its diagonal matmul assumes the tutorial's shapes); a
    # one-channel model keeps it to a few seconds. 26-bit primes: looser tolerance than batched.
    torch.manual_seed(0)
    model = he.HEConvNet(channels=1, hidden=2).eval()
    x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    run = he.run_path(model, x, "tutorial", progress=False)
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(run["logits"] - ref).max() < 1e-2
    assert run["galois_keys"] is True
    row = he.cost_row(run)
    assert row["images"] == 1 and row["public context MiB"] > 10  # Galois keys are large


def test_wrong_shapes_are_refused(batched):
    client, _ = batched
    for bad in (torch.rand(2, 3, SIZE, SIZE), torch.rand(2, 1, SIZE + 1, SIZE), torch.rand(SIZE),
                np.zeros((0, SIZE, SIZE))):
        with pytest.raises(he.HEError, match="shape"):
            client.encrypt(bad)


@pytest.mark.parametrize("value", [1.5, -0.1, float("nan"), float("inf")])
def test_values_outside_the_encoding_range_are_refused(batched, images, value):
    client, _ = batched
    x = images[:2].clone()
    x[0, 0, 0, 0] = value
    with pytest.raises(he.EncodingRangeError, match=r"\[0.0, 1.0\]"):
        client.encrypt(x)


def test_query_from_another_context_is_refused(batched, model, images):
    client, public = batched
    server = he.HEServer(public, model)
    other = he.HEClient("batched", image_size=SIZE, patch=PATCH)
    query = other.encrypt(images[:1])
    with pytest.raises(he.ContextMismatchError, match="another|different|encrypted under"):
        server.evaluate(query, progress=False)
    # the same bytes relabelled with the server's fingerprint: other parameters still fail to load
    stranger = he.HEClient("batched", params=he.CKKSParams(4096, (40, 20, 40), 20),
                           image_size=SIZE, patch=PATCH)
    forged = stranger.encrypt(images[:1])
    forged.context_id = server.context_id
    with pytest.raises(he.ContextMismatchError, match="does not belong"):
        server.evaluate(forged, progress=False)
    # and a result from another context cannot be decrypted by this client
    result = he.HEServer(other.public_context(), model).evaluate(query, progress=False)
    with pytest.raises(he.ContextMismatchError, match="cannot be decrypted"):
        client.decrypt(result)


def test_depth_the_parameters_cannot_support(model):
    shallow = he.CKKSParams(8192, (36, 29, 29, 29, 29, 36), 29)
    with pytest.raises(he.DepthError, match="needs 5 multiplicative levels.*give 4"):
        he.check_depth(model, shallow, "batched")
    client = he.HEClient("batched", params=shallow, image_size=SIZE, patch=PATCH)
    with pytest.raises(he.DepthError, match="add 1 prime"):
        he.HEServer(client.public_context(), model)
    with pytest.raises(he.DepthError, match="tutorial path needs 6"):
        he.check_depth(model, he.BATCHED_PARAMS, "tutorial")


def test_server_refuses_what_it_cannot_evaluate(batched, model):
    client, public = batched
    with pytest.raises(he.HEError, match="HEConvNet"):
        he.HEServer(public, torch.nn.Linear(2, 2))
    with pytest.raises(he.HEError, match="public_context"):
        he.HEServer(client.encrypt(torch.zeros(1, SIZE, SIZE)), model)
    with pytest.raises(he.HEError, match="packing"):
        he.HEClient("magic")


def test_rescale_ratios_are_folded_into_the_weights(images):
    # Every rescale divides by a prime q, not by 2^s; with logits of tens, ignoring q / 2^s shows
    # as errors of ~0.1. The server folds the exact ratios into the next layer's weights.
    torch.manual_seed(0)
    model = he.HEConvNet(channels=2, hidden=3, patch=PATCH, image_size=SIZE).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3)
        ref = model(images).numpy()
    assert np.abs(ref).max() > 20  # large enough for an uncorrected ratio to show
    run = he.run_path(model, images, "batched", progress=False)
    assert np.abs(run["logits"] - ref).max() < 5e-3


def test_rescale_offsets_are_those_of_the_primes():
    offsets = he.BATCHED_PARAMS.rescale_offsets()
    assert len(offsets) == he.BATCHED_PARAMS.depth
    assert all(0 < abs(o) < 1e-3 for o in offsets)  # 1 mod 2N: never exactly 2^29
    assert max(abs(o) for o in he.TUTORIAL_PARAMS.rescale_offsets()) > 5e-3  # 26-bit: sparser

"""Encrypted inference with CKKS homomorphic encryption (TenSEAL): a hospital client, a model-owner
server, and two ways of packing images into ciphertexts.

Roles
    :class:`HEClient` (the hospital) creates the CKKS context and every key, hands the server a
    *public* context (no secret key), encrypts images and decrypts the returned logits.
    :class:`HEServer` (the model owner) loads the public context and evaluates an
    :class:`HEConvNet` on ciphertexts; it holds no secret key and cannot decrypt.

Packings (what one ciphertext slot holds)
    ``"tutorial"``: TenSEAL's tutorial path. One image per query, im2col-encoded into one
    ciphertext; convolution, vector-matrix products and channel packing use slot rotations, so the
    context carries Galois keys for every power-of-two rotation.
    ``"batched"``: SIMD across the batch. Slot ``b`` of every ciphertext belongs to image ``b``; the
    client encrypts one ciphertext per pixel position (up to ``N/2`` images each), and every layer
    is a per-slot multiply-add. No rotation is ever needed, so no Galois key is generated. Linear
    layers rescale once per output instead of once per term ("lazy rescaling").

Messages that cross the wire are :class:`Message` objects: serialised bytes plus a context
fingerprint, so a ciphertext from another context is refused with a clear error instead of
decrypting to noise.

Modules: :mod:`.params` (parameters and the 128-bit table, errors), :mod:`.model` (the x^2
network, its recipe, the depth check), :mod:`.client` (the wire format, the hospital),
:mod:`.server` (the model owner), :mod:`.cost` (one round trip, measured), :mod:`.leakage`
(what a decryption handed back tells the server: CKKS is not IND-CPA^D secure, Li and Micciancio
2021), :mod:`.noise` (the noise a result carries, noise flooding and its cost, the depth of an
``a x^2 + b x`` activation).
"""

from .client import HEClient, Message, fingerprint
from .cost import cost_row, run_path, summarise
from .leakage import RecoveredKey, flood, key_agreement, recover_secret_key, stolen_images
from .model import HE_RECIPE, HEConvNet, HERecipe, check_depth, he_model
from .noise import (
    activation_levels,
    equivalent_weighting,
    flooding_cost,
    result_noise,
    weighting_leak,
)
from .params import (
    BATCHED_PARAMS,
    ENCODING_RANGE,
    HE_STANDARD_128,
    PACKINGS,
    TUTORIAL_PARAMS,
    CKKSParams,
    ContextMismatchError,
    DepthError,
    EncodingRangeError,
    HEError,
    ParameterError,
    SecretKeyError,
)
from .server import HEServer

__all__ = ["HEClient", "Message", "fingerprint", "cost_row", "run_path", "summarise", "HE_RECIPE",
           "HEConvNet", "HERecipe", "check_depth", "he_model", "BATCHED_PARAMS", "ENCODING_RANGE",
           "HE_STANDARD_128", "PACKINGS", "TUTORIAL_PARAMS", "CKKSParams", "ContextMismatchError",
           "DepthError", "EncodingRangeError", "HEError", "ParameterError", "SecretKeyError",
           "HEServer", "RecoveredKey", "flood", "key_agreement", "recover_secret_key",
           "stolen_images", "activation_levels", "equivalent_weighting", "flooding_cost",
           "result_noise", "weighting_leak"]

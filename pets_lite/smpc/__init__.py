"""Secure multi-party computation with CrypTen (chapter 06), and the same arithmetic from scratch.

* :mod:`.parties`: real party processes (fork, gloo on 127.0.0.1, clean-up), communication counts;
* :mod:`.inference`: private inference (model owner = party 0, hospital = party 1);
* :mod:`.shares`: what CrypTen's shares of an image are, and statistics on them;
* :mod:`.ops`: single operations timed, with rounds and bytes;
* :mod:`.training`: private training on two hospitals' secret-shared data;
* :mod:`.scratch`: additive sharing in Z_2^64 and Beaver multiplication in NumPy;
* :mod:`.network`: the time a real link would add, predicted from rounds and bytes.

CrypTen is imported, and repaired for this PyTorch, by :mod:`pets_lite.crypten_compat` when it is
first used (a party starts, or a caller asks for it): importing this package does not import it.
"""

from .inference import (
    MPC_RECIPE,
    MPCRecipe,
    fold_batchnorm,
    inference_model,
    plaintext_inference,
    private_inference,
)
from .network import Link, check_prediction, predict_seconds, predict_table
from .ops import op_costs
from .parties import (
    HOSPITAL,
    OWNER,
    PartyError,
    check_images,
    comm_stats,
    fresh_generator_state,
    reset_stats,
    run_parties,
    total_stats,
)
from .shares import (
    same_stream,
    share_images,
    share_statistics,
    to_unit_interval,
    zero_share_check,
)
from .training import (
    binary_auc,
    initial_net,
    plaintext_training,
    private_training,
    split_hospitals,
    training_net,
)

__all__ = ["MPC_RECIPE", "MPCRecipe", "fold_batchnorm", "inference_model", "plaintext_inference",
           "private_inference", "op_costs", "HOSPITAL", "OWNER", "PartyError", "check_images",
           "comm_stats", "fresh_generator_state", "reset_stats", "run_parties", "total_stats",
           "same_stream", "share_images", "share_statistics", "to_unit_interval",
           "zero_share_check", "binary_auc", "initial_net", "plaintext_training",
           "private_training", "split_hospitals", "training_net", "Link", "check_prediction",
           "predict_seconds", "predict_table"]

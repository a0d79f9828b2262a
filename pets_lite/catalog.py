"""The catalogue of MedMNIST 2D data sets: every official file, its address and its MD5 sum.

The flags, URLs and MD5 sums are those of ``medmnist.INFO`` in medmnist 3.0.2 (Zenodo record
10519652): the 28 x 28 files and the MedMNIST+ files at 64, 128 and 224 px
(``<flag>_<size>.npz``). The 28 px files of PneumoniaMNIST and BreastMNIST are MedMNIST v2's byte
for byte; those of OrganA/C/SMNIST in this record are not (other MD5 sums and sample counts than
v2 listed). :mod:`pets_lite.data` resolves, verifies and loads them; :func:`register` adds an
entry of your own (a test registers a small file and its checksum).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ZENODO_RECORD = "https://zenodo.org/records/10519652/files"

#: The image sides of the official files: 28 (MedMNIST v2) and the MedMNIST+ sizes.
IMAGE_SIZES = (28, 64, 128, 224)


class DataError(Exception):
    """Base class of every data problem this module reports."""


@dataclass(frozen=True)
class FlagInfo:
    """What the registry knows of one MedMNIST 2D data set: its 28 px file (``md5``) and the
    MedMNIST+ files (``md5_by_size``: image side -> MD5 of the official file)."""

    flag: str
    md5: str
    task: str
    n_channels: int
    labels: dict[int, str]
    n_samples: dict[str, int] = field(default_factory=dict)
    md5_by_size: dict[int, str] = field(default_factory=dict)

    def md5_for(self, image_size: int = 28) -> str:
        """The official MD5 of the file at ``image_size``; a clear error if there is none."""
        check_image_size(image_size)
        if image_size == 28:
            return self.md5
        try:
            return self.md5_by_size[image_size]
        except KeyError:
            sizes = [28, *sorted(self.md5_by_size)]
            raise DataError(f"{self.flag} has no official file at {image_size} px; its official "
                            f"sizes are {sizes}") from None

    def filename_for(self, image_size: int = 28) -> str:
        """``<flag>.npz`` at 28 px, ``<flag>_<size>.npz`` for MedMNIST+."""
        self.md5_for(image_size)
        return f"{self.flag}.npz" if image_size == 28 else f"{self.flag}_{image_size}.npz"

    def url_for(self, image_size: int = 28) -> str:
        """The official download address of the file at ``image_size``."""
        return f"{ZENODO_RECORD}/{self.filename_for(image_size)}?download=1"

    @property
    def url(self) -> str:
        return self.url_for(28)

    @property
    def filename(self) -> str:
        return self.filename_for(28)

    @property
    def n_classes(self) -> int:
        return len(self.labels)


def check_image_size(image_size) -> int:
    """``image_size`` if it is a side of the official files, else a clear :class:`DataError`."""
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) \
            or int(image_size) not in IMAGE_SIZES:
        raise DataError(f"image size {image_size!r} has no official MedMNIST file: choose one of "
                        f"{IMAGE_SIZES} (PETS_SIZE sets it for chapters 00, 02 and 03)")
    return int(image_size)


def _info(flag, md5, task, n_channels, labels, train, val, test, plus=()) -> FlagInfo:
    return FlagInfo(flag, md5, task, n_channels, dict(enumerate(labels)),
                    {"train": train, "val": val, "test": test}, dict(zip((64, 128, 224), plus)))


_ORGANS = ["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
           "lung-left", "lung-right", "pancreas", "spleen"]

#: The 2D MedMNIST flags at every official size (source: ``medmnist.INFO``, medmnist 3.0.2).
REGISTRY: dict[str, FlagInfo] = {i.flag: i for i in [
    _info("pneumoniamnist", "28209eda62fecd6e6a2d98b1501bb15f", "binary-class", 1,
          ["normal", "pneumonia"], 4708, 524, 624,
          plus=("8f4eceb4ccffa70c672198ea285246c6", "05b46931834c231683c68f40c47b2971",
                "d6a3c71de1b945ea11211b03746c1fe1")),
    _info("breastmnist", "750601b1f35ba3300ea97c75c52ff8f6", "binary-class", 1,
          ["malignant", "normal, benign"], 546, 78, 156,
          plus=("742edef2a1fd1524b2efff4bd7ba9364", "363e4b3f8d712e9b5de15470a2aaadf1",
                "b56378a6eefa9fed602bb16d192d4c8b")),
    _info("pathmnist", "a8b06965200029087d5bd730944a56c1", "multi-class", 3,
          ["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
           "normal colon mucosa", "cancer-associated stroma",
           "colorectal adenocarcinoma epithelium"], 89996, 10004, 7180,
          plus=("55aa9c1e0525abe5a6b9d8343a507616", "ac42d08fb904d92c244187169d1fd1d9",
                "2c51a510bcdc9cf8ddb2af93af1eadec")),
    _info("chestmnist", "02c8a6516a18b556561a56cbdd36c4a8", "multi-label, binary-class", 1,
          ["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
           "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"],
          78468, 11219, 22433,
          plus=("9de6cd0b934ebb5b7426cfba5efbae16", "db107e5590b27930b62dbaf558aebee3",
                "45bd33e6f06c3e8cdb481c74a89152aa")),
    _info("dermamnist", "0744692d530f8e62ec473284d019b0c7", "multi-class", 3,
          ["actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
           "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
           "vascular lesions"], 7007, 1003, 2005,
          plus=("b70a2f5635c6199aeaa28c31d7202e1f", "2defd784463fa5243564e855ed717de1",
                "8974907d8e169bef5f5b96bc506ae45d")),
    _info("octmnist", "c68d92d5b585d8d81f7112f81e2d0842", "multi-class", 1,
          ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
          97477, 10832, 1000,
          plus=("e229e9440236b774d9f0dfef9d07bdaf", "0a97e76651ace45c5d943ee3f65b63ae",
                "abc493b6d529d5de7569faaef2773ba3")),
    _info("retinamnist", "bd4c0672f1bba3e3a89f0e4e876791e4", "ordinal-regression", 3,
          ["0", "1", "2", "3", "4"], 1080, 120, 400,
          plus=("afda852cc34dcda56f86ad2b2457dbcc", "e48e916a24454daf90583d4e6efb1a18",
                "eae7e3b6f3fcbda4ae613ebdcbe35348")),
    _info("bloodmnist", "7053d0359d879ad8a5505303e11de1dc", "multi-class", 3,
          ["basophil", "eosinophil", "erythroblast", "immature granulocytes", "lymphocyte",
           "monocyte", "neutrophil", "platelet"], 11959, 1712, 3421,
          plus=("2b94928a2ae4916078ca51e05b6b800b", "adace1e0ed228fccda1f39692059dd4c",
                "b718ff6835fcbdb22ba9eacccd7b2601")),
    _info("tissuemnist", "ebe78ee8b05294063de985d821c1c34b", "multi-class", 1,
          ["Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
           "Glomerular endothelial cells", "Interstitial endothelial cells", "Leukocytes",
           "Podocytes", "Proximal Tubule Segments", "Thick Ascending Limb"],
          165466, 23640, 47280,
          plus=("123ece2eba09d0aa5d698fda57103344", "61b955355d7425a89687b06cca3ce0c2",
                "b077128c4a949f0a4eb01517f9037b9c")),
    _info("organamnist", "68e3f8846a6bd62f0c9bf841c0d9eacc", "multi-class", 1, _ORGANS,
          34561, 6491, 17778,
          plus=("2dcccc29b88e6da5a01161ef20cda288", "eeae80d0a227a8d099027e1b3cfd3b60",
                "50747347e05c87dd3aaf92c49f9f3170")),
    _info("organcmnist", "b9ceb9546e10131b32923c5bbeaea2b1", "multi-class", 1, _ORGANS,
          12975, 2392, 8216,
          plus=("3ce34a8724ea6f548e6db4744d03b6a9", "773c1f009daa3fe5d9a2a201b2a7ed94",
                "050f5e875dc056f6768abf94ec9995d1")),
    _info("organsmnist", "9ab87b696fb54e2a387ebe992d6ed5f1", "multi-class", 1, _ORGANS,
          13932, 2452, 8827,
          plus=("53a6d115339d874c25e309a994ff46d3", "ded0c5fa01a95dc4978b956f613e9b8e",
                "b354719e553fbbb2513d5533f52a4cb1")),
]}


def info(flag: str) -> FlagInfo:
    """The registry entry of ``flag``; a clear error for an unknown one.

    >>> info("breastmnist").n_samples["test"]
    156
    """
    try:
        return REGISTRY[flag]
    except KeyError:
        raise DataError(
            f"unknown MedMNIST flag {flag!r}; known 2D flags: {', '.join(sorted(REGISTRY))}"
        ) from None


def register(entry: FlagInfo) -> FlagInfo | None:
    """Add ``entry`` to the registry (or replace the entry of its flag); return the entry it
    replaced. For a data set of your own, or a test's own small file and checksum."""
    bad = [m for m in (entry.md5, *entry.md5_by_size.values())
           if not (isinstance(m, str) and len(m) == 32 and all(c in "0123456789abcdef" for c in m))]
    if bad:
        raise DataError(f"{entry.flag}: MD5 sums must be 32 lower-case hex digits, got {bad}")
    for size in entry.md5_by_size:
        check_image_size(size)
    previous = REGISTRY.get(entry.flag)
    REGISTRY[entry.flag] = entry
    return previous



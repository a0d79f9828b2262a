"""pets_lite: the helper library behind the privacy-preserving deep radiomics notebooks.

The notebooks are the lessons; this package holds the mechanics they call: data resolution with
checksum verification (:mod:`pets_lite.data`), the small model family (:mod:`pets_lite.models`),
training and metrics (:mod:`pets_lite.train`), and one module per privacy-enhancing technology.
"""

__version__ = "0.1.0"

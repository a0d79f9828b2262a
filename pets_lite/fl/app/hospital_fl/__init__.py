"""hospital-fl: the Flower App of chapter 03 (the apps themselves live in pets_lite.fl)."""

"""Building blocks shared by every layer kind: attention, position bias, FFN, norms, mixers."""
